"""`journeys forget` against a running pipeline on the real broker: the person leaves the
workers' engine state and every changelog, their late events and those sent after the
request are dropped, and the account's journey is what a replay without them gives.

The changelogs are created with small compaction bounds (`JOURNEYS_ERASE_WITHIN` of a
few seconds), so the broker's log cleaner (it wakes every `log.cleaner.backoff.ms`, 15 s
by default) removes the replaced values and the tombstones within the test.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, NewTopic
from pydantic import SecretStr

from journeys.privacy_service import forget_and_publish
from journeys.producers.kafka import new_admin
from journeys.producers.topics import Topics, ensure_topics, erase_bounds
from journeys.schemas.record import EventRecord
from journeys.schemas.settings import Settings
from journeys.sinks.clickhouse.forget import ForgetRequest
from journeys.sinks.clickhouse.queries import snapshot
from tests.integration.kafka.conftest import chdb_dir, kafka_bootstrap  # noqa: F401
from tests.integration.kafka.pipeline import (
    Pipeline,
    comparable,
    expected_ids,
    produce,
    replayed,
    settings_for,
    wait_settled,
)
from tests.security.test_privacy_forget import BAD, BOB, EVENTS, _person, scan
from tests.unit.engine.journey import ev

pytestmark = [pytest.mark.integration, pytest.mark.kafka]

#: Small bounds, so the cleaner finishes within the test.
ERASE_WITHIN_MS = 2_000
#: How long the changelogs may take to lose every trace (two cleaner passes and slack).
COMPACTION_WAIT = 75.0


def lines(events: list[EventRecord]) -> list[bytes]:
    return [e.to_json() for e in events]


def changelog_hits(settings: Settings, needles: list[str]) -> dict[str, set[str]]:
    """Per changelog topic, the needles found in any key or value still in its log."""
    names = Topics.of(settings)
    hits: dict[str, set[str]] = {}
    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, group_id=None, enable_auto_commit=False
    )
    try:
        for topic in (names.identity_state, names.journeys_state):
            partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
            consumer.assign(partitions)
            consumer.seek_to_beginning(*partitions)
            ends = consumer.end_offsets(partitions)
            found: set[str] = set()
            deadline = time.monotonic() + 30
            while any(consumer.position(p) < ends[p] for p in partitions):
                assert time.monotonic() < deadline, f"{topic} was not read"
                for batch in consumer.poll(timeout_ms=500).values():
                    for message in batch:
                        text = (message.key or b"") + b"=" + (message.value or b"")
                        found |= {n for n in needles if n.encode() in text}
            hits[topic] = found
    finally:
        consumer.close()
    return hits


def account(snap: dict[str, Any], name: str) -> dict[str, Any]:
    return {
        table: [r for r in snap[table] if r["account_id"] == name]
        for table in ("journeys", "phase_transitions", "alerts")
    }


def test_a_forget_reaches_the_running_workers_and_every_changelog(
    tmp_path: Path,
    chdb_dir: Path,  # noqa: F811
    kafka_bootstrap: str,  # noqa: F811
) -> None:
    settings = settings_for(tmp_path, chdb_dir, kafka_bootstrap, partitions=2).model_copy(
        update={
            "erase_within": ERASE_WITHIN_MS,
            "privacy_salt": SecretStr("streaming-test-salt-0123456789"),
        }
    )
    needles = list(BOB.values())
    pipeline = Pipeline(settings, workers=1)
    try:
        produce(settings, [*lines(EVENTS), *BAD])
        pipeline.start_sink()
        pipeline.start_workers()
        wait_settled(pipeline, len(EVENTS), len(BAD))
        assert pipeline.writer is not None
        client, db = pipeline.writer.client, settings.clickhouse_database
        assert changelog_hits(settings, needles)[Topics.of(settings).identity_state]

        outcome = forget_and_publish(settings, ForgetRequest("email", BOB["email"]), kafka=True)
        assert outcome.warning is None and outcome.told == 1

        # Bob's events arriving late (before event time reached) and after the request,
        # and Anna's, which move the account on
        late = ev("page_view", 4, event_id="b-late", contact_id=BOB["contact_id"])
        again = ev("signup", 150, event_id="b-again", email=BOB["email"].upper())
        cookie = ev("page_view", 151, event_id="b-cookie", anonymous_id=BOB["anonymous_id"])
        anna = ev("pricing_view", 120, event_id="a-after", email="anna@acme.nl")
        produce(settings, lines([late, again, cookie, anna]))
        others = [e for e in EVENTS if not _person(e, BOB)] + [anna]
        wait_settled(pipeline, len(expected_ids(lines(others))), 0)

        assert scan(client, db, needles) == []  # every table, every column
        stored = {row["event_id"] for row in snapshot(client, db)["events"]}
        assert stored == {e.event_id for e in others}

        # the changelogs: a trickle of other events keeps them written, so segments roll
        deadline, at = time.monotonic() + COMPACTION_WAIT, 200.0
        hits = changelog_hits(settings, needles)
        identity, journeys = Topics.of(settings).identity_state, Topics.of(settings).journeys_state
        while hits[identity] or hits[journeys]:
            assert time.monotonic() < deadline, f"still in the changelogs: {hits}"
            produce(settings, lines([ev("page_view", at, email="kees@other.de")]))
            at += 1
            time.sleep(2)
            hits = changelog_hits(settings, needles)

        streamed = comparable(snapshot(client, db))
        expected = replayed(lines(others), chdb_dir)
        assert account(streamed, "acme.nl") == account(expected, "acme.nl")
    finally:
        pipeline.stop()


def test_the_changelogs_are_created_and_kept_with_the_compaction_bound(
    kafka_bootstrap: str,  # noqa: F811
    topic_prefix: Callable[[], str],
) -> None:
    settings = Settings(
        kafka_bootstrap=kafka_bootstrap, topic_prefix=topic_prefix(), erase_within=8 * 3600
    )
    names = Topics.of(settings)
    admin = new_admin(settings)
    try:
        # one made before the setting existed
        admin.create_topics([NewTopic(names.journeys_state, 1, 1, topic_configs={})])
        ensure_topics(settings, {"internal.identity-state": 1, "internal.journeys-state": 1})
        wanted = erase_bounds(8 * 3_600_000)
        assert wanted["max.compaction.lag.ms"] == str(2 * 3_600_000)
        keys = [*wanted, "cleanup.policy"]
        described = admin.describe_configs(
            [
                ConfigResource(ConfigResourceType.TOPIC, name, keys)
                for name in (names.identity_state, names.journeys_state)
            ],
            config_filter="all",
        )
    finally:
        admin.close()
    for name in (names.identity_state, names.journeys_state):
        configs = described["topic"][name]
        got = {key: configs[key]["value"] for key in wanted}
        assert got == wanted, name
    assert described["topic"][names.identity_state]["cleanup.policy"]["value"] == "compact"


@pytest.fixture()
def topic_prefix() -> Callable[[], str]:
    """A unique topic prefix per call."""
    import uuid

    return lambda: f"t{uuid.uuid4().hex[:10]}."
