"""A read-only ClickHouse HTTP endpoint served by the process that holds the embedded engine.

The embedded engine (chdb) lets one process open a data directory. While the
sink writes it, nobody else can read it, so the sink process serves reads
itself: `serve_readonly(dsn, host, port, access=..., database=...)` answers
ClickHouse's HTTP interface (the subset clickhouse-connect, SQLAlchemy's
`clickhousedb` dialect, Grafana's, Metabase's and Superset's ClickHouse
drivers over HTTP and `curl` use) from its own engine handles, in a
background thread.

It refuses, in this order:
- requests from web pages (`Origin`, `Sec-Fetch-Site`) and `Host` names that
  are not this machine (DNS rebinding): 403 (`read_access.browser_refusal`);
- requests without the endpoint's user and password: 401 (`/ping` and an
  empty `/` stay open for health checks);
- settings outside `ALLOWED_SETTINGS` (`readonly=1` is set after the allowed
  ones, so the query itself can change none), databases other than the
  project's, formats that read schema files;
- anything the engine's own parser does not see as one read of the project's
  tables (`sql_guard.ast_refusal`); the canonical statement the parser gave
  back is what runs.
Each query runs on a fresh handle with memory, time and result-size caps
(`ReadLimits`); at most `max_queries` run at once (then 503, as a
ClickHouse server answers TOO_MANY_SIMULTANEOUS_QUERIES) and at most
`max_connections` connections are open (then 503 and close), each given
`idle_timeout` seconds in all to send a request (a client trickling bytes
is closed then). A query whose client left while it waited for its turn is
not started; one whose client leaves while it runs is cancelled (a watcher
thread sees the connection close and sends `KILL QUERY` for the query's
marker comment from another handle of the engine; chdb 4.4's
`StreamingResult.cancel()` does not stop a running aggregation). The engine
checks time and cancellation between blocks only, so one call that is slow
within a block is not stopped: `sql_guard.DENIED_FUNCTIONS` refuses the
known quadratic ones, and `max_block_size` is capped. `/ping` never runs a
query.
Answers carry the `X-ClickHouse-*` headers clients read, and errors the
`Code: N. DB::Exception: ...` body and exception-code header; never CORS
headers.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import re
import select
import socket
import threading
import time
import uuid
import zlib
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import chdb

from journeys.schemas.errors import ConfigError, SinkUnavailable
from journeys.sinks.clickhouse.read_access import (
    ReadAccess,
    ReadLimits,
    browser_refusal,
    given_credentials,
)
from journeys.sinks.clickhouse.sql_guard import (
    Node,
    Policy,
    ast_refusal,
    format_refusal,
    output_format,
    parse_ast,
    refusal,
    without_format,
)

log = logging.getLogger(__name__)

#: URL parameters that are not settings (ClickHouse's HTTP handler consumes them itself).
TRANSPORT_PARAMS = frozenset(
    {
        "query",
        "database",
        "default_format",
        "user",
        "password",
        "quota_key",
        "query_id",
        "session_id",
        "session_timeout",
        "session_check",
        "compress",
        "decompress",
        "buffer_size",
        "wait_end_of_query",
        "client_protocol_version",
        "role",
        "stacktrace",
        "readonly",
        "enable_http_compression",
        "send_progress_in_http_headers",
        "http_headers_progress_interval_ms",
        "http_response_buffer_size",
        "add_http_cors_header",
    }
)
MAX_QUERY_BYTES = 1024 * 1024
#: The longest line of a chunked body (a size and its extensions) read, and the read buffer.
CHUNK_LINE_BYTES = 8192
#: How often (seconds) a running query checks that its client is still connected.
WATCH_INTERVAL = 0.2
CONTENT_TYPES = {
    "JSON": "application/json; charset=UTF-8",
    "JSONCompact": "application/json; charset=UTF-8",
    "JSONEachRow": "application/x-ndjson; charset=UTF-8",
    "CSV": "text/csv; charset=UTF-8; header=absent",
    "CSVWithNames": "text/csv; charset=UTF-8; header=present",
    "TabSeparated": "text/tab-separated-values; charset=UTF-8",
    "TSV": "text/tab-separated-values; charset=UTF-8",
}
#: ClickHouse error codes and the HTTP status its server answers them with.
HTTP_STATUS = {
    62: 400,
    164: 403,
    497: 403,
    60: 404,
    81: 404,
    47: 400,
    46: 400,
    115: 400,
    159: 504,
    241: 500,
    396: 500,
    516: 401,
    202: 503,
}
READONLY = 164
UNKNOWN_DATABASE = 81
AUTHENTICATION_FAILED = 516
TOO_MANY_SIMULTANEOUS_QUERIES = 202
#: Settings a request may set (URL parameters), and the most each numeric one may be.
#: Any other setting is refused: many read or write files (format_schema,
#: format_template_*, output_format_schema) or flood the log (send_logs_level).
ALLOWED_SETTINGS = frozenset(
    {
        "max_result_rows",
        "max_result_bytes",
        "result_overflow_mode",
        "max_execution_time",
        "timeout_overflow_mode",
        "max_memory_usage",
        "max_rows_to_read",
        "max_bytes_to_read",
        "read_overflow_mode",
        "max_threads",
        "max_block_size",
        "extremes",
        "join_use_nulls",
        "session_timezone",
        "date_time_output_format",
        "date_time_input_format",
        "output_format_json_quote_64bit_integers",
        "output_format_json_quote_64bit_floats",
        "output_format_json_quote_denormals",
        "output_format_json_quote_decimals",
        "output_format_json_named_tuples_as_objects",
        "output_format_json_array_of_rows",
        "output_format_json_validate_utf8",
        "output_format_json_escape_forward_slashes",
        "output_format_write_statistics",
        "output_format_decimal_trailing_zeros",
        "output_format_csv_crlf_end_of_line",
        "output_format_tsv_crlf_end_of_line",
        "output_format_native_encode_types_in_binary_format",
        "output_format_native_write_json_as_string",
        "output_format_arrow_string_as_string",
        "output_format_parquet_string_as_string",
        "http_write_exception_in_output_format",
        "cast_keep_nullable",
        "transform_null_in",
        "prefer_column_name_to_alias",
        "union_default_mode",
        "aggregate_functions_null_for_empty",
        "count_distinct_implementation",
        "any_join_distinct_right_table_keys",
        "joined_subquery_requires_alias",
        "log_comment",
    }
)


class QueryError(Exception):
    """A request that fails with a ClickHouse error code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Answer:
    """A successful query's body and what the headers say about it."""

    body: bytes
    fmt: str
    summary: dict[str, str]


