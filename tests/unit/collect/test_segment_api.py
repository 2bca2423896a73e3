"""The Segment tracking API: auth, mapping, batches, errors, durability."""

from __future__ import annotations

import asyncio
import gzip
import time

import orjson
from aiohttp.test_utils import TestClient, TestServer

from journeys.producers.collect.app import create_app
from journeys.producers.collect.publisher import MemoryPublisher
from tests.unit.collect.client import AUTH, request, settings

TRACK = {
    "type": "track",
    "event": "Product Viewed",
    "messageId": "m-1",
    "anonymousId": "anon-1",
    "userId": "c-17",
    "timestamp": "2026-11-02T09:15:00.000Z",
    "properties": {"sku": "KAS-200", "url": "https://shop.example/p/kas"},
    "context": {
        "groupId": "kwekerij-x",
        "traits": {"email": "Inkoop@Kwekerij-X.nl", "dmu_role": "buyer"},
    },
}


def test_track_is_stored_with_the_contract_fields() -> None:
    publisher = MemoryPublisher()
    answer = request("POST", "/v1/track", publisher, json=TRACK, headers=AUTH)
    assert answer.status == 200 and answer.body["accepted"] == 1
    (record,) = publisher.records
    assert (record.event_id, record.channel, record.type) == ("m-1", "web", "product_view")
    assert (record.anonymous_id, record.contact_id, record.email, record.account_id) == (
        "anon-1",
        "c-17",
        "inkoop@kwekerij-x.nl",
        "kwekerij-x",
    )
    assert record.dmu_role == "buyer" and orjson.loads(record.properties)["sku"] == "KAS-200"


def test_write_key_is_required() -> None:
    assert request("POST", "/v1/track", json=TRACK).status == 401
    bad = {"Authorization": "Basic " + "d3Jvbmc6"}  # "wrong:"
    assert request("POST", "/v1/track", json=TRACK, headers=bad).status == 401
    assert request("POST", "/v1/track", json={**TRACK, "writeKey": "wk_test"}).status == 200


def test_malformed_json_is_400_with_a_reason() -> None:
    answer = request("POST", "/v1/track", data=b"{nope", headers=AUTH)
    assert answer.status == 400 and "malformed JSON" in answer.body["error"]


def test_invalid_single_event_is_a_dead_letter_with_its_reason() -> None:
    """Segment's rule: a well-formed call is answered 200; the invalid event is a dead letter."""
    publisher = MemoryPublisher()
    body = orjson.dumps({"type": "track", "event": "x"})
    answer = request("POST", "/v1/track", publisher, data=body, headers=AUTH)
    assert answer.status == 200 and (answer.body["accepted"], answer.body["rejected"]) == (0, 1)
    assert "no identity" in answer.body["errors"][0]["error"]
    assert len(publisher.dead_letters) == 1 and publisher.records == []
    assert publisher.dead_letters[0].payload == body  # the bytes as received


def test_a_known_field_of_the_wrong_type_is_400_and_stores_nothing() -> None:
    publisher = MemoryPublisher()
    for body, reason in (
        ({**TRACK, "event": 5}, "event must be string, not number"),
        ({**TRACK, "timestamp": 1793610900}, "timestamp must be string, not number"),
        ({**TRACK, "properties": []}, "properties must be object, not array"),
        ({**TRACK, "userId": True}, "userId must be string or number, not boolean"),
    ):
        answer = request("POST", "/v1/track", publisher, json=body, headers=AUTH)
        assert (answer.status, answer.body["error"]) == (400, reason)
    assert publisher.records == [] and publisher.dead_letters == []


def test_batch_keeps_valid_events_and_dead_letters_the_rest() -> None:
    publisher = MemoryPublisher()
    batch = {
        "batch": [
            TRACK,
            {**TRACK, "messageId": "m-2", "type": "page"},
            {"type": "track", "event": "x"},
            7,
        ]
    }
    answer = request("POST", "/v1/batch", publisher, json=batch, headers=AUTH)
    assert answer.status == 200 and (answer.body["accepted"], answer.body["rejected"]) == (2, 2)
    assert [r.type for r in publisher.records] == ["product_view", "page_view"]
    assert [e["index"] for e in answer.body["errors"]] == [2, 3]
    assert len(publisher.dead_letters) == 2


