"""The read endpoint against hostile requests (issue 16): every attack that worked before is
refused, legitimate BI clients still read, and a fuzz of ClickHouse syntax gets no file,
request or write through.

A real endpoint on 127.0.0.1 over the session's embedded engine; a small database of its own
per test (made here with the engine, so these tests do not depend on the migrations).
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import chdb
import clickhouse_connect
import pytest
from clickhouse_connect.driver.exceptions import DatabaseError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from journeys.sinks.clickhouse.http_reader import ReadServer
from journeys.sinks.clickhouse.read_access import ReadLimits, kept_password
from tests.security.reading import BASIC, PASSWORD, USER

pytestmark = pytest.mark.integration


def _path(dsn: str) -> str:
    return dsn.removeprefix("chdb://")


def _request(
    server: ReadServer,
    path: str,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        connection.request("POST" if body is not None else "GET", path, body, headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def _query(server: ReadServer, sql: str, **params: str) -> tuple[int, bytes]:
    from urllib.parse import urlencode

    status, _, body = _request(server, "/?" + urlencode(params), BASIC, sql.encode())
    return status, body


def _state(chdb_dsn: str) -> list[tuple[str, ...]]:
    """Every table of the engine but `system`'s, and its row count: what a write would change."""
    handle = chdb.connect(_path(chdb_dsn))
    try:
        text = bytes(
            handle.query(
                "SELECT database, name, toString(total_rows) FROM system.tables "
                "WHERE database NOT IN ('system', 'information_schema', 'INFORMATION_SCHEMA') "
                "ORDER BY database, name",
                "TabSeparated",
            ).bytes()
        ).decode()
    finally:
        handle.close()
    return [tuple(line.split("\t")) for line in text.splitlines()]


class Listener:
    """A loopback TCP port that counts the connections made to it (no thread)."""

    def __init__(self) -> None:
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen(64)
        self.socket.setblocking(False)
        self.port = int(self.socket.getsockname()[1])
        self.hits = 0

    def poll(self) -> int:
        """Accept (and close) what arrived; the count so far."""
        while True:
            try:
                connection, _ = self.socket.accept()
            except BlockingIOError:
                return self.hits
            connection.close()
            self.hits += 1

    def close(self) -> None:
        self.socket.close()


@pytest.fixture()
def listener() -> Iterator[Listener]:
    opened = Listener()
    yield opened
    opened.close()


# --- 1. credentials ----------------------------------------------------------------------


def test_a_query_needs_the_endpoints_user_and_password(endpoint: ReadServer) -> None:
    status, headers, body = _request(endpoint, "/?query=SELECT%201")
    assert status == 401 and headers["WWW-Authenticate"].startswith("Basic ")
    assert b"516" in body
    wrong = {"Authorization": "Basic " + base64.b64encode(f"{USER}:nope".encode()).decode()}
    assert _request(endpoint, "/?query=SELECT%201", wrong)[0] == 401
    assert _request(endpoint, "/?query=SELECT%201&user=default")[0] == 401
    assert _request(endpoint, "/", {}, b"SELECT 1")[0] == 401
    assert _request(endpoint, "/?query=SELECT%201", BASIC)[2] == b"1\n"
    headers_login = {"X-ClickHouse-User": USER, "X-ClickHouse-Key": PASSWORD}
    assert _request(endpoint, "/?query=SELECT%202", headers_login)[2] == b"2\n"
    params = f"/?query=SELECT%203&user={USER}&password={PASSWORD}"
    assert _request(endpoint, params)[2] == b"3\n"
    assert _request(endpoint, "/ping") == (200, _request(endpoint, "/ping")[1], b"Ok.\n")


def test_the_generated_password_is_kept_private_and_reused(tmp_path: Path) -> None:
    first = kept_password(tmp_path / "data")
    assert len(first) >= 32
    assert (tmp_path / "data" / "read-password").stat().st_mode & 0o777 == 0o600
    assert kept_password(tmp_path / "data") == first
    assert kept_password(tmp_path / "other") != first


def test_read_credentials_prints_the_kept_password_and_the_limits(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from journeys.cli import main

    data = tmp_path / "data"
    result = CliRunner().invoke(
        main, ["read-credentials", "--json", "--data-dir", str(data), "--read-port", "9124"]
    )
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert shown["url"] == "http://127.0.0.1:9124" and shown["user"] == "reader"
    assert shown["password"] == kept_password(data)
    assert shown["max_memory_bytes"] == 1 << 30 and shown["max_execution_seconds"] == 30


# --- 2. browsers and DNS rebinding --------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Host": "evil.example"},
        {"Host": "rebound.evil.example:8124"},
    ],
)
def test_requests_from_web_pages_are_refused(endpoint: ReadServer, headers: dict[str, str]) -> None:
    status, answer_headers, body = _request(
        endpoint, "/?query=SELECT%20version()", {**BASIC, **headers}
    )
    assert status == 403, body
    assert not any(name.lower().startswith("access-control-") for name in answer_headers)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost:8124", "[::1]:8124", "127.0.0.1:1"])
