"""The collector against hostile clients, on a real aiohttp server on 127.0.0.1 (issue 16).

Write keys are public, so each attack is made with a valid key where one
helps: slow and empty bodies that held the memory budget, a `Host` header
reflected into cacheable analytics.js settings, a forged `X-Forwarded-For`,
a flood with no rate limit, a client leaving mid-body, and a signed Shopify
order replayed under another topic.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import orjson
import pytest
import requests
from pydantic import SecretStr

from journeys.producers.collect.publisher import MemoryPublisher
from journeys.producers.collect.webhooks import shopify_signature
from journeys.schemas.settings import Settings
from tests.unit.collect.client import AUTH, KEY, settings
from tests.unit.collect.server import running

HEAD = (
    b"POST /v1/batch HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: "
    + AUTH["Authorization"].encode()
    + b"\r\n"
)
TRACK = {
    "type": "track",
    "event": "Product Viewed",
    "anonymousId": "a-1",
    "timestamp": "2026-11-02T09:15:00Z",
}


def connect(url: str, data: bytes) -> socket.socket:
    """A loopback connection to the collector that has sent `data`."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.sendall(data)
    return sock


@contextmanager
def hostile(url: str, count: int, data: bytes) -> Iterator[list[socket.socket]]:
    """`count` connections that sent `data` and then wait; closed when the block ends."""
    with ExitStack() as stack:
        socks = [stack.enter_context(connect(url, data)) for _ in range(count)]
        time.sleep(0.3)  # the server has read their headers and started their handlers
        yield socks


def legitimate(url: str, count: int) -> list[int]:
    """The statuses of `count` ordinary batches, sent one after the other."""
    statuses = []
    with requests.Session() as session:
        for i in range(count):
            body = {"batch": [{**TRACK, "messageId": f"m-{i}"}]}
            answer = session.post(f"{url}/v1/batch", json=body, auth=(KEY, ""), timeout=10)
            statuses.append(answer.status_code)
    return statuses


def test_slow_chunked_bodies_do_not_take_the_memory_budget() -> None:
    """16 connections trickling a chunked body held 16 MiB (1 MiB each) and made 24 of 30
    requests fail with 503; now they hold the bytes they sent."""
    chunked = HEAD + b"Transfer-Encoding: chunked\r\n\r\n1\r\n{\r\n"
    with running(settings(collect_read_timeout="20s"), MemoryPublisher()) as url:
        with hostile(url, 16, chunked) as socks:
            statuses = legitimate(url, 15)
            for sock in socks:  # a byte every so often, as a slow-loris client does
                sock.sendall(b"1\r\n \r\n")
            statuses += legitimate(url, 15)
    assert statuses == [200] * 30


def test_a_declared_length_with_no_body_takes_nothing() -> None:
    """32 connections declaring `Content-Length: 524288` and sending nothing made 14 of 30
    requests fail with 503."""
    declared = HEAD + b"Content-Length: 524288\r\n\r\n"
    with running(settings(collect_read_timeout="20s"), MemoryPublisher()) as url:
        with hostile(url, 32, declared):
            statuses = legitimate(url, 30)
    assert statuses == [200] * 30


def test_bodies_without_a_key_in_the_header_take_a_quarter_of_the_budget_at_most() -> None:
    """Bodies whose write key can only be in the JSON are read before it is checked: 8 such
    connections sending 200 KiB each (of 512 KiB declared) hold at most a quarter of a 1 MiB
    budget; calls with the key in the header still pass."""
    head = b"POST /v1/batch HTTP/1.1\r\nHost: x\r\nContent-Length: 524288\r\n\r\n"
    config = settings(collect_read_timeout="20s", collect_max_inflight=1024 * 1024)
    with running(config, MemoryPublisher()) as url, ExitStack() as stack:
        for _ in range(8):
            sock = stack.enter_context(connect(url, head))
            try:
                sock.sendall(b"[" + b" " * 200 * 1024)
            except OSError:  # answered 503 and closed while sending: what is meant
                pass
        time.sleep(0.3)
        statuses = legitimate(url, 20)
    assert statuses == [200] * 20


