"""The hardened collector attacked again (issue 16): anyone, with the public write key or
without it.

One hole found by this round: a malformed request (a bad header, chunk size or
Content-Encoding, or gzip that does not decode) wrote aiohttp's error and its traceback, 10 to
30 lines, to the log, before any key was checked, so anyone could fill the disk; each is now one
debug line. The other attacks already failed safely and are kept as compact cases: gzip and
deflate bombs, nesting bombs, a batch of 10^5 items, numbers past a double, integers of
thousands of digits, invalid UTF-8, and the admin endpoint asked with a write key.
"""

from __future__ import annotations

import json
import logging
import socket
import zlib
from typing import Any

import pytest
from pydantic import SecretStr

from journeys.producers.collect.publisher import MemoryPublisher
from tests.unit.collect.client import AUTH, KEY, request, settings
from tests.unit.collect.server import running

TRACK = {"type": "track", "event": "Product Viewed", "anonymousId": "a-1"}
JSON = {**AUTH, "Content-Type": "application/json"}


def _raw(url: str, data: bytes) -> bytes:
    """Send raw bytes to the collector; what it answers until it closes or goes quiet."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=2) as sock:
        sock.sendall(data)
        out = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except (TimeoutError, ConnectionResetError):
                return out
            if not chunk:
                return out
            out += chunk


def _post(body: bytes, encoding: str = "", path: str = "/v1/track") -> bytes:
    extra = f"Content-Encoding: {encoding}\r\n" if encoding else ""
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"{extra}Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


# --- the hole: anyone could fill the log --------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        _post(b"xx", "br"),
        _post(b"xx", "zstd"),
        _post(b"this is not gzip", "gzip"),
        b"POST /v1/track HTTP/1.1\r\nHost 127.0.0.1\r\n\r\n",
        b"POST /v1/track HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"POST /v1/track HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Length: 3\r\n\r\n0\r\n\r\n",
        b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-a: " + b"y" * 100_000 + b"\r\n\r\n",
    ],
)
def test_malformed_requests_are_answered_400_without_an_error_in_the_log(
    data: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    with running(settings(), MemoryPublisher()) as url:
        with caplog.at_level(logging.INFO):
            answer = _raw(url, data)
            answer += _raw(url, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert answer.startswith(b"HTTP/1.") and b" 400 " in answer.split(b"\r\n", 1)[0], answer[:200]
    assert b" 200 " in answer  # the collector still answers
    noisy = [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    assert not noisy, [r.getMessage() for r in noisy]


# --- attacks that already failed safely -----------------------------------------------------


def _bomb(size: int, wbits: int) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, wbits)
    block = b" " * (1 << 20)
    return b"".join(packer.compress(block) for _ in range(size >> 20)) + packer.flush()


@pytest.mark.parametrize(
    ("encoding", "body"),
    [("gzip", _bomb(64 << 20, 31)), ("deflate", _bomb(64 << 20, 15))],
)
def test_compression_bombs_stop_at_the_body_limit(encoding: str, body: bytes) -> None:
    answer = request("POST", "/v1/batch", data=body, headers={**JSON, "Content-Encoding": encoding})
    assert answer.status == 413


def _track_with(properties: bytes) -> bytes:
    return json.dumps(TRACK)[:-1].encode() + b', "properties": ' + properties + b"}"


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"[" * 100_000, 400),  # nesting bomb, strict parser
        (b'{"a":' * 100_000, 400),
        (_track_with(b"[" * 30_000 + b"]" * 30_000).replace(b"{", b'{"n": NaN, ', 1), 400),
        (_track_with(b"9" * 100_000), 400),  # an integer of 10^5 digits
        (_track_with(b'"\xff\xfe"'), 400),  # invalid UTF-8
        (_track_with(b'"\xc0\xaf"'), 400),  # overlong UTF-8
        (json.dumps({"batch": [{}] * 100_000}).encode(), 400),
    ],
)
def test_hostile_bodies_are_refused_whole(body: bytes, status: int) -> None:
    answer = request("POST", "/v1/track", data=body, headers=JSON)
    assert answer.status == status, answer.body


@pytest.mark.parametrize(
    "value", [b"1e309", b"-1e309", b"NaN", b"Infinity", b'"\\ud800"', b"18446744073709551616"]
)
def test_values_json_cannot_hold_are_dead_letters(value: bytes) -> None:
    publisher = MemoryPublisher()
    body = _track_with(b'{"v": ' + value + b"}")
    answer = request("POST", "/v1/track", publisher, data=body, headers=JSON)
    assert answer.status == 200 and answer.body["rejected"] == 1, answer.body
    assert not publisher.records and len(publisher.dead_letters) == 1


@pytest.mark.parametrize(
    "headers",
    [
        AUTH,
        {"Authorization": f"Bearer {KEY}"},
        {"Authorization": "Bearer"},
        {"Authorization": "bearer ADMIN-KEY-FOR-ATTACKS"},
        {},
    ],
)
def test_a_write_key_never_opens_the_admin_endpoint(headers: dict[str, str]) -> None:
    config = settings(admin_key=SecretStr("admin-key-for-attacks"))
    body: Any = {"email": "someone@example.com", "writeKey": KEY}
    answer = request("POST", "/v1/privacy/forget", config=config, json=body, headers=headers)
    assert answer.status in (401, 403), answer.body


def test_an_admin_key_equal_to_a_write_key_turns_the_admin_endpoint_off() -> None:
    config = settings(admin_key=SecretStr(KEY))
    answer = request(
        "POST",
        "/v1/privacy/forget",
        config=config,
        json={"email": "someone@example.com"},
        headers={"Authorization": f"Bearer {KEY}"},
    )
    assert answer.status == 403, answer.body