def engine_path(dsn: str) -> str:
    """The data directory of an embedded-engine DSN (`chdb:///path`)."""
    if not dsn.startswith("chdb://"):
        raise ConfigError(
            f"the read endpoint serves the embedded engine only, not {dsn.split('@')[-1]}"
        )
    path = dsn.removeprefix("chdb://").split("?", 1)[0]
    if not path or path == ":memory:":
        raise ConfigError("the read endpoint needs an embedded engine on disk (chdb:///path)")
    return os.path.realpath(path)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def allowed_settings(requested: dict[str, str], limits: ReadLimits) -> dict[str, str]:
    """The request's settings, capped; `QueryError` (READONLY) for one outside the allow-list."""
    caps = limits.caps()
    out: dict[str, str] = {}
    for name, value in requested.items():
        if name not in ALLOWED_SETTINGS:
            raise QueryError(
                READONLY,
                f"DB::Exception: Cannot modify '{name}' setting on this read endpoint "
                "(allowed: see docs/bi.md). (READONLY)",
            )
        out[name] = _capped(value, caps[name], name in SECONDS) if name in caps else value
    return out


#: Capped settings counted in seconds (with milliseconds); the others are whole numbers.
SECONDS = frozenset({"max_execution_time"})


def _capped(value: str, cap: float, seconds: bool = False) -> str:
    """The value as the engine will read it, or the cap when that would be above it or unlimited.

    The engine reads a whole-number setting's `0.5`, or a time's `1e-9`, as 0, which
    means unlimited: such a value is rounded first (whole numbers, milliseconds)."""
    try:
        number = float(value)
    except ValueError as exc:
        raise QueryError(27, f"DB::Exception: cannot parse {value!r} as a number") from exc
    if not math.isfinite(number):
        return _number(cap)
    number = round(number, 3) if seconds else math.floor(number)
    return _number(cap if number <= 0 or number > cap else number)


