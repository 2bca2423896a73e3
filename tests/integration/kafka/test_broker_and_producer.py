"""The local broker and the producer client against the real broker."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from click.testing import CliRunner
from kafka import KafkaConsumer

from journeys.cli import main
from journeys.producers.client import EventProducer, partition_key
from journeys.producers.topics import ensure_topics
from journeys.schemas.errors import BrokerError
from journeys.schemas.settings import Settings
from tests.unit.engine.journey import ev

pytestmark = [pytest.mark.kafka, pytest.mark.integration]


def test_start_is_idempotent_and_status_says_running(kafka_bootstrap: str) -> None:
    runner = CliRunner()
    start = runner.invoke(main, ["kafka", "start", "--kafka-bootstrap", kafka_bootstrap])
    assert start.exit_code == 0 and "already answers" in start.output
    status = runner.invoke(main, ["kafka", "status", "--kafka-bootstrap", kafka_bootstrap])
    assert status.exit_code == 0 and "running" in status.output


def test_topics_get_the_asked_partitions(
    kafka_bootstrap: str, topic_prefix: Callable[[], str]
) -> None:
    settings = Settings(
        kafka_bootstrap=kafka_bootstrap, topic_prefix=topic_prefix(), topic_partitions=3
    )
    counts = ensure_topics(settings)
    assert counts == {
        settings.topic(n): 3 for n in ("events", "transitions", "alerts", "dead-letters")
    }
    assert ensure_topics(settings) == counts  # existing topics are fine


def test_produced_events_arrive_once_in_per_key_order(
    kafka_bootstrap: str, topic_prefix: Callable[[], str]
) -> None:
    settings = Settings(
        kafka_bootstrap=kafka_bootstrap, topic_prefix=topic_prefix(), topic_partitions=4
    )
    ensure_topics(settings)
    records = [
        ev("page_view", i, event_id=f"e{i:03d}", email=f"x@co{i % 5}.nl") for i in range(100)
    ]
    producer = EventProducer(settings)
    producer.start()
    producer.send(records)
    producer.close()
    consumer = KafkaConsumer(
        settings.topic("events"),
        bootstrap_servers=kafka_bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=5000,
    )
    seen: dict[bytes, list[str]] = {}
    for message in consumer:
        from journeys.schemas.event import parse_event

        seen.setdefault(message.key, []).append(parse_event(message.value).event_id)
    consumer.close()
    assert sorted(i for ids in seen.values() for i in ids) == [r.event_id for r in records]
    for key, ids in seen.items():
        assert ids == sorted(ids), key  # one account's events keep their order
    assert (
        set(seen) == {partition_key(r) for r in records} == {f"co{i}.nl".encode() for i in range(5)}
    )


def test_unreachable_broker_is_a_clear_error() -> None:
    settings = Settings(kafka_bootstrap="127.0.0.1:1")
    with pytest.raises(BrokerError, match="journeys kafka start"):
        ensure_topics(settings)
