"""What anyone holding a (public) write key can send: huge batches, slow bodies, bad gzip,
extreme values. Each is answered with a clear status, and nothing valid is lost."""

from __future__ import annotations

import asyncio
import socket
import time

import orjson
from aiohttp.test_utils import TestClient, TestServer

from journeys.producers.collect.app import create_app
from journeys.producers.collect.guard import known_key
from journeys.producers.collect.limits import Budget, Hold, dead_letter, parse_json, unrepresentable
from journeys.producers.collect.publisher import MemoryPublisher
from tests.unit.collect.client import AUTH, KEY, request, settings
from tests.unit.collect.server import running

VALID = {
    "type": "track",
    "event": "Product Viewed",
    "anonymousId": "a-1",
    "timestamp": "2026-11-02T09:15:00Z",
}


def message(i: int) -> dict[str, object]:
    return {**VALID, "messageId": f"m-{i}"}


def test_a_batch_of_sixty_thousand_empty_items_is_a_short_400() -> None:
    publisher = MemoryPublisher()
    body = b'{"batch":[' + b",".join([b"{}"] * 60_000) + b"]}"
    answer = request("POST", "/v1/batch", publisher, data=body, headers=AUTH)
    assert answer.status == 400
    assert (
        answer.body["error"] == "the batch holds 60000 items; at most 2500 per request (split it)"
    )
    assert int(answer.headers["Content-Length"]) < 200
    assert publisher.records == [] and publisher.dead_letters == []


def test_a_full_batch_of_garbage_lists_a_hundred_errors_and_counts_all() -> None:
    publisher = MemoryPublisher()
    batch: list[dict[str, object]] = [{} for _ in range(2499)] + [message(1)]
    answer = request("POST", "/v1/batch", publisher, json={"batch": batch}, headers=AUTH)
    assert answer.status == 200
    assert (answer.body["accepted"], answer.body["rejected"]) == (1, 2499)
    assert len(answer.body["errors"]) == 100 and len(publisher.dead_letters) == 2499


def test_an_event_over_the_size_limit() -> None:
    """A call over 32 KB is a 400; the same event inside a batch is a truncated dead letter."""
    publisher = MemoryPublisher()
    big = {**message(2), "properties": {"blob": "x" * 40_000}}
    single = request("POST", "/v1/track", publisher, data=orjson.dumps(big), headers=AUTH)
    assert single.status == 400 and "over the limit of 32768 per event" in single.body["error"]
    batch = {"batch": [message(1), big, message(3)]}
    answer = request("POST", "/v1/batch", publisher, json=batch, headers=AUTH)
    assert (answer.status, answer.body["accepted"], answer.body["rejected"]) == (200, 2, 1)
    assert [r.event_id for r in publisher.records] == ["m-1", "m-3"]
    (dead,) = publisher.dead_letters
    assert len(dead.payload) == 32768 and "over the limit of 32768" in dead.reason
    assert "sha256" in dead.reason and "truncated" in dead.reason


def test_bad_gzip_is_400_not_500() -> None:
    headers = {**AUTH, "Content-Encoding": "gzip", "Content-Type": "application/json"}
    answer = request("POST", "/v1/batch", data=b"this is not gzip", headers=headers)
    assert answer.status == 400 and "unreadable body" in answer.body["error"]


def test_405_carries_allow() -> None:
    for path, methods in (("/v1/track", {"POST", "OPTIONS"}), ("/health", {"GET", "HEAD"})):
        answer = request("PUT", path)
        assert answer.status == 405
        assert set(answer.headers["Allow"].split(",")) == methods


def test_extreme_times_are_dead_letters_and_the_rest_of_the_batch_is_kept() -> None:
    publisher = MemoryPublisher()
    extremes = [
        {**message(900), "timestamp": "9999-12-31T23:59:59-14:00"},
        {**message(901), "timestamp": "0001-01-01T00:00:00+14:00"},
        {**message(902), "sentAt": "0001-01-01T00:00:00Z"},
        {**message(903), "sentAt": "9999-12-31T23:59:59-14:00"},
        {**message(904), "timestamp": "2300-01-01T00:00:00Z"},
        {**message(905), "timestamp": "not a time"},
    ]
    batch = [message(i) for i in range(99)] + extremes
    answer = request("POST", "/v1/batch", publisher, json={"batch": batch}, headers=AUTH)
    assert answer.status == 200
    assert (answer.body["accepted"], answer.body["rejected"]) == (99, len(extremes))
    reasons = [e["error"] for e in answer.body["errors"]]
    assert all(reasons) and len(publisher.dead_letters) == len(extremes)
    assert "not an ISO 8601 time" in reasons[-1]
    assert sum("outside" in r for r in reasons) == len(extremes) - 1


