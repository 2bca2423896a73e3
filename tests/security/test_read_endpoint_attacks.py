"""The hardened read endpoint attacked again (issue 16): a web page, a local process without
the password, and a hostile SQL author with it.

Holes found by this round each have a test that failed before its fix: a query through
`/ping` without credentials, a time limit of `1e-9` read by the engine as unlimited,
uncapped `max_threads`/`max_block_size`, a query that ran on after its client left, slow
clients holding every connection, malformed chunked bodies dropping the connection with a
traceback, a GET's body read as a second request, a `query_id` adding response headers
(CR/LF), the `*IgnoreSet` spellings of `IN` naming another database's table, and functions
whose one call (editDistance of two 64 KiB strings: 13 s per row, in one block) no time
limit or cancel stops, or that call a model.
The rest are attacks that already failed safely, kept as compact parametrized cases. A real
endpoint on 127.0.0.1 over the session's embedded engine.
"""

from __future__ import annotations

import base64
import http.client
import os
import socket
import time
from collections.abc import Callable
from urllib.parse import quote, urlencode

import pytest

from journeys.sinks.clickhouse.http_reader import ReadServer
from journeys.sinks.clickhouse.read_access import MAX_BLOCK_SIZE, ReadLimits
from tests.security.reading import BASIC, PASSWORD, TOKEN, USER

pytestmark = pytest.mark.integration

BASIC_LINE = f"Authorization: Basic {TOKEN}"
#: A read of the project's own table that runs for minutes, block after block.
LONG_QUERY = "SELECT count() FROM " + ", ".join(f"events AS t{i}" for i in range(11))