def test_gzip_bodies_like_the_sdks_send() -> None:
    publisher = MemoryPublisher()
    body = gzip.compress(orjson.dumps({"batch": [TRACK]}))
    headers = {**AUTH, "Content-Encoding": "gzip", "Content-Type": "application/json"}
    assert request("POST", "/v1/batch", publisher, data=body, headers=headers).status == 200
    assert len(publisher.records) == 1


def test_body_over_the_limit_is_413() -> None:
    big = {"batch": [TRACK] * 2000}
    answer = request(
        "POST", "/v1/batch", json=big, headers=AUTH, config=settings(collect_max_body=64 * 1024)
    )
    assert answer.status == 413


def test_kafka_down_is_503_with_retry_after_never_200() -> None:
    publisher = MemoryPublisher()
    publisher.fail = True
    answer = request("POST", "/v1/track", publisher, json=TRACK, headers=AUTH)
    assert answer.status == 503 and answer.headers["Retry-After"] == "5"


def test_rate_limit_per_write_key_lets_a_big_batch_through_then_waits() -> None:
    publisher = MemoryPublisher()

    async def go() -> list[tuple[int, str | None]]:
        app = create_app(settings(collect_rate_limit=1), publisher)
        async with TestClient(TestServer(app)) as client:
            answers = []
            for body in ({"batch": [TRACK] * 5}, TRACK):
                response = await client.post(
                    "/v1/batch" if "batch" in body else "/v1/track", json=body, headers=AUTH
                )
                answers.append((response.status, response.headers.get("Retry-After")))
            return answers

    # a bucket of 2 tokens: the first batch of 5 passes and leaves a debt of 3 → wait 4 s
    assert asyncio.run(go()) == [(200, None), (429, "4")]
    assert len(publisher.records) == 5


def test_ecommerce_order_completed_is_an_order() -> None:
    publisher = MemoryPublisher()
    order = {
        **TRACK,
        "event": "Order Completed",
        "messageId": "m-3",
        "properties": {
            "order_id": 5001,
            "total": 1250.5,
            "currency": "eur",
            "products": [{"sku": "KAS-200", "quantity": 2, "price": 625.25}],
        },
    }
    assert request("POST", "/v1/track", publisher, json=order, headers=AUTH).status == 200
    (record,) = publisher.records
    props = orjson.loads(record.properties)
    assert (record.channel, record.type, props["order_id"], props["amount"], props["currency"]) == (
        "order",
        "order_placed",
        "5001",
        1250.5,
        "EUR",
    )
    assert props["items"] == [{"sku": "KAS-200", "quantity": 2, "price": 625.25}]


def test_clock_skew_is_corrected_from_sent_at() -> None:
    from datetime import UTC, datetime

    from journeys.producers.collect.segment import occurred_at

    received = datetime(2026, 11, 2, 10, 0, 0, tzinfo=UTC)
    message = {"timestamp": "2026-11-02T09:00:00Z", "sentAt": "2026-11-02T09:30:00Z"}
    assert occurred_at(message, received) == "2026-11-02T09:30:00Z"  # device clock 30 min behind


def test_identify_group_and_alias_carry_the_links() -> None:
    publisher = MemoryPublisher()
    batch = {
        "batch": [
            {
                "type": "identify",
                "anonymousId": "a1",
                "userId": "c1",
                "traits": {"email": "jan@acme.nl"},
                "messageId": "i1",
            },
            {
                "type": "group",
                "userId": "c1",
                "groupId": "erp-7",
                "traits": {"name": "Acme"},
                "messageId": "g1",
            },
            {"type": "alias", "previousId": "a2", "userId": "c1", "messageId": "l1"},
        ]
    }
    assert request("POST", "/v1/batch", publisher, json=batch, headers=AUTH).status == 200
    assert [
        (r.type, r.anonymous_id, r.contact_id, r.email, r.account_id) for r in publisher.records
    ] == [
        ("identify", "a1", "c1", "jan@acme.nl", None),
        ("group", None, "c1", None, "erp-7"),
        ("alias", "a2", "c1", None, None),
    ]


