"""A read-only ClickHouse HTTP endpoint served by the process that holds the embedded engine.

The embedded engine (chdb) lets one process open a data directory. While the
sink writes it, nobody else can read it, so the sink process serves reads
itself: `serve_readonly(dsn, host, port)` answers ClickHouse's HTTP interface
(the subset clickhouse-connect, SQLAlchemy's `clickhousedb` dialect,
Grafana's ClickHouse data source over HTTP and `curl` use) from its own
engine handles, in a background thread.

Read-only twice over: only one SELECT/SHOW/DESCRIBE/EXISTS statement per
request passes `sql_guard.refusal`, and each request runs on a fresh engine
handle with `readonly=1` set after the client's own settings. Query
parameters (`param_x`), `database`, `default_format` and a trailing `FORMAT`
pass through; answers carry the `X-ClickHouse-*` headers clients read, and
errors the `Code: N. DB::Exception: ...` body and exception-code header.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
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
from journeys.sinks.clickhouse.sql_guard import output_format, refusal, without_format

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
HTTP_STATUS = {62: 400, 164: 403, 497: 403, 60: 404, 81: 404, 47: 400, 46: 400, 115: 400}
READONLY = 164


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


class ReadOnlyEngine:
    """Runs read-only queries on fresh handles of the process's embedded engine."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.timezone = self._scalar("SELECT timezone()") or "UTC"
        self.version = self._scalar("SELECT version()") or ""

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
    ) -> Answer:
        """Run one read-only statement; `QueryError` with ClickHouse's code when it fails."""
        reason = refusal(sql)
        if reason:
            raise QueryError(READONLY, f"DB::Exception: {reason}. (READONLY)")
        fmt = output_format(sql) or fmt
        try:
            handle = chdb.connect(self.path)
        except Exception as exc:
            raise QueryError(1000, f"DB::Exception: the engine is not available: {exc}") from exc
        try:
            if database:
                _query(handle, f"USE {_identifier(database)}", "TabSeparated")
            for name, value in settings.items():
                _query(handle, f"SET {_identifier(name)} = {_literal(value)}", "TabSeparated")
            _query(handle, "SET readonly = 1", "TabSeparated")
            result = _query(handle, sql, fmt, params)
            body = bytes(result.bytes() or b"")
            if not body and fmt == "Native":
                body = _empty_native(handle, sql, params)
            return Answer(body, fmt, _summary(result, len(body)))
        finally:
            handle.close()


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
    """ClickHouse's HTTP interface, reads only."""

    protocol_version = "HTTP/1.1"
    server_version = "journeys-read"
    timeout = 120
    engine: ReadOnlyEngine  # set on the subclass made per server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base's name)
        log.debug("read endpoint: " + format, *args)

    def do_GET(self) -> None:  # noqa: N802 (the base class's name)
        """`/ping`, `/` (health) or `/?query=...`."""
        self._handle(b"")

    def do_HEAD(self) -> None:  # noqa: N802
        """Health checks that only look at the status."""
        self._send(200, b"", {"Content-Type": "text/plain; charset=UTF-8"})

    def do_POST(self) -> None:  # noqa: N802
        """The query (or its rest) in the body."""
        try:
            body = self._body()
        except QueryError as exc:
            self._error(exc)
            return
        self._handle(body)

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            raw = self._chunked()
        else:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_QUERY_BYTES:
                raise QueryError(1001, "DB::Exception: query too large for the read endpoint")
            raw = self.rfile.read(length) if length else b""
        encoding = self.headers.get("Content-Encoding", "").lower()
        if encoding in ("", "identity"):
            return raw
        if encoding == "gzip":
            return gzip.decompress(raw)
        if encoding == "deflate":
            return zlib.decompress(raw)
        raise QueryError(1001, f"DB::Exception: unsupported Content-Encoding {encoding!r}")

    def _chunked(self) -> bytes:
        parts: list[bytes] = []
        total = 0
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                self.rfile.readline()
                return b"".join(parts)
            total += size
            if total > MAX_QUERY_BYTES:
                raise QueryError(1001, "DB::Exception: query too large for the read endpoint")
            parts.append(self.rfile.read(size))
            self.rfile.readline()

    def _handle(self, body: bytes) -> None:
        url = urlsplit(self.path)
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
        query_id = params.get("query_id") or str(uuid.uuid4())
        settings = {
            k: v
            for k, v in params.items()
            if k not in TRANSPORT_PARAMS and not k.startswith("param_")
        }
        binds = {k[6:]: v for k, v in params.items() if k.startswith("param_")}
        started = time.monotonic()
        try:
            answer = self.engine.run(
                text,
                params.get("database") or self.headers.get("X-ClickHouse-Database"),
                params.get("default_format")
                or self.headers.get("X-ClickHouse-Format")
                or "TabSeparated",
                settings,
                binds,
            )
        except QueryError as exc:
            self._error(exc, query_id=query_id)
            return
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

    def _error(self, exc: QueryError, status: int | None = None, query_id: str = "") -> None:
        body = f"Code: {exc.code}. {exc}\n".encode()
        headers = {
            "Content-Type": "text/plain; charset=UTF-8",
            "X-ClickHouse-Exception-Code": str(exc.code),
        }
        if query_id:
            headers["X-ClickHouse-Query-Id"] = query_id
        self._send(status or HTTP_STATUS.get(exc.code, 500), body, headers)

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


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


def serve_readonly(dsn: str, host: str = "127.0.0.1", port: int = 8124) -> ReadServer:
    """Serve read-only ClickHouse HTTP for the embedded engine at `dsn`, in a thread.

    Call it in the process that holds the engine (the sink), after the
    engine is open. Port 0 lets the OS choose (see `ReadServer.port`).
    `SinkUnavailable` if the port is taken."""
    engine = ReadOnlyEngine(engine_path(dsn))
    handler = type("ReadHandler", (_Handler,), {"engine": engine})
    try:
        server = ThreadingHTTPServer((host, port), handler)
    except OSError as exc:
        raise SinkUnavailable(
            f"cannot serve reads on {host}:{port}: {exc.strerror}; set JOURNEYS_READ_PORT to a "
            "free port (0: off)"
        ) from exc
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="read-endpoint", daemon=True)
    thread.start()
    log.info("read-only ClickHouse HTTP on http://%s:%d", host, server.server_address[1])
    return ReadServer(server, thread)
