"""The suppression list on the real broker: `journeys forget` publishes hashes on the
compacted topic, and a collector and a worker's ingest started afterwards drop the
person's events (they read the whole list before taking any)."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner
from kafka.admin import ConfigResource, ConfigResourceType

from journeys.cli import main
from journeys.producers.collect.app import create_app
from journeys.producers.collect.publisher import MemoryPublisher
from journeys.producers.kafka import new_admin
from journeys.producers.suppressions import TOPIC, followed_gate, publish_suppressions
from journeys.schemas.errors import BrokerError
from journeys.schemas.settings import Settings
from journeys.sinks.clickhouse.client import connect, select
from journeys.streams.ingest import split
from tests.integration.kafka.conftest import kafka_bootstrap, topic_prefix  # noqa: F401
from tests.security.test_privacy_collector import KEY, _basic, call, track
from tests.security.test_privacy_forget import BAD, BOB, EVENTS, _replayed, _write
from tests.unit.collect.server import serving
from tests.unit.engine.journey import ev

pytestmark = [pytest.mark.integration, pytest.mark.kafka]


def test_a_forget_reaches_collectors_and_workers_through_kafka(
    tmp_path: Path,
    chdb_dsn: str,
    database_name: Callable[[str], str],
    kafka_bootstrap: str,  # noqa: F811
    topic_prefix: Callable[[], str],  # noqa: F811
) -> None:
    db, prefix = database_name("kafka"), topic_prefix()
    _replayed(_write(tmp_path / "all.jsonl", EVENTS, BAD), chdb_dsn, db, tmp_path)
    result = CliRunner().invoke(
        main,
        ["forget", "--email", BOB["email"], "--clickhouse-url", chdb_dsn,
         "--clickhouse-database", db, "--data-dir", str(tmp_path),
         "--kafka-bootstrap", kafka_bootstrap, "--topic-prefix", prefix],
        catch_exceptions=False,
    )  # fmt: skip
    assert result.exit_code == 0 and "warning" not in result.output, result.output
    settings = Settings(
        write_keys=KEY, data_dir=tmp_path, kafka_bootstrap=kafka_bootstrap, topic_prefix=prefix
    )

    admin = new_admin(settings)
    try:
        configs = admin.describe_configs(  # the list is kept forever: compacted, not expired
            [ConfigResource(ConfigResourceType.TOPIC, settings.topic(TOPIC), ["cleanup.policy"])]
        )
    finally:
        admin.close()
    assert "compact" in str(configs)

    # a worker's ingest, started after the request
    gate, follower = followed_gate(settings)
    try:
        bob = ev("page_view", 200, event_id="late-b", contact_id=BOB["contact_id"])
        anna = ev("page_view", 200, event_id="late-a", email="anna@acme.nl")
        out = split([("t", 0, 0, bob.to_json()), ("t", 0, 1, anna.to_json())], 1, 0, gate)
        assert len(out.forward) == 1 and out.withheld == {"suppressed": 1}
        # a request published while it runs is followed within a poll
        publish_suppressions(settings, gate_hashes(settings, "anna@acme.nl"), "r2")
        deadline = time.monotonic() + 20
        while split([("t", 0, 2, anna.to_json())], 1, 0, gate).forward:
            assert time.monotonic() < deadline, "the worker did not follow the list"
            time.sleep(0.2)
    finally:
        follower.close()

    # a collector, started after the request
    publisher = MemoryPublisher()
    with serving(create_app(settings, publisher, follow_suppressions=True), "collector") as url:
        deadline = time.monotonic() + 30
        while call(url, "/v1/track", track(email="kees@other.de"), _basic(KEY))[0] == 503:
            assert time.monotonic() < deadline, "the collector never read the list"
            time.sleep(0.2)
        assert call(url, "/v1/track", track(email=BOB["email"]), _basic(KEY))[0] == 200
        assert call(url, "/v1/track", track(user=BOB["contact_id"]), _basic(KEY))[0] == 200
    assert [r.email for r in publisher.records] == ["kees@other.de"]


def gate_hashes(settings: Settings, email: str) -> set[str]:
    from journeys.schemas.privacy import identifier_hash
    from journeys.sinks.privacy_salt import privacy_salt

    return {identifier_hash(privacy_salt(settings), "email", email)}


def test_a_forget_that_cannot_reach_kafka_erases_nothing_and_says_so(
    tmp_path: Path, chdb_dsn: str, database_name: Callable[[str], str]
) -> None:
    """Erasing ClickHouse rows without telling the workers would leave the person in their
    engine state for good (a second run finds no events to name): Kafka is reached first."""
    db = database_name("nokafka")
    _replayed(_write(tmp_path / "all.jsonl", EVENTS, BAD), chdb_dsn, db, tmp_path)
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # a port nothing listens on
    port = closed.getsockname()[1]
    closed.close()
    result = CliRunner().invoke(
        main,
        ["forget", "--email", BOB["email"], "--clickhouse-url", chdb_dsn,
         "--clickhouse-database", db, "--data-dir", str(tmp_path),
         "--kafka-bootstrap", f"127.0.0.1:{port}"],
    )  # fmt: skip
    assert isinstance(result.exception, BrokerError), result.output  # `run` prints it
    assert "cannot reach Kafka" in str(result.exception)
    client = connect(chdb_dsn)
    try:
        [(left,)] = select(
            client, f"SELECT count() FROM {db}.events FINAL WHERE email = {{e:String}}",
            {"e": BOB["email"]},
        )  # fmt: skip
    finally:
        client.close()
    assert left > 0  # nothing erased: the request can simply be run again
