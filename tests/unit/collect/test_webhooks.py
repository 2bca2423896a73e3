"""Email and order webhooks, signed the way each provider signs them."""

from __future__ import annotations

import base64
import time
from urllib.parse import urlencode

import orjson
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import SecretStr

from journeys.producers.collect.publisher import MemoryPublisher
from journeys.producers.collect.webhooks import (
    mandrill_signature,
    shopify_signature,
    shopify_topic_mismatch,
)
from tests.unit.collect.client import Answer, request, settings

PRIVATE = ec.generate_private_key(ec.SECP256R1())
PUBLIC = base64.b64encode(
    PRIVATE.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
).decode()
SENDGRID_BODY = orjson.dumps(
    [
        {
            "email": "Jan@Acme.nl",
            "timestamp": 1793610900,
            "event": "open",
            "sg_event_id": "sg-1",
            "sg_message_id": "m1",
        },
        {
            "email": "jan@acme.nl",
            "timestamp": 1793610960,
            "event": "click",
            "sg_event_id": "sg-2",
            "url": "https://x",
            "contact_id": "c-9",
        },
        {
            "email": "not-an-email",
            "timestamp": 1793610960,
            "event": "bounce",
            "sg_event_id": "sg-3",
        },
    ]
)


def sendgrid_headers(body: bytes, timestamp: str | None = None) -> dict[str, str]:
    timestamp = str(int(time.time())) if timestamp is None else timestamp
    signature = PRIVATE.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return {
        "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
        "X-Twilio-Email-Event-Webhook-Timestamp": timestamp,
        "Content-Type": "application/json",
    }


def test_sendgrid_signed_events_are_stored_and_deduped_by_their_ids() -> None:
    publisher = MemoryPublisher()
    answer = request(
        "POST",
        "/webhooks/sendgrid",
        publisher,
        data=SENDGRID_BODY,
        headers=sendgrid_headers(SENDGRID_BODY),
        config=settings(sendgrid_public_key=PUBLIC),
    )
    assert answer.status == 200 and (answer.body["accepted"], answer.body["rejected"]) == (2, 1)
    assert [(r.event_id, r.type, r.email, r.contact_id) for r in publisher.records] == [
        ("sendgrid:sg-1", "open", "jan@acme.nl", None),
        ("sendgrid:sg-2", "click", "jan@acme.nl", "c-9"),
    ]
    assert publisher.records[0].ts == 1793610900000


def test_sendgrid_bad_signature_is_401() -> None:
    headers = sendgrid_headers(SENDGRID_BODY)
    tampered = SENDGRID_BODY.replace(b"open", b"spam")
    config = settings(sendgrid_public_key=PUBLIC)
    assert (
        request("POST", "/webhooks/sendgrid", data=tampered, headers=headers, config=config).status
        == 401
    )
    assert request("POST", "/webhooks/sendgrid", data=SENDGRID_BODY, config=config).status == 401


MANDRILL_EVENTS = [
    {
        "event": "send",
        "ts": 1793610900,
        "_id": "mid-1",
        "msg": {"email": "piet@acme.nl", "_id": "mid-1", "subject": "Nieuws"},
    },
    {
        "event": "open",
        "ts": 1793611000,
        "_id": "mid-1",
        "msg": {"email": "piet@acme.nl", "_id": "mid-1", "metadata": {"contact_id": "c-3"}},
    },
]
URL = "https://collect.example/webhooks/mandrill"


def test_mandrill_signed_events_are_stored() -> None:
    form = {"mandrill_events": orjson.dumps(MANDRILL_EVENTS).decode()}
    signature = mandrill_signature("mk-secret", URL, form)
    publisher = MemoryPublisher()
    config = settings(mandrill_webhook_key=SecretStr("mk-secret"), mandrill_webhook_url=URL)
    answer = request(
        "POST",
        "/webhooks/mandrill",
        publisher,
        data=urlencode(form),
        headers={
            "X-Mandrill-Signature": signature,
            "Content-Type": "application/x-www-form-urlencoded",
        },
        config=config,
    )
    assert answer.status == 200 and answer.body["accepted"] == 2
    assert [(r.type, r.email, r.contact_id) for r in publisher.records] == [
        ("sent", "piet@acme.nl", None),
        ("open", "piet@acme.nl", "c-3"),
    ]
    assert len({r.event_id for r in publisher.records}) == 2  # one message, two events
    bad = request(
        "POST",
        "/webhooks/mandrill",
        data=urlencode(form),
        config=config,
        headers={
            "X-Mandrill-Signature": "AAAA",
            "Content-Type": "application/x-www-form-urlencoded",
        },
    )
    assert bad.status == 401
    assert (
        request("HEAD", "/webhooks/mandrill", config=config).status == 200
    )  # Mandrill's URL check