def test_a_numeric_time_is_never_read_as_1970() -> None:
    publisher = MemoryPublisher()
    batch = [{**message(1), "timestamp": 1793610900}, {**message(2), "timestamp": 1793610900000}]
    answer = request("POST", "/v1/batch", publisher, json={"batch": batch}, headers=AUTH)
    assert (answer.body["accepted"], answer.body["rejected"]) == (0, 2)
    assert all("timestamp must be string" in e["error"] for e in answer.body["errors"])
    order = {
        "channel": "order",
        "type": "order_placed",
        "occurred_at": 1793610900,
        "account_id": "erp-1",
    }
    answer = request("POST", "/webhooks/orders", publisher, json=order, headers=AUTH)
    assert answer.body["rejected"] == 1 and "not a number" in answer.body["errors"][0]["error"]
    assert publisher.records == []


def test_nan_and_infinity_become_dead_letters_never_null() -> None:
    publisher = MemoryPublisher()
    good = orjson.dumps(message(1))
    nan = b'{"type":"track","event":"x","anonymousId":"a","messageId":"n","properties":{"v":NaN}}'
    inf = b'{"type":"track","event":"x","anonymousId":"a","messageId":"i","properties":{"v":1e999}}'
    body = b'{"batch":[' + b",".join([good, nan, inf]) + b"]}"
    answer = request("POST", "/v1/batch", publisher, data=body, headers=AUTH)
    assert (answer.status, answer.body["accepted"], answer.body["rejected"]) == (200, 1, 2)
    assert [e["index"] for e in answer.body["errors"]] == [1, 2]
    assert all("NaN or Infinity" in e["error"] for e in answer.body["errors"])
    assert [
        d.payload.count(b"NaN") + d.payload.count(b"Infinity") for d in publisher.dead_letters
    ] == [
        1,
        1,
    ]
    single = request("POST", "/v1/track", publisher, data=nan, headers=AUTH)
    assert (single.status, single.body["rejected"]) == (200, 1)
    assert publisher.dead_letters[-1].payload == nan  # the bytes as received
    assert [r.event_id for r in publisher.records] == ["m-1"]


def test_an_integer_past_64_bits_is_a_dead_letter_never_a_rounded_float() -> None:
    publisher = MemoryPublisher()
    big = b'{"type":"track","event":"x","anonymousId":"a","messageId":"b","properties":'
    big += b'{"v":123456789012345678901234567890,"phone":"0031201234567890123"}}'
    answer = request("POST", "/v1/track", publisher, data=big, headers=AUTH)
    assert (answer.status, answer.body["rejected"]) == (200, 1)
    assert "does not fit in 64 bits" in answer.body["errors"][0]["error"]
    assert publisher.records == [] and publisher.dead_letters[-1].payload == big
    # A long digit run inside a string is text, not a number: the event is kept whole.
    text = big.replace(b"123456789012345678901234567890", b"7")
    assert request("POST", "/v1/track", publisher, data=text, headers=AUTH).status == 200
    assert b"0031201234567890123" in publisher.records[-1].properties.encode()


def test_lenient_parsing_finds_what_json_cannot_hold() -> None:
    value, strict = parse_json(b'{"a": [1, {"b": -Infinity}], "c": 18446744073709551616}')
    assert (
        not strict
        and unrepresentable(value) == "a.1.b: -inf is not a JSON number (NaN or Infinity)"
    )
    value, _ = parse_json(b'{"c": 18446744073709551616, "d": "\\ud800"}')
    assert unrepresentable(value) == "c: the integer does not fit in 64 bits"
    assert unrepresentable({"d": "\ud800"}) == "d: not valid Unicode"
    assert parse_json(b'{"a": 1}') == ({"a": 1}, True)
    assert unrepresentable({"a": [1.5, "x", None, True, 2**63 - 1]}) is None


def test_dead_letters_of_large_payloads_keep_size_and_hash() -> None:
    row = dead_letter(b"y" * 100, "too big", "collect:/v1/batch", 1, limit=10)
    assert row.payload == b"y" * 10 and "100 bytes truncated to 10" in row.reason
    assert dead_letter(b"small", "bad", "s", 1, limit=10).reason == "bad"


def test_write_keys_are_compared_over_every_key() -> None:
    keys = frozenset({"wk_live_1", "wk_live_2", "k"})
    assert known_key(keys, "wk_live_2") and known_key(keys, "k")
    assert not any(
        known_key(keys, given) for given in ("wk_live_", "wk_live_12", "", "K", "\udc80")
    )


def test_budget_holds_bytes_and_lets_a_lone_request_through() -> None:
    budget = Budget(1000)
    budget.take(5000)  # alone: passes, whatever its size
    budget.give(5000)
    budget.take(600)
    try:
        budget.take(600)
    except Exception as exc:
        assert getattr(exc, "status", None) == 503
    else:
        raise AssertionError("the budget let 1200 bytes through a limit of 1000")
    budget.give(600)
    budget.take(600)


def test_bodies_read_before_their_key_is_known_hold_a_quarter_of_the_budget() -> None:
    budget = Budget(1000)
    first, second = Hold(budget), Hold(budget)
    first.grow(200)
    try:
        second.grow(100)  # 300 unverified bytes: over a quarter of 1000
    except Exception as exc:
        assert getattr(exc, "status", None) == 503
    else:
        raise AssertionError("unverified bodies took more than their share")
    first.verify()  # its key was found: the share is free again
    second.grow(100)
    assert (budget.used, budget.unverified) == (300, 100)
    first.release()
    second.release()
    assert (budget.used, budget.unverified) == (0, 0)