class ReadOnlyEngine:
    """Runs read-only queries of one database on fresh handles of the process's embedded engine."""

    def __init__(self, path: str, database: str, limits: ReadLimits | None = None) -> None:
        self.path = path
        self.database = database
        self.limits = limits or ReadLimits()
        self.timezone = self._scalar("SELECT timezone()") or "UTC"
        self.version = self._scalar("SELECT version()") or ""
        table_functions = set(
            self._scalar("SELECT lower(name) FROM system.table_functions").split()
        )
        functions = set(self._scalar("SELECT lower(name) FROM system.functions").split())
        self.policy = Policy(database, frozenset(table_functions - functions))

    def _scalar(self, sql: str) -> str:
        handle = chdb.connect(self.path)
        try:
            return bytes(handle.query(sql, "TabSeparated").bytes()).decode().strip()
        finally:
            handle.close()

    def run(
        self,
        sql: str,
        database: str | None,
        fmt: str,
        settings: dict[str, str],
        params: dict[str, str],
        tag: str = "",
    ) -> Answer:
        """Run one read-only statement; `QueryError` with ClickHouse's code when it fails.

        `tag` (hex) marks the running query so that `cancel(tag)` can stop it."""
        reason = refusal(sql)
        if reason:
            raise QueryError(READONLY, f"DB::Exception: {reason}. (READONLY)")
        if database not in (None, "", "default", self.database):
            raise QueryError(
                UNKNOWN_DATABASE,
                f"DB::Exception: Database {database} is not served here, only {self.database}. "
                "(UNKNOWN_DATABASE)",
            )
        chosen = allowed_settings(settings, self.limits)
        try:
            handle = chdb.connect(self.path)
        except Exception as exc:
            raise QueryError(1000, f"DB::Exception: the engine is not available: {exc}") from exc
        try:
            _query(handle, f"USE {_identifier(self.database)}", "TabSeparated")
            for name, value in self.limits.session().items():
                _query(handle, f"SET {_identifier(name)} = {_literal(value)}", "TabSeparated")
            # Parsing only (the query's own SETTINGS would apply to that EXPLAIN alone, and
            # refuse it), before the request's settings can change what the parser sees.
            canonical = self._checked(handle, sql, params)
            for name, value in chosen.items():
                _query(handle, f"SET {_identifier(name)} = {_literal(value)}", "TabSeparated")
            _query(handle, "SET readonly = 1", "TabSeparated")
            fmt = output_format(canonical) or fmt
            reason = format_refusal(fmt)
            if reason:
                raise QueryError(READONLY, f"DB::Exception: {reason}. (READONLY)")
            running = f"{_marker(tag)} {canonical}" if tag else canonical
            result = _query(handle, running, fmt, params)
            body = bytes(result.bytes() or b"")
            if not body and fmt == "Native":
                body = _empty_native(handle, canonical, params)
            return Answer(body, fmt, _summary(result, len(body)))
        finally:
            handle.close()

    def cancel(self, tag: str) -> None:
        """Stop the query `run` with `tag`, if it still runs (its client has left).

        `KILL QUERY` from another handle of the same engine: the query ends at its
        next block, with QUERY_WAS_CANCELLED."""
        try:
            handle = chdb.connect(self.path)
        except Exception as exc:
            log.warning("read endpoint: cannot cancel a query whose client left: %s", exc)
            return
        try:
            _query(
                handle,
                "KILL QUERY WHERE startsWith(query, {marker:String}) ASYNC",
                "TabSeparated",
                {"marker": _marker(tag)},
            )
        except QueryError as exc:
            log.warning("read endpoint: cannot cancel a query whose client left: %s", exc)
        finally:
            handle.close()

    def _checked(self, handle: Any, sql: str, params: dict[str, str]) -> str:
        """The statement as the engine's parser spells it, once its AST shows only reads."""
        canonical = _text(
            _query(
                handle,
                "SELECT formatQuerySingleLine({q:String})",
                "TSVRaw",
                {"q": _escaped(sql)},
            )
        ).rstrip("\n")
        dump = _text(_query(handle, f"EXPLAIN AST {canonical}", "TabSeparated", params))
        try:
            root: Node = parse_ast(dump)
        except ValueError as exc:
            raise QueryError(READONLY, f"DB::Exception: {exc}. (READONLY)") from exc
        reason = ast_refusal(canonical, root, self.policy)
        if reason:
            raise QueryError(READONLY, f"DB::Exception: {reason}. (READONLY)")
        return canonical


