"""Connections to ClickHouse: the embedded engine (`chdb:///path`) or a server (`http(s)://`).

One code path for both: clickhouse-connect's client API. The embedded engine
allows one open path per process, so clients are cached per DSN and shared.
Driver errors become `SinkUnavailable` with what to do next
(`sinks.clickhouse.errors`).
"""

from __future__ import annotations

import threading
from typing import Any

import clickhouse_connect
from clickhouse_connect.driver.client import Client

from journeys.schemas.errors import SinkUnavailable
from journeys.sinks.clickhouse.errors import clickhouse_errors, embedded_path, held_elsewhere

__all__ = ["connect", "dsn_of", "held_elsewhere", "is_open", "run", "select"]

_clients: dict[str, Client] = {}
_dsns: dict[int, str] = {}
_lock = threading.Lock()


def connect(dsn: str) -> Client:
    """A client for the DSN, shared within this process."""
    with _lock:
        client = _clients.get(dsn)
        if client is not None:
            return client
        if dsn.startswith("chdb://"):
            _one_embedded_path(dsn)
        with clickhouse_errors(dsn, "open"):
            client = clickhouse_connect.get_client(dsn=dsn)
            client.command("SELECT 1")
        _clients[dsn] = client
        _dsns[id(client)] = dsn
        return client


def is_open(dsn: str) -> bool:
    """Whether this process has a client for the DSN open already (`connect` returns it)."""
    with _lock:
        return dsn in _clients


def _one_embedded_path(dsn: str) -> None:
    """Refuse a second embedded path: the engine opens one per process."""
    for other in _clients:
        if other.startswith("chdb://") and embedded_path(other) != embedded_path(dsn):
            raise SinkUnavailable(
                f"this process already has the embedded database at {embedded_path(other)} open "
                f"and cannot open {embedded_path(dsn)} too (one path per process): use one "
                "JOURNEYS_CLICKHOUSE_URL per process"
            )


def dsn_of(client: Client) -> str | None:
    """The DSN a client from `connect` was opened with (for messages)."""
    return _dsns.get(id(client))


def run(client: Client, sql: str, parameters: dict[str, Any] | None = None) -> Any:
    """Run a command, translating driver errors."""
    with clickhouse_errors(dsn_of(client), "run a command"):
        return client.command(sql, parameters=parameters)


def select(client: Client, sql: str, parameters: dict[str, Any] | None = None) -> list[Any]:
    """The rows of a query, translating driver errors."""
    with clickhouse_errors(dsn_of(client), "answer a query"):
        return list(client.query(sql, parameters=parameters).result_rows)