def _raw_request(url: str, head: bytes, body: bytes = b"") -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    sock.sendall(head + body)
    return sock


def _read_until_closed(sock: socket.socket, limit: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and when that was."""
    started = time.monotonic()
    sock.settimeout(limit)
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except TimeoutError:
        return received, float("inf")
    finally:
        sock.close()
    return received, time.monotonic() - started


def test_half_sent_bodies_and_headers_are_closed() -> None:
    config = settings(collect_read_timeout="1s")
    head = b"POST /v1/batch HTTP/1.1\r\nHost: x\r\nAuthorization: " + AUTH["Authorization"].encode()
    with running(config, MemoryPublisher()) as url:
        bodies = [
            _raw_request(url, head + b"\r\nContent-Length: 1000\r\n\r\n", b'{"batch": [')
            for _ in range(10)
        ]
        headers = [_raw_request(url, b"POST /v1/batch HTTP/1.1\r\nHost: x\r\n") for _ in range(10)]
        answers = [_read_until_closed(s, 10) for s in bodies + headers]
    for received, after in answers[:10]:
        assert received.startswith(b"HTTP/1.1 408") and after < 6
    for received, after in answers[10:]:
        assert (received, after < 6) == (b"", True)  # closed: no request ever arrived


def test_over_the_in_flight_budget_is_503_at_once() -> None:
    """Bytes that arrived count (3900 of a body still coming), not what a request declares."""
    config = settings(collect_read_timeout="3s", collect_max_inflight=4096)
    publisher = MemoryPublisher()
    head = b"POST /v1/batch HTTP/1.1\r\nHost: x\r\nAuthorization: " + AUTH["Authorization"].encode()
    with running(config, publisher) as url:
        partial = b'{"batch": [' + b" " * 3889
        slow = _raw_request(url, head + b"\r\nContent-Length: 4000\r\n\r\n", partial)
        time.sleep(0.3)
        body = b'{"batch": []}' + b" " * 1000
        second = _raw_request(url, head + f"\r\nContent-Length: {len(body)}\r\n\r\n".encode(), body)
        received, _ = _read_until_closed(second, 5)
        assert received.startswith(b"HTTP/1.1 503") and b"Retry-After: 1" in received
        _read_until_closed(slow, 10)
        small = _raw_request(
            url, head + b"\r\nContent-Length: 13\r\nConnection: close\r\n\r\n", b'{"batch": []}'
        )
        received, _ = _read_until_closed(small, 5)
        assert received.startswith(b"HTTP/1.1 200")  # the budget was given back


def test_browsers_can_read_retry_after() -> None:
    publisher = MemoryPublisher()

    async def go() -> list[tuple[int, str | None, str | None]]:
        app = create_app(settings(collect_rate_limit=1), publisher)
        async with TestClient(TestServer(app)) as client:
            answers = []
            for _ in range(3):
                body = orjson.dumps({**message(1), "writeKey": KEY})
                response = await client.post(
                    "/v1/t", data=body, headers={"Origin": "https://shop.example"}
                )
                answers.append(
                    (
                        response.status,
                        response.headers.get("Retry-After"),
                        response.headers.get("Access-Control-Expose-Headers"),
                    )
                )
            return answers

    answers = asyncio.run(go())
    assert [status for status, _, _ in answers] == [200, 200, 429]
    assert answers[2][1] == "1"
    assert all("Retry-After" in (exposed or "") for _, _, exposed in answers)


def test_a_quantity_past_64_bits_is_a_dead_letter_never_a_silent_one() -> None:
    publisher = MemoryPublisher()
    products = [{"sku": "KAS-200", "quantity": q} for q in (2, "3", 4.0, None)]
    good = {**message(1), "event": "Order Completed", "properties": {"products": products}}
    bad = [
        {**message(n), "event": "Order Completed", "properties": {"products": [{"quantity": q}]}}
        for n, q in ((2, -1), (3, 2.5), (4, "two"), (5, True))
    ]
    body = orjson.dumps({"batch": [good, *bad]})[:-2]
    body += b',{"type":"track","event":"Order Completed","anonymousId":"a","messageId":"m-6",'
    body += b'"properties":{"products":[{"quantity":18446744073709551616}]}}]}'
    answer = request("POST", "/v1/batch", publisher, data=body, headers=AUTH)
    assert (answer.status, answer.body["accepted"], answer.body["rejected"]) == (200, 1, 5)
    errors = [e["error"] for e in answer.body["errors"]]
    assert all("quantity must be a whole number" in error for error in errors[:4])
    assert "does not fit in 64 bits" in errors[4]  # read exactly, never as a rounded float
    items = orjson.loads(publisher.records[0].properties)["items"]
    assert [item["quantity"] for item in items] == [2, 3, 4, 1]
