"""The streaming pipeline on the real broker and the real ClickHouse engine.

Each test streams simulated history through Kafka → Faust workers (child
processes) → the sink (in this process, the only one opening the embedded
database) → ClickHouse, and compares every table with `journeys replay` of
the same input written to another database of the same engine.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from journeys.processes import stop_processes
from journeys.producers.simulator import simulate
from journeys.sinks.clickhouse.queries import snapshot, table_counts
from tests.integration.kafka.pipeline import (
    INVALID,
    comparable,
    expected_ids,
    produce,
    replayed,
    run_through,
    wait_settled,
)
from tests.integration.kafka.test_outages import free_ports

pytestmark = [pytest.mark.kafka, pytest.mark.integration]

DAY = 86_400_000


@pytest.fixture(scope="module")
def lines() -> list[bytes]:
    return list(simulate(accounts=40, days=45, seed=5)) + INVALID


def test_bulk_stream_without_keys_equals_replay_and_is_idempotent(
    pipeline_factory: Any, lines: list[bytes], chdb_dir: Path
) -> None:
    pipeline = pipeline_factory(workers=1, partitions=4)
    streamed = run_through(pipeline, lines)
    expected = replayed(lines, chdb_dir)
    for table in expected:
        assert streamed[table] == expected[table], table
    assert len(expected["alerts"]) > 0 and len(expected["journeys"]) > 10

    produce(pipeline.settings, lines)  # the same input again
    wait_settled(pipeline, len(expected_ids(lines)), 2 * len(INVALID), quiet=6)
    assert pipeline.writer is not None
    again = comparable(snapshot(pipeline.writer.client, pipeline.settings.clickhouse_database))
    for table in expected:
        if table == "dead_letters":  # each rejected input is a row: the same bytes sent twice
            assert again[table] == sorted(expected[table] * 2), table
        else:  # every valid event once, however often it came
            assert again[table] == expected[table], table


def test_two_workers_give_the_same_tables(
    pipeline_factory: Any, lines: list[bytes], chdb_dir: Path
) -> None:
    streamed = run_through(pipeline_factory(workers=2, partitions=4), lines)
    expected = replayed(lines, chdb_dir)
    for table in expected:
        assert streamed[table] == expected[table], table


def test_kill_9_mid_stream_loses_and_duplicates_nothing(
    pipeline_factory: Any, lines: list[bytes], chdb_dir: Path
) -> None:
    """With the default dedupe window: what ingest forwards again after the crash carries
    event times weeks behind the engine's clock, and still counts once (source offsets)."""
    pipeline = pipeline_factory(workers=1, partitions=2, window=DAY * 3)
    produce(pipeline.settings, lines)
    pipeline.start_sink()
    pipeline.start_workers()
    assert pipeline.writer is not None
    client, db = pipeline.writer.client, pipeline.settings.clickhouse_database
    deadline = time.monotonic() + 120
    while table_counts(client, db).get("events", 0) < 200 and time.monotonic() < deadline:
        time.sleep(0.2)
    for process in pipeline.processes:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    pipeline.stop_sink()  # the sink stops between batches; its uncommitted batch is re-read
    time.sleep(1)
    pipeline.start_sink()
    pipeline.start_workers()
    wait_settled(pipeline, len(expected_ids(lines)), len(INVALID))
    streamed = comparable(snapshot(pipeline.writer.client, db))
    expected = replayed(lines, chdb_dir, window=DAY * 3)
    assert sorted(row["event_id"] for row in streamed["events"]) == sorted(expected_ids(lines))
    for table in expected:
        assert streamed[table] == expected[table], table


def test_invalid_messages_reach_the_dead_letter_topic_and_table(
    pipeline_factory: Any, lines: list[bytes]
) -> None:
    from kafka import KafkaConsumer

    pipeline = pipeline_factory(workers=1, partitions=1)
    streamed = run_through(pipeline, lines[-30:])
    reasons = [reason for reason, _ in streamed["dead_letters"]]
    assert (
        sum("invalid JSON" in r for r in reasons) >= 1 and sum("channel" in r for r in reasons) >= 1
    )
    consumer = KafkaConsumer(
        pipeline.settings.topic("dead-letters"),
        bootstrap_servers=pipeline.settings.kafka_bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=5000,
    )
    payloads = {message.value for message in consumer}
    consumer.close()
    assert len(payloads) >= len(INVALID)
    assert len(streamed["events"]) == len(expected_ids(lines[-30:]))


def test_input_read_again_from_the_start_counts_once(
    pipeline_factory: Any, lines: list[bytes], chdb_dir: Path
) -> None:
    """Ingest's committed offsets go back to 0 (as after a crash before its commit, on a
    larger scale): everything is forwarded again, weeks behind the engine's clock and
    beyond the dedupe window, and the tables do not change."""
    from kafka import KafkaConsumer, TopicPartition
    from kafka.structs import OffsetAndMetadata

    pipeline = pipeline_factory(workers=1, partitions=2, window=DAY * 3)
    port = free_ports(2)  # the worker serves metrics on port + 1
    pipeline.settings = settings = pipeline.settings.model_copy(update={"metrics_port": port})
    run_through(pipeline, lines)
    stop_processes(pipeline.processes)
    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=f"{settings.topic_prefix}journeys",
        enable_auto_commit=False,
    )
    try:
        partitions = [TopicPartition(settings.topic("events"), p) for p in range(2)]
        consumer.assign(partitions)
        consumer.commit({tp: OffsetAndMetadata(0, "", -1) for tp in partitions})
    finally:
        consumer.close()
    pipeline.start_workers()
    wait_settled(pipeline, len(expected_ids(lines)), len(INVALID), quiet=6)
    valid = len(lines) - sum(1 for line in lines if not _valid(line))
    assert metric(port + 1, "journeys_stage_redelivered_events") == valid
    assert pipeline.writer is not None
    again = comparable(snapshot(pipeline.writer.client, settings.clickhouse_database))
    expected = replayed(lines, chdb_dir, window=DAY * 3)
    for table in expected:
        assert again[table] == expected[table], table


def _valid(line: bytes) -> bool:
    from journeys.schemas.errors import InvalidEvent
    from journeys.schemas.event import parse_event

    try:
        parse_event(line)
    except InvalidEvent:
        return False
    return True


def metric(port: int, name: str) -> float:
    """One sample of a process's /metrics."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        for line in answer.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"no {name}")