def test_local_host_names_are_answered(endpoint: ReadServer, host: str) -> None:
    status, headers, _ = _request(endpoint, "/?query=SELECT%201", {**BASIC, "Host": host})
    assert status == 200
    assert not any(name.lower().startswith("access-control-") for name in headers)


# --- 3. SQL: the attacks of the issue -----------------------------------------------------


def test_the_attacks_of_the_issue_are_refused(
    endpoint: ReadServer, tmp_path: Path, listener: Listener, chdb_dsn: str, database: str
) -> None:
    before = _state(chdb_dsn)
    target = tmp_path / "p.txt"
    attacks = [
        "SELECT substring(file('/etc/hostname'), 1, 30)",
        "SELECT file('/proc/self/environ')",
        "SELECT * FROM file('/etc/hostname', 'LineAsString')",
        f"SELECT 'x', substring($$'$$,3) AS a INTO OUTFILE '{target}' TRUNCATE FORMAT TSV -- '",
        f"SELECT 1 INTO OUTFILE '{target}'",
        f"SELECT $$'$$; CREATE TABLE {database}.pwned (a UInt8) ENGINE = Memory -- '",
        f"SELECT 1; DROP TABLE {database}.events",
        f"DESCRIBE url('http://127.0.0.1:{listener.port}/x')",
        f"SELECT * FROM url('http://127.0.0.1:{listener.port}/x', 'CSV', 'a String')",
        f"SELECT * FROM remote('127.0.0.1:{listener.port}', system.one)",
        "SELECT * FROM system.users",
        "SELECT query FROM system.processes",
        "SELECT * FROM system.numbers LIMIT 1",
        "SELECT count() FROM numbers(10)",
        "SELECT 1 IN numbers(3)",
        f"SELECT 1 IN URL('http://127.0.0.1:{listener.port}/i', 'CSV', 'a UInt8')",
        "SELECT * FROM executable('id', 'TSV', 'a String')",
        "SHOW PROCESSLIST",
        "SELECT 1 SETTINGS readonly = 0",
        f"INSERT INTO {database}.events (event_id) VALUES ('x')",
        f"CREATE TABLE {database}.pwned (a UInt8) ENGINE = Memory",
        "SET readonly = 0",
        "SELECT * FROM default.anything",
    ]
    for sql in attacks:
        status, body = _query(endpoint, sql)
        assert status >= 400, (sql, body)
    assert not target.exists()
    assert listener.poll() == 0
    assert _state(chdb_dsn) == before


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 'x', substring($$'$$,3) AS a INTO OUTFILE '/tmp/p.txt' TRUNCATE FORMAT TSV -- '",
        "SELECT $t$'$t$; DROP TABLE events -- '",
        "SELECT 1 /* a /* b */ ; */ ; DROP TABLE events",
    ],
)
def test_the_quick_text_check_of_journeys_query_sees_heredocs_and_nested_comments(
    sql: str,
) -> None:
    from journeys.sinks.clickhouse.sql_guard import refusal

    assert refusal(sql) is not None


@pytest.mark.parametrize(
    "params",
    [
        {"send_logs_level": "trace"},
        {"readonly": "0", "allow_ddl": "1"},
        {"allow_introspection_functions": "1"},
        {"format_schema": "/etc/passwd"},
        {"output_format_schema": "/tmp/journeys-schema-test"},
        {"user_files_path": "/"},
    ],
)
def test_settings_outside_the_allow_list_are_refused(
    endpoint: ReadServer, params: dict[str, str]
) -> None:
    status, body = _query(endpoint, "SELECT 1", **params)
    assert status == 403 and b"164" in body, body
    assert not Path("/tmp/journeys-schema-test").exists()


def test_the_request_cannot_raise_the_limits(endpoint: ReadServer) -> None:
    names = ("max_memory_usage", "max_execution_time", "max_result_rows", "readonly")
    sql = "SELECT " + ", ".join(f"getSetting('{n}')" for n in names) + " FORMAT JSONEachRow"
    status, body = _query(
        endpoint, sql, max_memory_usage="0", max_execution_time="100000", max_result_rows="5"
    )
    assert status == 200, body
    got = list(json.loads(body).values())
    assert [str(v) for v in got] == [str(1 << 30), "30", "5", "1"]


# --- 4. limits ------------------------------------------------------------------------------


