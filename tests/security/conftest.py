"""Fixtures of the read endpoint's security tests: a small database of its own per test
(made with the engine, so the tests do not depend on the migrations), and endpoints on
127.0.0.1 that are closed after the test."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import chdb
import pytest

from journeys.sinks.clickhouse.http_reader import ReadServer, serve_readonly
from journeys.sinks.clickhouse.read_access import ReadLimits
from tests.security.reading import ACCESS


@pytest.fixture()
def database(chdb_dsn: str) -> str:
    """A database with one table of 10 rows and a view, as the pipeline's would have."""
    name = f"sec_{uuid.uuid4().hex[:10]}"
    handle = chdb.connect(chdb_dsn.removeprefix("chdb://"))
    try:
        handle.query(f"CREATE DATABASE {name}")
        handle.query(
            f"CREATE TABLE {name}.events (event_id String, account_id String, n UInt32) "
            "ENGINE = MergeTree ORDER BY event_id"
        )
        handle.query(
            f"INSERT INTO {name}.events SELECT toString(number), concat('acct-', "
            "toString(number % 3)), number FROM system.numbers LIMIT 10"
        )
        handle.query(f"CREATE VIEW {name}.events_current AS SELECT * FROM {name}.events")
    finally:
        handle.close()
    return name


@pytest.fixture()
def serve(chdb_dsn: str, database: str) -> Iterator[Callable[..., ReadServer]]:
    """Start endpoints on the test's database (with given limits); all closed afterwards."""
    servers: list[ReadServer] = []

    def start(limits: ReadLimits | None = None) -> ReadServer:
        server = serve_readonly(
            chdb_dsn, "127.0.0.1", 0, access=ACCESS, database=database, limits=limits
        )
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


@pytest.fixture()
def endpoint(serve: Callable[..., ReadServer]) -> ReadServer:
    """One endpoint with the default limits."""
    return serve()
