"""No message is too large: a backlog of 2 KB events is stored whole, and 1 MB inputs end as
dead letters (topic and table) while the events after them are stored.

On the real broker, with workers as child processes and the sink in this process.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaConsumer

from journeys.schemas.codec import DEAD_LETTER_PAYLOAD_BYTES, PACK_BYTES
from journeys.schemas.record import format_ms
from journeys.sinks.clickhouse.client import select
from journeys.sinks.clickhouse.queries import snapshot
from tests.integration.kafka.pipeline import (
    Pipeline,
    comparable,
    produce,
    replayed,
    wait_settled,
)
from tests.integration.kafka.test_outages import free_ports, until

pytestmark = [pytest.mark.kafka, pytest.mark.integration]

T0 = 1_790_000_000_000
TYPES = ("page_view", "product_view", "pricing_view", "add_to_cart", "content_view")


def event(i: int, note: int = 1_850, **extra: Any) -> bytes:
    """A valid event of about `note` + 200 bytes."""
    return orjson.dumps(
        {
            "event_id": f"b{i:06d}",
            "channel": "web",
            "type": TYPES[i % len(TYPES)],
            "occurred_at": format_ms(T0 + i * 1000),
            "email": f"u{i % 997}@co{i % 211}.nl",
            "properties": {"url": f"https://shop.example/p/{i}", "note": "n" * note, **extra},
        }
    )


def topic_messages(pipeline: Pipeline, name: str) -> list[bytes]:
    consumer = KafkaConsumer(
        pipeline.settings.topic(name),
        bootstrap_servers=pipeline.settings.kafka_bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=4000,
        max_partition_fetch_bytes=16 * 1024 * 1024,
    )
    try:
        return [message.value for message in consumer]
    finally:
        consumer.close()


def health(port: int) -> int | None:
    """A process's /health status code (None while it does not answer)."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return None


def stored(pipeline: Pipeline) -> tuple[int, int, int]:
    """(rows in events FINAL, distinct event ids, rows written before merges)."""
    assert pipeline.writer is not None
    db = pipeline.settings.clickhouse_database
    [(final, distinct)] = select(
        pipeline.writer.client, f"SELECT count(), uniqExact(event_id) FROM {db}.events FINAL"
    )
    [(raw,)] = select(pipeline.writer.client, f"SELECT count() FROM {db}.events")
    return int(final), int(distinct), int(raw)


def test_a_backlog_of_20000_two_kilobyte_events_is_all_stored(
    pipeline_factory: Any, chdb_dir: Path
) -> None:
    lines = [event(i) for i in range(20_000)]
    assert 1_900 < sum(map(len, lines)) / len(lines) < 2_200
    pipeline: Pipeline = pipeline_factory(workers=1, partitions=4)
    produce(pipeline.settings, lines)  # all of it waits before any worker starts
    pipeline.start_sink()
    pipeline.start_workers()
    wait_settled(pipeline, len(lines), 0, quiet=4)
    final, distinct, raw = stored(pipeline)
    assert final == distinct == len(lines), (final, distinct)  # 0 lost, 0 doubled
    ordered, rows = (
        topic_messages(pipeline, "internal.ordered"),
        topic_messages(pipeline, "internal.rows"),
    )
    assert max(map(len, ordered + rows)) <= PACK_BYTES
    assert len(ordered) >= sum(map(len, lines)) // PACK_BYTES  # packed by bytes, not by count
    assert pipeline.writer is not None
    streamed = comparable(snapshot(pipeline.writer.client, pipeline.settings.clickhouse_database))
    expected = replayed(lines, chdb_dir)
    for table in expected:
        assert streamed[table] == expected[table], table
    print(
        f"\nbacklog: {len(lines):,} messages in ({sum(map(len, lines)):,} bytes), "
        f"{final:,} events stored ({raw:,} rows written), lost {len(lines) - distinct}, "
        f"doubled {final - distinct}; {len(ordered)} ordered and {len(rows)} rows messages, "
        f"largest {max(map(len, ordered + rows)):,} bytes"
    )