def _marker(tag: str) -> str:
    """The comment that starts a query run for a request, so that it can be found to cancel it."""
    return f"/* journeys-read {tag} */"


def _escaped(value: str) -> str:
    """A query parameter's value as the engine reads it (escaped like TabSeparated)."""
    return value.translate(_PARAM_ESCAPES)


_PARAM_ESCAPES = str.maketrans({"\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r", "\0": "\\0"})


def _text(result: Any) -> str:
    return bytes(result.bytes() or b"").decode("utf-8", "replace")


def _query(handle: Any, sql: str, fmt: str, params: dict[str, str] | None = None) -> Any:
    try:
        return handle.query(sql, fmt, params=params or {})
    except Exception as exc:
        message = str(exc)
        start = message.find("Code: ")
        message = message[start:] if start >= 0 else message
        code = _code(message)
        raise QueryError(code, message.removeprefix(f"Code: {code}. ").strip()) from exc


def _code(message: str) -> int:
    if message.startswith("Code: "):
        digits = message[6:].split(".", 1)[0]
        if digits.isdigit():
            return int(digits)
    return 1000


def _identifier(name: str) -> str:
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def _literal(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _string(text: str) -> bytes:
    raw = text.encode()
    return _varint(len(raw)) + raw


def _empty_native(handle: Any, sql: str, params: dict[str, str]) -> bytes:
    """The Native header block a ClickHouse server sends for a result with no rows.

    The embedded engine sends no bytes at all, which leaves clients without
    column names and types; `DESCRIBE (query)` has them. A query that cannot
    be described gets a block without columns, as the engine's own client does."""
    try:
        described = _query(handle, f"DESCRIBE ({without_format(sql)})", "TabSeparated", params)
    except QueryError:
        return _varint(0) + _varint(0)
    columns = [
        line.split("\t")[:2]
        for line in bytes(described.bytes() or b"").decode().splitlines()
        if line
    ]
    block = _varint(len(columns)) + _varint(0)
    for name, type_ in columns:
        block += _string(_unescape(name)) + _string(_unescape(type_))
    return block


_TSV_ESCAPES = {
    "t": "\t",
    "n": "\n",
    "r": "\r",
    "0": "\0",
    "\\": "\\",
    "'": "'",
    "b": "\b",
    "f": "\f",
}


def _unescape(text: str) -> str:
    """A TabSeparated field as text."""
    if "\\" not in text:
        return text
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text):
            out.append(_TSV_ESCAPES.get(text[i + 1], text[i + 1]))
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _inflate(raw: bytes, wbits: int) -> bytes:
    """A compressed body, refused when it inflates beyond the query size limit."""
    inflater = zlib.decompressobj(wbits)
    try:
        out = inflater.decompress(raw, MAX_QUERY_BYTES + 1)
    except zlib.error as exc:
        raise QueryError(1001, f"DB::Exception: cannot decompress the body: {exc}") from exc
    if len(out) > MAX_QUERY_BYTES or inflater.unconsumed_tail:
        raise QueryError(1001, "DB::Exception: query too large for the read endpoint")
    return out


def _summary(result: Any, size: int) -> dict[str, str]:
    try:
        return {
            "read_rows": str(result.rows_read()),
            "read_bytes": str(result.bytes_read()),
            "written_rows": "0",
            "written_bytes": "0",
            "total_rows_to_read": str(result.rows_read()),
            "result_rows": str(result.rows_read()),
            "result_bytes": str(size),
            "elapsed_ns": str(int(result.elapsed() * 1e9)),
        }
    except Exception:
        return {"written_rows": "0", "written_bytes": "0"}