def test_webhooks_without_a_signature_are_refused_before_their_body_is_read() -> None:
    """An unsigned webhook is answered 401 at once, without waiting for a body that never
    comes (it held the budget until the read timeout)."""
    config = settings(shopify_secret=SecretStr("s"), mandrill_webhook_key=SecretStr("k"))
    with running(config, MemoryPublisher()) as url:
        for path in (b"/webhooks/shopify", b"/webhooks/mandrill", b"/webhooks/sendgrid"):
            head = b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 524288\r\n\r\n"
            with connect(url, head) as sock:
                sock.settimeout(5)
                assert sock.recv(65536).startswith(b"HTTP/1.1 401")


def test_a_trickling_body_meets_the_read_timeout() -> None:
    """A byte every 0.3 s keeps a connection busy, but the whole body must arrive within
    `collect_read_timeout`: 408 and closed."""
    with running(settings(collect_read_timeout="1s"), MemoryPublisher()) as url:
        with connect(url, HEAD + b"Content-Length: 100\r\n\r\n{") as sock:
            started, received = time.monotonic(), b""
            sock.settimeout(0.3)
            while time.monotonic() - started < 5 and not received:
                try:
                    received = sock.recv(65536)
                except TimeoutError:
                    sock.sendall(b" ")
    assert received.startswith(b"HTTP/1.1 408") and time.monotonic() - started < 3


def settings_answer(url: str, host: str) -> requests.Response:
    return requests.get(f"{url}/v1/projects/{KEY}/settings", headers={"Host": host}, timeout=10)


def test_settings_guessed_from_host_are_never_cached_for_others() -> None:
    """Without a public URL the answer names the request's Host: private, not stored, varied
    by Host (it was `public, max-age=300`: cache poisoning); a Host that is no host name is a
    400. With the public URL set, the `Host` header changes nothing and may be cached."""
    with running(settings(), MemoryPublisher()) as url:
        answer = settings_answer(url, "evil.example")
        assert answer.status_code == 200
        assert answer.headers["Cache-Control"] == "private, no-store"
        assert "Host" in answer.headers["Vary"]
        assert settings_answer(url, "x<script>").status_code == 400
    public = settings(collect_public_url="https://collect.example.com")
    with running(public, MemoryPublisher()) as url:
        answer = settings_answer(url, "evil.example")
        segment = answer.json()["integrations"]["Segment.io"]
        assert segment["apiHost"] == "collect.example.com/v1"
        assert answer.headers["Cache-Control"] == "public, max-age=300"


def stored_ips(config: Settings, forwarded: str, body_ip: str | None = None) -> list[str | None]:
    """The `context.ip` stored for one call with this `X-Forwarded-For` (and body ip)."""
    publisher = MemoryPublisher()
    event: dict[str, Any] = {**TRACK, "context": {"ip": body_ip}} if body_ip else dict(TRACK)
    with running(config, publisher) as url:
        answer = requests.post(
            f"{url}/v1/track",
            json=event,
            auth=(KEY, ""),
            headers={"X-Forwarded-For": forwarded},
            timeout=10,
        )
        assert answer.status_code == 200, answer.text
    return [orjson.loads(r.context).get("ip") for r in publisher.records]


def test_forwarded_for_is_believed_only_from_trusted_proxies() -> None:
    """`X-Forwarded-For: <script>` was stored as the client's address; now the header counts
    only from a configured proxy, and whatever is stored parses as an IP address."""
    assert stored_ips(settings(), "203.0.113.9") == [None]  # loopback peer, not a proxy
    assert stored_ips(settings(), "<script>") == [None]
    assert stored_ips(settings(), "1.2.3.4", body_ip="<script>alert(1)</script>") == [None]
    proxy = settings(collect_trusted_proxies="127.0.0.1")
    assert stored_ips(proxy, "198.51.100.1, 203.0.113.9") == ["203.0.113.9"]
    assert stored_ips(proxy, "<script>") == [None]
    assert stored_ips(proxy, "2001:db8::1", body_ip="192.0.2.5") == ["192.0.2.5"]
    for ip in stored_ips(proxy, "203.0.113.9, <img src=x>"):
        assert ip is None or ipaddress.ip_address(ip)
    with pytest.raises(ValueError, match="not an IP address or CIDR"):
        settings(collect_trusted_proxies="10.0.0.0/8, proxy.internal")