def test_memory_and_time_are_bounded(serve: Callable[..., ReadServer]) -> None:
    server = serve(ReadLimits(max_memory=64 << 20, max_execution_seconds=1))
    big = "SELECT length(groupArray(x)) FROM (SELECT arrayJoin(range(30000000)) AS x)"
    status, body = _query(server, big)
    assert status >= 400 and b"241" in body, body  # MEMORY_LIMIT_EXCEEDED
    started = time.monotonic()
    slow = (
        "SELECT sum(cityHash64(x, y)) FROM (SELECT arrayJoin(range(100000)) AS x) AS a "
        "CROSS JOIN (SELECT arrayJoin(range(100000)) AS y) AS b"
    )
    status, body = _query(server, slow)
    assert status >= 400 and b"159" in body, body  # TIMEOUT_EXCEEDED
    assert time.monotonic() - started < 15
    status, body = _query(server, "SELECT event_id FROM events", max_result_rows="3")
    assert status >= 400 and b"396" in body, body  # TOO_MANY_ROWS_OR_BYTES


def test_concurrent_queries_beyond_the_limit_get_503(serve: Callable[..., ReadServer]) -> None:
    server = serve(ReadLimits(max_queries=1, queue_timeout=0.2))
    answers: list[int] = []
    slow = threading.Thread(target=lambda: answers.append(_query(server, "SELECT sleep(2)")[0]))
    slow.start()
    time.sleep(0.5)
    status, body = _query(server, "SELECT 1")
    slow.join(30)
    assert status == 503 and b"202" in body, body
    assert answers == [200]
    assert _query(server, "SELECT 1") == (200, b"1\n")