class _Handler(BaseHTTPRequestHandler):
    """ClickHouse's HTTP interface, reads only, for the endpoint's user only."""

    protocol_version = "HTTP/1.1"
    server_version = "journeys-read"
    # set on the subclass made per server
    engine: ReadOnlyEngine
    access: ReadAccess
    read_host: str
    queries: threading.BoundedSemaphore
    deadline: float = 0.0  # when the request being read must have arrived (monotonic)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base's name)
        log.debug("read endpoint: " + format, *args)

    def setup(self) -> None:
        """Read the connection through a reader that gives each request `timeout` seconds in all.

        The socket's own timeout is per read: a client sending a byte now and then
        (slowloris) would keep its connection, and one of `max_connections`, forever."""
        super().setup()
        self.rfile.close()  # the socket's own reader; the socket stays open
        self.deadline = time.monotonic() + self.idle_timeout
        self.rfile = io.BufferedReader(_DeadlineReader(self), CHUNK_LINE_BYTES)

    @property
    def idle_timeout(self) -> float:
        """Seconds a connection may take to send a request (and stay idle before one)."""
        return float(self.timeout or 30.0)

    def handle_one_request(self) -> None:
        """Each request (its line, headers and body) must arrive within `timeout` seconds."""
        self.deadline = time.monotonic() + self.idle_timeout
        super().handle_one_request()

    def do_GET(self) -> None:  # noqa: N802 (the base class's name)
        """`/ping`, `/` (health) or `/?query=...`."""
        if self.headers.get("Content-Length") or self.headers.get("Transfer-Encoding"):
            self.close_connection = True  # a GET's body is not read: it must not pass for a request
        if self._admitted(open_for_health=True):
            self._handle(b"")

    def do_HEAD(self) -> None:  # noqa: N802
        """Health checks that only look at the status."""
        if self._admitted(open_for_health=True):
            self._send(200, b"", {"Content-Type": "text/plain; charset=UTF-8"})

    def do_POST(self) -> None:  # noqa: N802
        """The query (or its rest) in the body."""
        if not self._admitted(open_for_health=False):
            return
        try:
            body = self._body()
        except QueryError as exc:
            self.close_connection = True
            self._error(exc)
            return
        self._handle(body)

    def _admitted(self, open_for_health: bool) -> bool:
        """Whether the request may go on: not from a browser, to this host, with credentials."""
        reason = browser_refusal(self.headers, self.read_host)
        if reason:
            self.close_connection = True
            self._error(QueryError(497, f"DB::Exception: {reason}. (ACCESS_DENIED)"), 403)
            return False
        url = urlsplit(self.path)
        params = dict(parse_qsl(url.query, keep_blank_values=True))
        if open_for_health and (url.path == "/ping" or (url.path == "/" and "query" not in params)):
            return True
        user, password = given_credentials(self.headers, params)
        if self.access.allows(user, password):
            return True
        self.close_connection = True
        self._error(
            QueryError(
                AUTHENTICATION_FAILED,
                f"DB::Exception: {user or 'default'}: Authentication failed: password is "
                "incorrect, or there is no user with such name (`journeys read-credentials` "
                "prints them). (AUTHENTICATION_FAILED)",
            ),
            401,
            extra={"WWW-Authenticate": 'Basic realm="journeys read endpoint", charset="UTF-8"'},
        )
        return False

    def _body(self) -> bytes:
        encoding = self.headers.get("Transfer-Encoding")
        if encoding is not None and encoding.strip().lower() != "chunked":
            raise QueryError(1001, f"DB::Exception: unsupported Transfer-Encoding {encoding!r}")
        if encoding is not None:
            raw = self._chunked()
        else:
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError as exc:
                raise QueryError(1001, "DB::Exception: bad Content-Length") from exc
            if length < 0 or length > MAX_QUERY_BYTES:
                raise QueryError(1001, "DB::Exception: query too large for the read endpoint")
            raw = self.rfile.read(length) if length else b""
        encoding = self.headers.get("Content-Encoding", "").lower()
        if encoding in ("", "identity"):
            return raw
        if encoding == "gzip":
            return _inflate(raw, zlib.MAX_WBITS | 16)
        if encoding == "deflate":
            return _inflate(raw, zlib.MAX_WBITS)
        raise QueryError(1001, f"DB::Exception: unsupported Content-Encoding {encoding!r}")

    def _chunked(self) -> bytes:
        parts: list[bytes] = []
        total = 0
        while True:
            size = _chunk_size(self.rfile.readline(CHUNK_LINE_BYTES))
            if size == 0:
                self.rfile.readline(CHUNK_LINE_BYTES)
                return b"".join(parts)
            total += size
            if total > MAX_QUERY_BYTES:
                raise QueryError(1001, "DB::Exception: query too large for the read endpoint")
            parts.append(self.rfile.read(size))
            self.rfile.readline(CHUNK_LINE_BYTES)

    def _handle(self, body: bytes) -> None:
        url = urlsplit(self.path)
        if url.path == "/ping":  # a health check, whatever its parameters: never a query
            self._send(200, b"Ok.\n", {"Content-Type": "text/html; charset=UTF-8"})
            return
        params = dict(parse_qsl(url.query, keep_blank_values=True))
        text = params.get("query", "")
        if body:
            text = (
                f"{text}\n{body.decode('utf-8', 'replace')}"
                if text
                else body.decode("utf-8", "replace")
            )
        if not text.strip():
            if url.path in ("/", "/ping"):
                self._send(200, b"Ok.\n", {"Content-Type": "text/html; charset=UTF-8"})
            else:
                self._error(
                    QueryError(1002, f"DB::Exception: no query and no handler for {url.path}"), 404
                )
            return
        query_id = params.get("query_id") or ""
        if not _QUERY_ID.fullmatch(query_id):  # it is echoed in a header: no CR/LF there
            query_id = str(uuid.uuid4())
        settings = {
            k: v
            for k, v in params.items()
            if k not in TRANSPORT_PARAMS and not k.startswith("param_")
        }
        binds = {k[6:]: v for k, v in params.items() if k.startswith("param_")}
        started = time.monotonic()
        if not self.queries.acquire(timeout=self.engine.limits.queue_timeout):
            self._error(
                QueryError(
                    TOO_MANY_SIMULTANEOUS_QUERIES,
                    "DB::Exception: Too many simultaneous queries on the read endpoint, "
                    f"maximum: {self.engine.limits.max_queries}. (TOO_MANY_SIMULTANEOUS_QUERIES)",
                ),
                query_id=query_id,
            )
            return
        if self._client_gone():  # it left while queued: nobody would read the answer
            self.queries.release()
            self.close_connection = True
            return
        tag = uuid.uuid4().hex
        left = threading.Event()
        watcher = threading.Thread(
            target=self._watch, args=(tag, left), name="read-endpoint-watch", daemon=True
        )
        watcher.start()
        try:
            answer = self.engine.run(
                text,
                params.get("database") or self.headers.get("X-ClickHouse-Database"),
                params.get("default_format")
                or self.headers.get("X-ClickHouse-Format")
                or "TabSeparated",
                settings,
                binds,
                tag,
            )
        except QueryError as exc:
            self._error(exc, query_id=query_id)
            return
        finally:
            left.set()
            watcher.join()
            self.queries.release()
        log.debug("read endpoint answered in %.3fs: %s", time.monotonic() - started, text[:200])
        self._send(
            200,
            answer.body,
            {
                "Content-Type": CONTENT_TYPES.get(answer.fmt, "application/octet-stream"),
                "X-ClickHouse-Format": answer.fmt,
                "X-ClickHouse-Query-Id": query_id,
                "X-ClickHouse-Timezone": self.engine.timezone,
                "X-ClickHouse-Server-Display-Name": "journeys",
                "X-ClickHouse-Summary": json.dumps(answer.summary),
            },
        )

    def _watch(self, tag: str, done: threading.Event) -> None:
        """While the query runs, cancel it if its client closes the connection."""
        gone = False
        while not done.wait(WATCH_INTERVAL):
            if gone or self._client_gone():
                if not gone:
                    log.info("read endpoint: the client left, cancelling its query")
                gone = True  # again each time: the query may not have started the first time
                self.engine.cancel(tag)

    def _client_gone(self) -> bool:
        """Whether the client has closed its connection (a query is not started for it then)."""
        try:
            poller = select.poll()  # select() cannot watch descriptors above 1023
            poller.register(self.connection, select.POLLIN)
            return bool(poller.poll(0)) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def _error(
        self,
        exc: QueryError,
        status: int | None = None,
        query_id: str = "",
        extra: dict[str, str] | None = None,
    ) -> None:
        body = f"Code: {exc.code}. {exc}\n".encode()
        headers = {
            "Content-Type": "text/plain; charset=UTF-8",
            "X-ClickHouse-Exception-Code": str(exc.code),
            **(extra or {}),
        }
        if query_id:
            headers["X-ClickHouse-Query-Id"] = query_id
        self._send(status or HTTP_STATUS.get(exc.code, 500), body, headers)

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        try:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # the client left: nobody to tell
            self.close_connection = True


