"""Connections to ClickHouse: the embedded engine (`chdb:///path`) or a server (`http(s)://`).

One code path for both: clickhouse-connect's client API. The embedded engine
allows one open path per process, so clients are cached per DSN and shared.
Driver errors become `SinkUnavailable` with what to do next.
"""

from __future__ import annotations

import fcntl
import re
import threading
from pathlib import Path
from typing import Any

import clickhouse_connect
from clickhouse_connect.driver.client import Client

from journeys.schemas.errors import SinkUnavailable

_clients: dict[str, Client] = {}
_lock = threading.Lock()


def connect(dsn: str) -> Client:
    """A client for the DSN, shared within this process."""
    with _lock:
        client = _clients.get(dsn)
        if client is not None:
            return client
        try:
            client = clickhouse_connect.get_client(dsn=dsn)
            client.command("SELECT 1")
        except Exception as exc:
            raise SinkUnavailable(explain(dsn, exc)) from exc
        _clients[dsn] = client
        return client


def explain(dsn: str, exc: BaseException) -> str:
    """A message for a failed connection or write that says what to do next."""
    text = str(exc)
    if dsn.startswith("chdb://"):
        path = dsn.removeprefix("chdb://")
        other = _OTHER_PATH.search(text)
        if other:
            return (
                f"this process already has the embedded database at {other.group(1)} open and "
                f"cannot open {path} too (one path per process): use one JOURNEYS_CLICKHOUSE_URL "
                "per process"
            )
        if "lock" in text.lower() or held_elsewhere(path):
            return (
                f"another process holds the embedded database at {path} (only one process may "
                "open it): stop that process, or point JOURNEYS_CLICKHOUSE_URL at a ClickHouse "
                "server"
            )
        return f"the embedded ClickHouse at {path} failed: {text}"
    safe = dsn.split("@")[-1]
    return (
        f"ClickHouse at {safe} is unavailable: {text}; check JOURNEYS_CLICKHOUSE_URL, "
        "the credentials and that the server is up"
    )


_OTHER_PATH = re.compile(r"already initialized with path '([^']*)'")


def held_elsewhere(path: str) -> bool:
    """Whether a running ClickHouse holds the lock on the data directory at `path`.

    ClickHouse keeps an exclusive `flock` on `<path>/status` while it runs; the
    embedded engine reports a held path only as a failed start.
    """
    status = Path(path) / "status"
    try:
        with status.open("rb") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(handle, fcntl.LOCK_UN)
    except OSError:
        return False
    return False


def run(client: Client, sql: str, parameters: dict[str, Any] | None = None) -> Any:
    """Run a command, translating driver errors."""
    try:
        return client.command(sql, parameters=parameters)
    except Exception as exc:
        raise SinkUnavailable(f"ClickHouse refused a command: {exc}") from exc


def select(client: Client, sql: str, parameters: dict[str, Any] | None = None) -> list[Any]:
    """The rows of a query, translating driver errors."""
    try:
        return list(client.query(sql, parameters=parameters).result_rows)
    except Exception as exc:
        raise SinkUnavailable(f"ClickHouse refused a query: {exc}") from exc