def test_a_write_key_is_rate_limited_by_default() -> None:
    """The rate limit was off: one key could post without end. By default: 1000 events/s per
    key, bursts of 2000, then 429 with a Retry-After that browsers may read."""
    assert Settings().collect_rate_limit == 1000
    batch = {"batch": [{**TRACK, "messageId": f"m-{i}"} for i in range(1000)]}
    with running(settings(), MemoryPublisher()) as url, requests.Session() as session:
        answers = [
            session.post(f"{url}/v1/batch", json=batch, auth=(KEY, ""), timeout=30)
            for _ in range(3)
        ]
    assert [a.status_code for a in answers[:2]] == [200, 200]
    refused = answers[2]
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
    assert "Retry-After" in refused.headers["Access-Control-Expose-Headers"]


def _metric(url: str, route: str, status: str) -> float:
    text = requests.get(f"{url}/metrics", timeout=10).text
    labels = rf'route="{re.escape(route)}",status="{status}"'
    pattern = rf"^journeys_collect_requests_total\{{{labels}\}} (\S+)$"
    found = re.search(pattern, text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_a_client_leaving_mid_body_is_counted_not_a_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A client that closes its connection half-way through its body was a 500 with a logged
    traceback; now it is counted as 499 (client gone) and logs no error."""
    caplog.set_level(logging.DEBUG)
    with running(settings(), MemoryPublisher()) as url:
        for _ in range(3):
            with connect(url, HEAD + b"Content-Length: 1000\r\n\r\n" + b'{"batch": ['):
                time.sleep(0.1)
        deadline = time.monotonic() + 10
        while _metric(url, "/v1/batch", "499") < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _metric(url, "/v1/batch", "499") == 3
        assert _metric(url, "/v1/batch", "500") == 0
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert errors == []


SHOPIFY_ORDER = {
    "id": 820982911946154508,
    "order_number": 1001,
    "financial_status": "paid",
    "checkout_id": 901414060,
    "email": "inkoop@kwekerij-x.nl",
    "created_at": "2026-11-02T10:15:00+01:00",
    "total_price": "1250.50",
    "currency": "EUR",
    "customer": {"id": 115310627314723954},
    "line_items": [{"sku": "KAS-200", "quantity": 2, "price": "625.25"}],
}
SHOPIFY_CHECKOUT = {
    "id": 901414060,
    "token": "b1946ac92492d2347c6235b4d2611184",
    "abandoned_checkout_url": "https://shop.example/checkouts/b19/recover",
    "completed_at": None,
    "email": "inkoop@kwekerij-x.nl",
    "created_at": "2026-11-02T10:05:00+01:00",
    "total_price": "1250.50",
    "currency": "EUR",
    "line_items": [{"sku": "KAS-200", "quantity": 2, "price": "625.25"}],
}


def test_a_signed_shopify_body_cannot_change_its_topic() -> None:
    """The unsigned `X-Shopify-Topic` decided the event type: a captured order replayed as
    `checkouts/create` became a new stored `checkout_started`. Now a topic the signed body
    does not fit is a 400 with the reason, kept as a dead letter, and stores no event."""
    publisher = MemoryPublisher()
    config = settings(shopify_secret=SecretStr("shp"))

    def post(url: str, payload: dict[str, object], topic: str) -> requests.Response:
        body = orjson.dumps(payload)
        headers = {
            "X-Shopify-Hmac-Sha256": shopify_signature("shp", body),
            "X-Shopify-Topic": topic,
            "Content-Type": "application/json",
        }
        return requests.post(f"{url}/webhooks/shopify", data=body, headers=headers, timeout=10)

    with running(config, publisher) as url:
        assert post(url, SHOPIFY_ORDER, "orders/create").status_code == 200
        assert post(url, SHOPIFY_CHECKOUT, "checkouts/create").status_code == 200
        as_checkout = post(url, SHOPIFY_ORDER, "checkouts/create")
        as_order = post(url, SHOPIFY_CHECKOUT, "orders/create")
    assert as_checkout.status_code == 400 and "is an order" in as_checkout.json()["error"]
    assert as_order.status_code == 400 and "is a checkout" in as_order.json()["error"]
    assert sorted(r.type for r in publisher.records) == ["checkout_started", "order_placed"]
    assert [d.source for d in publisher.dead_letters] == ["collect:/webhooks/shopify"] * 2
    assert "X-Shopify-Topic" in publisher.dead_letters[0].reason