class _BoundedServer(ThreadingHTTPServer):
    """A thread per connection, but at most `max_connections` of them; beyond that, 503."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[_Handler], limit: int) -> None:
        super().__init__(address, handler)
        self._slots = threading.BoundedSemaphore(limit)

    def process_request(self, request: Any, client_address: Any) -> None:
        """Start a thread for the connection if a slot is free, else answer 503 and close."""
        if not self._slots.acquire(blocking=False):
            _refuse_busy(request)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """Serve the connection, then free its slot."""
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class _DeadlineReader(io.RawIOBase):
    """A connection's bytes, refused (`TimeoutError`) once its request's deadline has passed."""

    def __init__(self, handler: _Handler) -> None:
        super().__init__()
        self._handler = handler

    def readable(self) -> bool:
        """Always (it reads the socket)."""
        return True

    def readinto(self, buffer: Any) -> int:
        """Read what the socket has, waiting no later than the request's deadline."""
        sock = self._handler.connection
        remaining = self._handler.deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("the request took longer than the read endpoint's idle timeout")
        sock.settimeout(remaining)
        try:
            return int(sock.recv_into(buffer))
        except ConnectionResetError:
            return 0  # the client left: the end of its requests
        finally:
            sock.settimeout(self._handler.idle_timeout)