SHOPIFY_ORDER = {
    "id": 820982911946154508,
    "order_number": 1001,
    "financial_status": "paid",
    "email": "Inkoop@Kwekerij-X.nl",
    "created_at": "2026-11-02T10:15:00+01:00",
    "total_price": "1250.50",
    "currency": "EUR",
    "customer": {"id": 115310627314723954},
    "line_items": [{"sku": "KAS-200", "quantity": 2, "price": "625.25"}],
}


#: A checkout: what an order has (order_number, financial_status) it has not.
SHOPIFY_CHECKOUT = {
    **{k: v for k, v in SHOPIFY_ORDER.items() if k not in ("order_number", "financial_status")},
    "abandoned_checkout_url": "https://shop.example/checkouts/c1/recover",
}


def test_shopify_orders_and_checkouts_are_stored_with_the_event_id() -> None:
    config = settings(shopify_secret=SecretStr("shp-secret"))
    publisher = MemoryPublisher()
    for topic, event_id, payload in (
        ("orders/create", "e-1", SHOPIFY_ORDER),
        ("checkouts/create", "e-2", SHOPIFY_CHECKOUT),
    ):
        body = orjson.dumps(payload)
        headers = {
            "X-Shopify-Hmac-Sha256": shopify_signature("shp-secret", body),
            "X-Shopify-Topic": topic,
            "X-Shopify-Event-Id": event_id,
            "Content-Type": "application/json",
        }
        assert (
            request(
                "POST", "/webhooks/shopify", publisher, data=body, headers=headers, config=config
            ).status
            == 200
        )
    order, checkout = publisher.records
    props = orjson.loads(order.properties)
    assert (order.event_id, order.channel, order.type, order.email, order.contact_id) == (
        "shopify:orders/create:820982911946154508",
        "order",
        "order_placed",
        "inkoop@kwekerij-x.nl",
        "shopify:115310627314723954",
    )
    assert (
        props["items"] == [{"sku": "KAS-200", "quantity": 2, "price": 625.25}]
        and props["amount"] == 1250.5
    )
    assert order.ts == 1793610900000
    assert (checkout.channel, checkout.type) == ("web", "checkout_started")
    assert checkout.event_id == "shopify:checkouts/create:820982911946154508"
    headers = {"X-Shopify-Hmac-Sha256": "bm9wZQ==", "X-Shopify-Topic": "orders/create"}
    assert (
        request("POST", "/webhooks/shopify", data=body, headers=headers, config=config).status
        == 401
    )


def test_a_shopify_topic_the_signed_body_does_not_fit_is_refused() -> None:
    assert shopify_topic_mismatch("orders/create", SHOPIFY_ORDER) is None
    assert shopify_topic_mismatch("checkouts/create", SHOPIFY_CHECKOUT) is None
    assert "is an order (order_number)" in str(
        shopify_topic_mismatch("checkouts/create", SHOPIFY_ORDER)
    )
    assert "is a checkout" in str(shopify_topic_mismatch("orders/create", SHOPIFY_CHECKOUT))
    assert shopify_topic_mismatch("orders/create", {"id": 1}) is None  # neither: left as is
    publisher = MemoryPublisher()
    answer = shopify_post(orjson.dumps(SHOPIFY_ORDER), "checkouts/create", publisher)
    assert answer.status == 400 and publisher.records == []
    (dead,) = publisher.dead_letters
    assert dead.payload == orjson.dumps(SHOPIFY_ORDER) and "X-Shopify-Topic" in dead.reason