def test_privacy_options_hash_emails_but_keep_the_company() -> None:
    publisher = MemoryPublisher()
    config = settings(collect_hash_emails=True)
    assert (
        request("POST", "/v1/track", publisher, json=TRACK, headers=AUTH, config=config).status
        == 200
    )
    email = publisher.records[0].email or ""
    assert email.endswith("@kwekerij-x.nl") and not email.startswith("inkoop")


def test_health_metrics_and_openapi() -> None:
    assert request("GET", "/health").body == {"status": "ok", "kafka": "up"}
    down = MemoryPublisher()
    down.fail = True
    assert request("GET", "/health", down).body == {"status": "ok", "kafka": "down"}
    paths = request("GET", "/openapi.json").body["paths"]
    assert {
        "/v1/track",
        "/v1/batch",
        "/webhooks/sendgrid",
        "/webhooks/mandrill",
        "/webhooks/shopify",
        "/webhooks/orders",
        "/health",
        "/metrics",
    } <= set(paths)
    assert "journeys_collect_requests" in request("GET", "/metrics").body


def test_orders_webhook_takes_contract_events() -> None:
    publisher = MemoryPublisher()
    event = {
        "event_id": "o-1",
        "channel": "order",
        "type": "order_placed",
        "occurred_at": "2026-11-02T09:15:00Z",
        "account_id": "erp-1",
        "properties": {"order_id": "o-1", "payment_terms": "invoice"},
    }
    assert (
        request(
            "POST",
            "/webhooks/orders",
            publisher,
            json=[event, {**event, "channel": "fax"}],
            headers=AUTH,
        ).body["accepted"]
        == 1
    )
    single = request(
        "POST", "/webhooks/orders", publisher, json={**event, "channel": "fax"}, headers=AUTH
    )
    assert (single.status, single.body["rejected"]) == (200, 1)
    assert "channel" in single.body["errors"][0]["error"]
    assert len(publisher.records) == 1 and len(publisher.dead_letters) == 2
    for body in (b"7", b'"text"', b"null"):
        answer = request("POST", "/webhooks/orders", publisher, data=body, headers=AUTH)
        assert answer.status == 400 and "JSON object" in answer.body["error"]


def test_errors_are_json_and_auth_comes_before_parsing() -> None:
    assert request("POST", "/v1/track", data=b"{nope").status == 401
    assert request("POST", "/webhooks/orders", data=b"{nope").status == 401
    missing = request("GET", "/nowhere")
    assert (missing.status, missing.body) == (404, {"error": "Not Found"})
    wrong_method = request("GET", "/v1/track")
    assert wrong_method.status == 405 and set(wrong_method.body["allow"].split(",")) == {
        "POST",
        "OPTIONS",
    }
    assert request("POST", "/v1/bogus", json=TRACK, headers=AUTH).status == 404


def test_batch_with_kafka_down_is_503_and_nothing_is_kept() -> None:
    publisher = MemoryPublisher()
    publisher.fail = True
    answer = request("POST", "/v1/batch", publisher, json={"batch": [TRACK, 7]}, headers=AUTH)
    assert answer.status == 503 and answer.headers["Retry-After"] == "5"
    assert "events not stored" in answer.body["error"]
    assert publisher.records == [] and publisher.dead_letters == []


