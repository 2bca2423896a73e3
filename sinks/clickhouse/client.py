"""Connections to ClickHouse: the embedded engine (`chdb:///path`) or a server (`http(s)://`).

One code path for both: clickhouse-connect's client API. The embedded engine
allows one open path per process, so clients are cached per DSN and shared.
Driver errors become `SinkUnavailable` with what to do next.
"""

from __future__ import annotations

import threading
from typing import Any

import clickhouse_connect
from clickhouse_connect.driver.client import Client

from schemas.errors import SinkUnavailable

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
        if "lock" in text.lower():
            return (
                f"another process holds the embedded database at {path} (only one process may "
                "open it): stop that process, or point JOURNEYS_CLICKHOUSE_URL at a ClickHouse server"
            )
        return f"the embedded ClickHouse at {path} failed: {text}"
    safe = dsn.split("@")[-1]
    return (
        f"ClickHouse at {safe} is unavailable: {text}; check JOURNEYS_CLICKHOUSE_URL, "
        "the credentials and that the server is up"
    )


def run(client: Client, sql: str, parameters: dict[str, Any] | None = None) -> Any:
    """Run a command, translating driver errors."""
    try:
        return client.command(sql, parameters=parameters)
    except Exception as exc:
        raise SinkUnavailable(f"ClickHouse refused a command: {exc}") from exc
