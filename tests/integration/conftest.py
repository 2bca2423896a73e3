"""ClickHouse fixtures: the session's one embedded engine, and a migrated database per test.

chdb opens one path per process and keeps its state per process, so every
test shares the session's path (`chdb_dsn` in tests/conftest.py) and works
in a database of its own.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest
from clickhouse_connect.driver.client import Client

from journeys.sinks.clickhouse.client import connect
from journeys.sinks.clickhouse.migrate import migrate
from journeys.sinks.clickhouse.writer import ClickHouseSink


@pytest.fixture(scope="session")
def ch_client(chdb_dsn: str) -> Client:
    """The session's client on the embedded engine."""
    return connect(chdb_dsn)


@pytest.fixture()
def ch_database(ch_client: Client) -> str:
    """A fresh database with every migration applied."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    migrate(ch_client, name)
    return name


@pytest.fixture()
def ch_sink(chdb_dsn: str) -> Callable[[str], ClickHouseSink]:
    """A factory of set-up sinks writing to a given database of the session's engine."""

    def make(database: str, batch_rows: int = 200_000) -> ClickHouseSink:
        writer = ClickHouseSink(chdb_dsn, database, batch_rows=batch_rows)
        writer.setup()
        return writer

    return make