def test_client_ip_from_the_proxy_header_truncated() -> None:
    publisher = MemoryPublisher()
    config = settings(collect_truncate_ip=True, collect_trusted_proxies="127.0.0.1, 10.0.0.0/8")
    headers = {**AUTH, "X-Forwarded-For": "203.0.113.77, 10.0.0.1"}
    assert (
        request("POST", "/v1/page", publisher, json=TRACK, headers=headers, config=config).status
        == 200
    )
    assert orjson.loads(publisher.records[0].context)["ip"] == "203.0.113.0"


def test_batch_shares_context_and_sent_at() -> None:
    publisher = MemoryPublisher()
    message = {
        "type": "track",
        "event": "Signed Up",
        "userId": "c1",
        "timestamp": "2026-11-02T09:00:00Z",
    }
    body = {"batch": [message], "sentAt": "2026-11-02T09:00:00Z", "context": {"groupId": "acme"}}
    assert request("POST", "/v1/batch", publisher, json=body, headers=AUTH).status == 200
    (record,) = publisher.records
    assert (record.type, record.account_id) == ("signup", "acme")
    assert abs(record.ts - int(time.time() * 1000)) < 60_000  # sentAt == timestamp: now


def test_metrics_count_events_per_source() -> None:
    publisher = MemoryPublisher()

    async def go() -> str:
        app = create_app(settings(), publisher)
        async with TestClient(TestServer(app)) as client:
            await client.post("/v1/batch", json={"batch": [TRACK, 7, TRACK]}, headers=AUTH)
            return await (await client.get("/metrics")).text()

    text = asyncio.run(go())
    assert 'journeys_collect_events_accepted_total{source="/v1/batch"} 2.0' in text
    assert 'journeys_collect_events_rejected_total{source="/v1/batch"} 1.0' in text
    assert 'journeys_collect_requests_total{route="/v1/batch",status="200"} 1.0' in text
    assert 'journeys_collect_request_seconds_count{route="/v1/batch"} 1.0' in text


def test_openapi_lists_every_route() -> None:
    app = create_app(settings(), MemoryPublisher())
    routes = {
        (r.resource.canonical, r.method.lower())
        for r in app.router.routes()
        if r.resource is not None
    }
    calls = ("track", "page", "screen", "identify", "group", "alias", "t", "p", "s", "i", "g", "a")
    expected = {
        (path, method)
        for path, method in routes
        if ("{" not in path or path.startswith("/v1/projects/")) and method != "head"
    }
    expected |= {(f"/v1/{c}", m) for c in calls for m in ("post", "options")}
    expected |= {(p, "options") for p, _ in expected if p.startswith("/v1/") and "{" not in p}
    paths = request("GET", "/openapi.json").body["paths"]
    assert {(path, method) for path, item in paths.items() for method in item} == expected


def test_analytics_js_paths_text_plain_and_cors() -> None:
    """analytics.js posts text/plain to /v1/t, /v1/p, ... (or /v1/b) with writeKey in the body."""
    publisher = MemoryPublisher()
    for path, body in (
        ("/v1/t", TRACK),
        ("/v1/p", {**TRACK, "messageId": "m-p"}),
        ("/v1/b", {"batch": [{**TRACK, "messageId": "m-b"}]}),
    ):
        answer = request(
            "POST",
            path,
            publisher,
            data=orjson.dumps({**body, "writeKey": "wk_test"}),
            headers={"Content-Type": "text/plain", "Origin": "https://shop.example"},
        )
        assert (answer.status, answer.headers["Access-Control-Allow-Origin"]) == (200, "*")
    assert [(r.event_id, r.type) for r in publisher.records] == [
        ("m-1", "product_view"),
        ("m-p", "page_view"),
        ("m-b", "product_view"),
    ]
    preflight = request(
        "OPTIONS",
        "/v1/t",
        headers={
            "Origin": "https://shop.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,x-custom",
        },
    )
    assert preflight.status == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == "*"
    assert preflight.headers["Access-Control-Allow-Headers"] == "content-type,x-custom"
    limited = request("POST", "/v1/t", data=b"{}", headers={"Origin": "https://shop.example"})
    assert limited.status == 401 and limited.headers["Access-Control-Allow-Origin"] == "*"