def _chunk_size(line: bytes) -> int:
    """The size on a chunked body's size line; `QueryError` when it is not a hex number."""
    digits = line.split(b";", 1)[0].strip()
    if not line.endswith(b"\n") or not _HEX.fullmatch(digits):
        raise QueryError(1001, "DB::Exception: bad chunked body")
    return int(digits, 16)


_HEX = re.compile(rb"[0-9A-Fa-f]{1,8}")
#: The query ids taken from a request (others are replaced by a fresh one).
_QUERY_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")


def _refuse_busy(request: Any) -> None:
    body = (
        b"Code: 202. DB::Exception: Too many connections to the read endpoint. "
        b"(TOO_MANY_SIMULTANEOUS_QUERIES)\n"
    )
    head = (
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=UTF-8\r\n"
        f"X-ClickHouse-Exception-Code: 202\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    try:
        request.settimeout(1.0)
        request.sendall(head.encode() + body)
    except OSError:
        pass


class ReadServer:
    """A running read endpoint; `close()` stops it."""

    def __init__(self, server: ThreadingHTTPServer, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread

    @property
    def host(self) -> str:
        """The address it listens on."""
        return str(self._server.server_address[0])

    @property
    def port(self) -> int:
        """The port it listens on (the one the OS chose, when asked for 0)."""
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """`http://host:port`, for clickhouse-connect, SQLAlchemy or Grafana."""
        return f"http://{self.host}:{self.port}"

    def close(self) -> None:
        """Stop answering and release the port."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


def serve_readonly(
    dsn: str,
    host: str = "127.0.0.1",
    port: int = 8124,
    *,
    access: ReadAccess,
    database: str,
    limits: ReadLimits | None = None,
) -> ReadServer:
    """Serve read-only ClickHouse HTTP of `database` in the embedded engine at `dsn`, in a thread.

    Call it in the process that holds the engine (the sink), after the
    engine is open. Requests must carry `access`'s user and password.
    Port 0 lets the OS choose (see `ReadServer.port`). `SinkUnavailable`
    if the port is taken."""
    limits = limits or ReadLimits()
    engine = ReadOnlyEngine(engine_path(dsn), database, limits)
    handler = type(
        "ReadHandler",
        (_Handler,),
        {
            "engine": engine,
            "access": access,
            "read_host": host,
            "queries": threading.BoundedSemaphore(limits.max_queries),
            "timeout": limits.idle_timeout,  # idle connections and slow headers end then
        },
    )
    try:
        server = _BoundedServer((host, port), handler, limits.max_connections)
    except OSError as exc:
        raise SinkUnavailable(
            f"cannot serve reads on {host}:{port}: {exc.strerror}; set JOURNEYS_READ_PORT to a "
            "free port (0: off)"
        ) from exc
    thread = threading.Thread(target=server.serve_forever, name="read-endpoint", daemon=True)
    thread.start()
    log.info("read-only ClickHouse HTTP on http://%s:%d", host, server.server_address[1])
    return ReadServer(server, thread)