def test_one_megabyte_inputs_become_dead_letters_and_what_follows_is_stored(
    pipeline_factory: Any,
) -> None:
    invalid = b'{"event_id": "' + b"x" * (1024 * 1024)  # 1 MiB of broken JSON
    valid_but_huge = event(10, note=10, blob="y" * (1024 * 1024))
    before, after = [event(i) for i in range(10)], [event(i) for i in range(11, 31)]
    lines = [*before, invalid, valid_but_huge, *after]
    pipeline: Pipeline = pipeline_factory(workers=1, partitions=1)
    produce(pipeline.settings, lines)
    pipeline.start_sink()
    pipeline.start_workers()
    wait_settled(pipeline, len(before) + len(after), 2, quiet=3)
    final, distinct, _ = stored(pipeline)
    assert final == distinct == len(before) + len(after)

    published = [orjson.loads(m) for m in topic_messages(pipeline, "dead-letters")]
    assert len(published) == 2
    for body, payload in zip(published, (invalid, valid_but_huge), strict=True):
        assert body["payload_truncated"] is True and body["payload_size"] == len(payload)
        assert body["payload_sha256"] == hashlib.sha256(payload).hexdigest()
        assert body["payload"].encode() == payload[:DEAD_LETTER_PAYLOAD_BYTES]
        assert "too large" in body["reason"]
    assert pipeline.writer is not None
    rows = snapshot(pipeline.writer.client, pipeline.settings.clickhouse_database)["dead_letters"]
    assert sorted(len(row["payload"]) for row in rows) == [DEAD_LETTER_PAYLOAD_BYTES] * 2
    assert all("too large" in row["reason"] and "sha256" in row["reason"] for row in rows)
    largest = max(len(orjson.dumps(body)) for body in published)
    print(
        f"\n1 MB inputs: {len(lines)} messages in, {final} events and {len(rows)} dead letters "
        f"stored, largest dead letter message {largest:,} bytes"
    )


def test_a_send_the_broker_refuses_stops_the_worker_before_any_offset_moves(
    pipeline_factory: Any, chdb_dir: Path
) -> None:
    from kafka import TopicPartition
    from kafka.admin import ConfigResource, ConfigResourceType

    from journeys.producers.client import EventProducer
    from journeys.producers.kafka import new_admin, new_consumer

    lines = [event(i, note=100) for i in range(300)]
    pipeline: Pipeline = pipeline_factory(workers=1, partitions=1)
    port = free_ports(2)  # the worker serves on port + 1 (start_processes' numbering)
    pipeline.settings = settings = pipeline.settings.model_copy(update={"metrics_port": port})
    produce(settings, [])  # the topics, with the project's limits
    pipeline.start_sink()
    pipeline.start_workers()
    until(lambda: health(port + 1) == 200, 60, "the worker did not get ready")
    admin = new_admin(settings)
    try:  # now the ordered topic takes no more than 2 KB: every pack is refused
        admin.alter_configs(
            [
                ConfigResource(
                    ConfigResourceType.TOPIC,
                    settings.topic("internal.ordered"),
                    {"max.message.bytes": "2048"},
                )
            ]
        )
    finally:
        admin.close()
    producer = EventProducer(settings)  # not `produce`: it would raise the limit again
    producer.start()
    try:
        producer.send_raw(lines)
    finally:
        producer.close()
    [worker] = pipeline.processes
    assert worker.wait(120) == 1  # stopped, not skipping
    consumer = new_consumer(settings, group="journeys")
    try:
        committed = consumer.committed(TopicPartition(settings.topic("events"), 0))
    finally:
        consumer.close()
    assert not committed  # the refused batch was never acknowledged
    pipeline.start_workers()  # a new worker raises the topic's limit again and reads it all
    wait_settled(pipeline, len(lines), 0, quiet=3)
    final, distinct, _ = stored(pipeline)
    assert final == distinct == len(lines)
    assert pipeline.writer is not None
    streamed = comparable(snapshot(pipeline.writer.client, settings.clickhouse_database))
    expected = replayed(lines, chdb_dir)
    for table in expected:
        assert streamed[table] == expected[table], table