def _request(
    server: ReadServer, path: str, headers: dict[str, str] | None = None, body: bytes | None = None
) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        connection.request("POST" if body is not None else "GET", path, body, headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def _query(server: ReadServer, sql: str, **params: str) -> tuple[int, bytes]:
    return _request(server, "/?" + urlencode(params), BASIC, sql.encode())


def _raw(server: ReadServer, data: bytes, wait: float = 5.0) -> bytes:
    """Send raw bytes; everything the endpoint answers until it closes or goes quiet."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=wait) as sock:
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


# --- holes found (each failed before its fix) ----------------------------------------------


def test_ping_runs_no_query_without_credentials(endpoint: ReadServer) -> None:
    status, body = _request(endpoint, "/ping?query=" + quote("SELECT count() FROM events"))
    assert (status, body) == (200, b"Ok.\n")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("max_execution_time", "1e-9"),
        ("max_execution_time", "0.0001"),
        ("max_memory_usage", "0.5"),
        ("max_result_rows", "0.5"),
        ("max_execution_time", "inf"),
        ("max_threads", "100000"),
        ("max_block_size", "100000000000"),
    ],
)
def test_a_setting_cannot_become_unlimited_or_huge(
    endpoint: ReadServer, name: str, value: str
) -> None:
    status, body = _query(endpoint, f"SELECT toFloat64(getSetting('{name}'))", **{name: value})
    assert status == 200, body
    caps = {
        "max_execution_time": 30,
        "max_memory_usage": 1 << 30,
        "max_result_rows": 10_000_000,
        "max_threads": os.cpu_count() or 4,
        "max_block_size": MAX_BLOCK_SIZE,
    }
    assert 0 < float(body) <= caps[name]


def test_a_query_whose_client_left_is_cancelled(serve: Callable[..., ReadServer]) -> None:
    server = serve(ReadLimits(max_queries=1, queue_timeout=1.0, max_execution_seconds=30))
    request = (
        f"GET /?query={quote(LONG_QUERY)} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Basic {TOKEN}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(request)
        time.sleep(1.0)  # it runs now, holding the only query slot
    started = time.monotonic()
    status, body = (0, b"")
    while time.monotonic() - started < 10 and status != 200:  # the slot is freed at once
        status, body = _query(server, "SELECT 1")
    assert (status, body) == (200, b"1\n")
    assert time.monotonic() - started < 5


def test_slow_clients_cannot_hold_every_connection(serve: Callable[..., ReadServer]) -> None:
    server = serve(ReadLimits(max_connections=3, idle_timeout=1.0))
    slow = [socket.create_connection(("127.0.0.1", server.port), timeout=5) for _ in range(3)]
    try:
        answered = False
        started = time.monotonic()
        while time.monotonic() - started < 4 and not answered:
            for sock in slow:  # a byte of a request line now and then, never a whole one
                try:
                    sock.send(b"G")
                except OSError:
                    pass
            time.sleep(0.3)
            answered = _request(server, "/?query=SELECT%201", BASIC) == (200, b"1\n")
        assert answered
    finally:
        for sock in slow:
            sock.close()


@pytest.mark.parametrize(
    ("transfer_encoding", "body"),
    [
        ("chunked", b"zz\r\nSELECT 1\r\n0\r\n\r\n"),
        ("chunked", b"-8\r\nSELECT 1\r\n0\r\n\r\n"),
        ("chunked", b"8" * 9000 + b"\r\nSELECT 1\r\n0\r\n\r\n"),
        ("gzip, chunked", b"8\r\nSELECT 1\r\n0\r\n\r\n"),
    ],
)
def test_malformed_bodies_get_an_error_answer(
    endpoint: ReadServer, transfer_encoding: str, body: bytes
) -> None:
    head = (
        f"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic {TOKEN}\r\n"
        f"Transfer-Encoding: {transfer_encoding}\r\n\r\n"
    ).encode()
    answer = _raw(endpoint, head + body)
    assert answer.startswith(b"HTTP/1.1 5") and b"Code: 1001." in answer, answer[:300]
    assert answer.count(b"HTTP/1.1 ") == 1


def test_a_get_body_is_not_read_as_a_second_request(endpoint: ReadServer) -> None:
    smuggled = f"GET /?query=SELECT%2042 HTTP/1.1\r\nHost: 127.0.0.1\r\n{BASIC_LINE}\r\n"
    answer = _raw(
        endpoint,
        f"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(smuggled)}\r\n\r\n".encode()
        + smuggled.encode(),
    )
    assert answer.count(b"HTTP/1.1 ") == 1 and b"42" not in answer.split(b"\r\n\r\n", 1)[1]


def test_a_query_id_cannot_add_headers_to_the_answer(endpoint: ReadServer) -> None:
    answer = _raw(
        endpoint,
        b"GET /?query=SELECT%201&query_id=abc%0d%0aSet-Cookie:%20x=1 HTTP/1.1\r\n"
        b"Host: 127.0.0.1\r\nConnection: close\r\n" + BASIC_LINE.encode() + b"\r\n\r\n",
    )
    head = answer.split(b"\r\n\r\n", 1)[0]
    assert head.startswith(b"HTTP/1.1 200") and b"Set-Cookie" not in head, answer


@pytest.mark.parametrize(
    "function", ["inIgnoreSet", "notInIgnoreSet", "globalInIgnoreSet", "notNullInIgnoreSet"]
)
def test_in_spellings_cannot_name_tables_outside_the_project(
    endpoint: ReadServer, function: str
) -> None:
    status, body = _query(endpoint, f"SELECT {function}('x', system.processes)")
    assert status == 403 and b"system.processes" in body, body


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT editDistance(repeat('a', 65536), repeat(event_id, 65536)) FROM events",
        "SELECT levenshteinDistance('a', event_id) FROM events",
        "SELECT damerauLevenshteinDistance('a', 'b')",
        "SELECT jaroWinklerSimilarity('a', 'b')",
        "SELECT arrayLevenshteinDistance([1], [2])",
        "SELECT length(arrayFold((acc, x) -> arrayPushBack(acc, x), range(300000), [0]))",
        "SELECT multiFuzzyMatchAny('a', 1, ['b'])",
        "SELECT aiGenerate('hi', map('credentials', 'x'))",
        "SELECT 1 FROM events WHERE aiFilter(event_id, 'x')",
    ],
)
def test_functions_a_time_limit_cannot_stop_or_that_call_out_are_refused(
    endpoint: ReadServer, sql: str
) -> None:
    started = time.monotonic()
    status, body = _query(endpoint, sql)
    assert status == 403 and b"is not allowed here" in body, body
    assert time.monotonic() - started < 10


# --- attacks that already failed safely ------------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "params"),
    [
        ("SELECT * FROM {t:Identifier}", {"param_t": "system.users"}),
        ("SELECT * FROM {d:Identifier}.{t:Identifier}", {"param_d": "system", "param_t": "users"}),
        ("SELECT 1 WHERE 'x' IN {t:Identifier}", {"param_t": "system.query_log"}),
        ("SELECT * FROM events", {"database": "system"}),
        ("SELECT 1", {"default_format": "Protobuf"}),
        ("SELECT 1", {"default_format": "Template"}),
        ("SELECT 1", {"max_memory_usage ": "0"}),
        ("SELECT 1", {"MAX_MEMORY_USAGE": "0"}),
        ("EXPLAIN PIPELINE SELECT * FROM file('/etc/hostname')", {}),
        ("DESCRIBE (SELECT * FROM file('/etc/hostname'))", {}),
        ("SELECT * FROM merge('system', '^users$')", {}),
        ("SELECT * FROM view(SELECT * FROM system.users)", {}),
        ("SELECT * FROM loop(events) LIMIT 1", {}),
        ("SELECT * FROM (SELECT * FROM values('x String', 'a'))", {}),
        ("SELECT * FROM dictionary('d')", {}),
        ("SELECT * FROM format(CSV, 'a')", {}),
        ("SELECT * FROM cluster('default', system.one)", {}),
        ("SELECT addressToSymbol(1)", {}),
        ("SELECT getClientHTTPHeader('Authorization')", {}),
        ("SELECT joinGet('system.users', 'name', 1)", {}),
        ("SELECT * FROM system.build_options", {}),
        ("SHOW CREATE TABLE system.users", {}),
        ("SHOW GRANTS", {}),
        ("SHOW ACCESS", {}),
        ("KILL QUERY WHERE 1", {}),
        ("SYSTEM SHUTDOWN", {}),
        ("BACKUP TABLE events TO File('/tmp/journeys-attack-backup')", {}),
        ("SELECT * FROM events SETTINGS max_execution_time = 0", {}),
        ("SELECT 1 /* ; */ ; SELECT 2", {}),
    ],
)
def test_other_sql_attacks_fail_safely(
    endpoint: ReadServer, sql: str, params: dict[str, str]
) -> None:
    status, body = _query(endpoint, sql, **params)
    assert status >= 400, body
    assert not os.path.exists("/tmp/journeys-attack-backup")


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": "Basic " + base64.b64encode(f"{USER}:".encode()).decode()},
        {"Authorization": "Basic " + base64.b64encode(f"READER:{PASSWORD}".encode()).decode()},
        {"Authorization": f"Bearer {PASSWORD}"},
        {"X-ClickHouse-User": USER},
        {"X-ClickHouse-Key": PASSWORD},
        {"Authorization": "Basic !!!"},
    ],
)
def test_partial_or_mangled_credentials_are_refused(
    endpoint: ReadServer, headers: dict[str, str]
) -> None:
    status, _ = _request(endpoint, "/?query=SELECT%201", headers)
    assert status == 401


@pytest.mark.parametrize(
    "host", ["127.0.0.1.nip.io", "localhost.", "localhost.:8124", "0x7f000001", "2130706433"]
)
def test_rebinding_host_spellings_are_refused(endpoint: ReadServer, host: str) -> None:
    status, _ = _request(endpoint, "/?query=SELECT%201", {**BASIC, "Host": host})
    assert status == 403