def test_sendgrid_key_as_pem_works_too() -> None:
    pem = (
        PRIVATE.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    answer = request(
        "POST",
        "/webhooks/sendgrid",
        data=SENDGRID_BODY,
        headers=sendgrid_headers(SENDGRID_BODY),
        config=settings(sendgrid_public_key=pem),
    )
    assert (answer.status, answer.body["accepted"]) == (200, 2)


def test_sendgrid_types_map_to_contract_email_types() -> None:
    from journeys.producers.collect.webhooks import sendgrid_event

    kinds = [
        "processed",
        "delivered",
        "open",
        "click",
        "bounce",
        "dropped",
        "spamreport",
        "unsubscribe",
        "group_unsubscribe",
    ]
    types = [sendgrid_event({"event": k, "email": "a@b.nl", "timestamp": 1})["type"] for k in kinds]
    assert types == [
        "sent",
        "delivered",
        "open",
        "click",
        "bounce",
        "bounce",
        "spam_report",
        "unsubscribe",
        "unsubscribe",
    ]


def test_unconfigured_providers_are_401() -> None:
    for path in ("/webhooks/sendgrid", "/webhooks/mandrill", "/webhooks/shopify"):
        answer = request("POST", path, data=b"[]")
        assert answer.status == 401 and "not configured" in answer.body["error"]


def test_mandrill_url_derived_from_the_request_when_not_configured() -> None:
    import asyncio

    from aiohttp.test_utils import TestClient, TestServer

    from journeys.producers.collect.app import create_app

    form = {"mandrill_events": orjson.dumps(MANDRILL_EVENTS).decode()}
    publisher = MemoryPublisher()

    async def go() -> int:
        app = create_app(settings(mandrill_webhook_key=SecretStr("mk")), publisher)
        async with TestClient(TestServer(app)) as client:
            url = str(client.make_url("/webhooks/mandrill"))
            response = await client.post(
                "/webhooks/mandrill",
                data=form,
                headers={"X-Mandrill-Signature": mandrill_signature("mk", url, form)},
            )
            return response.status

    assert asyncio.run(go()) == 200 and len(publisher.records) == 2


def shopify_post(
    body: bytes, topic: str, publisher: MemoryPublisher, event_id: str = "e-9"
) -> Answer:
    headers = {
        "X-Shopify-Hmac-Sha256": shopify_signature("shp-secret", body),
        "X-Shopify-Topic": topic,
        "X-Shopify-Event-Id": event_id,
        "Content-Type": "application/json",
    }
    return request(
        "POST",
        "/webhooks/shopify",
        publisher,
        data=body,
        headers=headers,
        config=settings(shopify_secret=SecretStr("shp-secret")),
    )


def test_shopify_topics_we_do_not_map_are_acknowledged_and_ignored() -> None:
    publisher = MemoryPublisher()
    answer = shopify_post(orjson.dumps(SHOPIFY_ORDER), "orders/updated", publisher)
    assert (answer.status, answer.body["ignored"], answer.body["accepted"]) == (
        200,
        "orders/updated",
        0,
    )
    assert publisher.records == [] and publisher.dead_letters == []


def test_shopify_order_without_identity_is_a_dead_letter_not_a_retry_loop() -> None:
    publisher = MemoryPublisher()
    guest = {k: v for k, v in SHOPIFY_ORDER.items() if k not in ("email", "customer")}
    answer = shopify_post(orjson.dumps(guest), "orders/create", publisher)
    assert (answer.status, answer.body["rejected"]) == (200, 1)
    (dead,) = publisher.dead_letters
    assert dead.source == "collect:/webhooks/shopify" and "no identity" in dead.reason
    assert dead.payload == orjson.dumps(guest)


def _sendgrid_posts(
    bodies: list[tuple[bytes, dict[str, str]]], publisher: MemoryPublisher
) -> list[Answer]:
    """Several posts to one collector (the replay memory lives in the app)."""
    import asyncio

    from aiohttp.test_utils import TestClient, TestServer

    from journeys.producers.collect.app import create_app

    async def go() -> list[Answer]:
        app = create_app(settings(sendgrid_public_key=PUBLIC), publisher)
        answers = []
        async with TestClient(TestServer(app)) as client:
            for body, headers in bodies:
                response = await client.post("/webhooks/sendgrid", data=body, headers=headers)
                answers.append(
                    Answer(response.status, await response.json(), dict(response.headers))
                )
                publisher.fail = False  # a failure is for one request only
        return answers

    return asyncio.run(go())


def test_sendgrid_timestamps_far_from_now_or_not_seconds_are_refused() -> None:
    now = int(time.time())
    publisher = MemoryPublisher()
    for timestamp in (str(now - 301), str(now + 301), "978307200", "4102444800", "abc", "", "1e9"):
        answer = request(
            "POST",
            "/webhooks/sendgrid",
            publisher,
            data=SENDGRID_BODY,
            headers=sendgrid_headers(SENDGRID_BODY, timestamp),
            config=settings(sendgrid_public_key=PUBLIC),
        )
        assert answer.status == 401 and "timestamp" in answer.body["error"], timestamp
    assert publisher.records == [] and publisher.dead_letters == []
    fresh = sendgrid_headers(SENDGRID_BODY, str(now - 290))
    config = settings(sendgrid_public_key=PUBLIC)
    assert (
        request(
            "POST", "/webhooks/sendgrid", data=SENDGRID_BODY, headers=fresh, config=config
        ).status
        == 200
    )


def test_a_replayed_sendgrid_request_is_not_stored_twice() -> None:
    publisher = MemoryPublisher()
    headers = sendgrid_headers(SENDGRID_BODY)
    first, replay = _sendgrid_posts([(SENDGRID_BODY, headers), (SENDGRID_BODY, headers)], publisher)
    assert (first.status, first.body["accepted"]) == (200, 2)
    assert (replay.status, replay.body["accepted"], replay.body["duplicate"]) == (200, 0, True)
    assert len(publisher.records) == 2 and len(publisher.dead_letters) == 1
    # a different signature over the same content is still the same request
    other = {
        **headers,
        "X-Twilio-Email-Event-Webhook-Signature": sendgrid_headers(
            SENDGRID_BODY, headers["X-Twilio-Email-Event-Webhook-Timestamp"]
        )["X-Twilio-Email-Event-Webhook-Signature"],
    }
    (again,) = _sendgrid_posts([(SENDGRID_BODY, other)], MemoryPublisher())
    assert again.body["accepted"] == 2  # (a new collector: nothing remembered)


def test_a_sendgrid_request_answered_503_may_be_sent_again() -> None:
    publisher = MemoryPublisher()
    publisher.fail = True
    headers = sendgrid_headers(SENDGRID_BODY)
    failed, retried = _sendgrid_posts(
        [(SENDGRID_BODY, headers), (SENDGRID_BODY, headers)], publisher
    )
    assert (failed.status, retried.status, retried.body["accepted"]) == (503, 200, 2)


def test_the_replay_memory_is_bounded_and_forgets_expired_requests() -> None:
    from journeys.producers.collect.replay import SeenRequests

    seen = SeenRequests(capacity=3)
    assert [seen.begin(bytes([i]), expires=100.0, now=0.0) for i in range(5)] == ["new"] * 5
    assert len(seen) == 3 and seen.begin(b"\x00", 100.0, 0.0) == "new"  # the oldest forgotten
    assert seen.begin(b"\x04", 100.0, 0.0) == "in flight"
    seen.stored(b"\x04")
    assert seen.begin(b"\x04", 100.0, 0.0) == "stored"
    assert seen.begin(b"\x04", 100.0, 101.0) == "new"  # past its timestamp's window
    assert len(seen) <= 3


def test_a_replayed_shopify_webhook_with_a_new_event_id_is_the_same_event() -> None:
    publisher = MemoryPublisher()
    body = orjson.dumps(SHOPIFY_ORDER)
    for event_id in ("e-1", "forged-2", "forged-3"):
        assert shopify_post(body, "orders/create", publisher, event_id).status == 200
    assert {r.event_id for r in publisher.records} == {"shopify:orders/create:820982911946154508"}
    no_id = orjson.dumps({k: v for k, v in SHOPIFY_ORDER.items() if k != "id"})
    shopify_post(no_id, "orders/create", publisher, "x")
    shopify_post(no_id, "orders/create", publisher, "y")
    assert len({r.event_id for r in publisher.records}) == 2  # keyed on the signed body's hash
    assert publisher.records[-1].event_id.startswith("shopify:orders/create:sha256:")


def test_provider_times_are_unix_seconds_or_a_reason() -> None:
    from journeys.producers.collect.webhooks import mandrill_event, sendgrid_event

    assert (
        sendgrid_event({"event": "open", "email": "a@b.nl", "timestamp": 1793610900})["occurred_at"]
        == "2026-11-02T09:15:00Z"
    )
    for bad in (1793610900000, "1793610900", float("inf"), True, 10**30):
        with pytest.raises(ValueError, match="timestamp"):
            sendgrid_event({"event": "open", "email": "a@b.nl", "timestamp": bad})
    with pytest.raises(ValueError, match="ts"):
        mandrill_event({"event": "open", "ts": "yesterday", "msg": {"email": "a@b.nl"}})