def test_connections_are_bounded_and_idle_ones_closed(serve: Callable[..., ReadServer]) -> None:
    server = serve(ReadLimits(max_connections=3, idle_timeout=1.0))
    idle = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(3)]
    try:
        time.sleep(0.3)
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as extra:
            extra.sendall(b"GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert extra.recv(100).startswith(b"HTTP/1.1 503")
        for connection in idle:  # the server closes idle connections after idle_timeout
            assert connection.recv(100) == b""
    finally:
        for connection in idle:
            connection.close()
    deadline = time.monotonic() + 10
    while _request(server, "/ping")[0] != 200:
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_a_compressed_body_cannot_inflate_beyond_the_query_limit(endpoint: ReadServer) -> None:
    import gzip

    bomb = gzip.compress(b"SELECT 1 " + b" " * (64 << 20))
    status, _, body = _request(endpoint, "/", {**BASIC, "Content-Encoding": "gzip"}, bomb)
    assert status >= 400 and b"too large" in body


# --- 5. legitimate clients ------------------------------------------------------------------


def test_bi_tools_introspect_and_read(endpoint: ReadServer, database: str) -> None:
    client = clickhouse_connect.get_client(
        host="127.0.0.1", port=endpoint.port, username=USER, password=PASSWORD, database=database
    )
    try:
        # What Grafana's, Metabase's and Superset's ClickHouse drivers ask on connecting.
        assert client.query("SELECT version()").result_rows[0][0]
        assert client.query("SELECT timezone()").result_rows
        assert client.query("SELECT currentDatabase()").result_rows == [(database,)]
        assert (database,) in client.query("SHOW DATABASES").result_rows
        assert ("events",) in client.query("SHOW TABLES").result_rows
        names = client.query(
            "SELECT name FROM system.tables WHERE database = {db:String} ORDER BY name",
            parameters={"db": database},
        ).result_rows
        assert names == [("events",), ("events_current",)]
        columns = client.query(
            "SELECT name, type FROM system.columns WHERE database = {db:String} "
            "AND table = 'events' ORDER BY position",
            parameters={"db": database},
        ).result_rows
        assert columns[0] == ("event_id", "String")
        assert client.query(f"DESCRIBE TABLE {database}.events").result_rows[0][0] == "event_id"
        assert client.query(f"EXISTS TABLE {database}.events").result_rows == [(1,)]
        assert client.query("SELECT name FROM system.databases").result_rows
        assert client.query("SELECT count() FROM system.functions").result_rows[0][0] > 100
        assert client.query(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = {db:String}",
            parameters={"db": database},
        ).result_rows
        rows = client.query(
            "WITH per AS (SELECT account_id, count() AS n FROM events_current "
            "GROUP BY account_id) SELECT account_id, n FROM per ORDER BY account_id"
        ).result_rows
        assert rows == [("acct-0", 4), ("acct-1", 3), ("acct-2", 3)]
        assert client.query("EXPLAIN SELECT count() FROM events").result_rows
    finally:
        client.close()
    status, body = _query(
        endpoint,
        f"SELECT account_id, count() AS n FROM {database}.events GROUP BY account_id "
        "ORDER BY account_id FORMAT JSON",
        database=database,
    )
    assert status == 200 and json.loads(body)["rows"] == 3
    status, body = _query(endpoint, "SELECT 'a\tb' AS s, $$it's$$ AS t", default_format="JSON")
    assert status == 200 and json.loads(body)["data"] == [{"s": "a\tb", "t": "it's"}]


def test_sqlalchemy_with_credentials_reads(endpoint: ReadServer, database: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(
        f"clickhousedb://{USER}:{PASSWORD}@127.0.0.1:{endpoint.port}/{database}"
    )
    try:
        with engine.connect() as connection:
            assert "events" in sa.inspect(connection).get_table_names()
            total = connection.execute(sa.text("SELECT sum(n) FROM events_current")).scalar()
        assert total == sum(range(10))
    finally:
        engine.dispose()
    with pytest.raises(DatabaseError):
        clickhouse_connect.get_client(host="127.0.0.1", port=endpoint.port).query("SELECT 1")


# --- 6. fuzz --------------------------------------------------------------------------------


def _heads(database: str, port: int) -> list[str]:
    return [
        "SELECT 1",
        "SELECT 'x', substring($$'$$,3) AS a",
        "SELECT $t$';$t$ AS b",
        "SELECT E'\\x27' AS c",
        "WITH 1 AS x SELECT x",
        f"SELECT event_id FROM {database}.events",
        'SELECT "event_id" FROM `events`',
        "DESCRIBE TABLE events",
        "SHOW TABLES",
        "EXPLAIN SELECT 1",
        "EXISTS TABLE events",
        f"DESCRIBE url('http://127.0.0.1:{port}/d', 'CSV', 'a String')",
        "SELECT file('/etc/hostname') AS h",
        "(SELECT 1)",
    ]


FILLERS = [
    ", 'it''s' AS s1",
    ", 'a\\'b' AS s2",
    ", $$--$$ AS s3",
    ", $$'$$ AS s4",
    " /* a /* ' */ b */ ",
    " -- '\n",
    " # '\n",
    ", `x``y` ",
    ", (SELECT 1) AS sub",
    " '",
    " $$",
    " /* ",
]


def _dangers(tmp: Path, port: int, database: str) -> list[str]:
    out = str(tmp / "out.txt")
    return [
        f"INTO OUTFILE '{out}'",
        f"INTO OUTFILE '{out}' TRUNCATE",
        f"INTO OUTFILE '{out}' AND STDOUT",
        f"INTO OUTFILE '{out}' COMPRESSION 'gzip'",
        f"; CREATE TABLE {database}.pwn (a UInt8) ENGINE = Memory",
        f"; INSERT INTO {database}.events (event_id) VALUES ('x')",
        f"; DROP TABLE {database}.events",
        f"; SELECT * FROM url('http://127.0.0.1:{port}/s', 'CSV', 'a String')",
        "SETTINGS readonly = 0",
        "SETTINGS max_memory_usage = 0",
        "FORMAT Template",
        "FORMAT CapnProto",
        f", file('{out}') AS f",
        f"FROM file('{out}', 'CSV', 'a String')",
        f"FROM url('http://127.0.0.1:{port}/u', 'CSV', 'a String')",
        f"FROM remote('127.0.0.1:{port}', system.one)",
        f"FROM s3('http://127.0.0.1:{port}/b/x.csv', 'CSV', 'a String')",
        "FROM executable('id', 'TSV', 'a String')",
        "FROM input('a String')",
        "FROM numbers(10)",
        "FROM system.users",
        "WHERE 1 IN numbers(3)",
        f"WHERE 1 IN {database}.events",
        f"UNION ALL SELECT * FROM url('http://127.0.0.1:{port}/n', 'CSV', 'a String')",
    ]


TAILS = ["", " FORMAT TSV", " -- '", " /* ' */", ";", " SETTINGS max_threads = 1", " FORMAT JSON;"]


def test_fuzzed_clickhouse_syntax_writes_reads_and_reaches_nothing(
    endpoint: ReadServer, tmp_path: Path, listener: Listener, chdb_dsn: str, database: str
) -> None:
    heads = _heads(database, listener.port)
    dangers = _dangers(tmp_path, listener.port, database)
    before = _state(chdb_dsn)
    answered: dict[int, int] = {}

    @settings(
        max_examples=int(os.environ.get("JOURNEYS_FUZZ_EXAMPLES", "200")),
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(
        st.sampled_from(heads),
        st.lists(st.sampled_from(FILLERS), max_size=3),
        st.lists(st.sampled_from(dangers), max_size=2),
        st.sampled_from(TAILS),
    )
    def attempt(head: str, fillers: list[str], danger: list[str], tail: str) -> None:
        sql = head + "".join(fillers) + "".join(" " + d for d in danger) + tail
        status, body = _query(endpoint, sql)
        answered[status] = answered.get(status, 0) + 1
        assert not any(tmp_path.iterdir()), sql
        assert listener.poll() == 0, sql

    attempt()
    assert _state(chdb_dsn) == before
    assert answered.get(200), answered  # the fuzz reached the engine, not only the parser
