"""The streaming pipeline on the real broker and the real ClickHouse engine.

Each test streams simulated history through Kafka → Faust workers (child
processes) → the sink (in this process, the only one opening the embedded
database) → ClickHouse, and compares every table with `journeys replay` of
the same input written to another database of the same engine.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from journeys.processes import settings_env, start_processes, stop_processes
from journeys.producers.topics import ensure_pipeline_topics
from journeys.producers.client import EventProducer
from journeys.producers.simulator import simulate
from journeys.schemas.errors import InvalidEvent
from journeys.schemas.event import parse_event
from journeys.schemas.settings import Settings
from journeys.sinks.clickhouse.client import connect
from journeys.sinks.clickhouse.queries import snapshot, table_counts
from journeys.sinks.clickhouse.writer import ClickHouseSink
from journeys.sinks.consumer import OutputConsumer
from journeys.streams.replay import replay

pytestmark = [pytest.mark.kafka, pytest.mark.integration]

INVALID = [b"{not json", b'{"channel":"fax","type":"x","occurred_at":"2026-01-01T00:00:00Z","email":"a@b.nl"}']


@dataclass
class Pipeline:
    """Workers as child processes, the sink as a thread of this process."""

    settings: Settings
    workers: int
    processes: list[Any] = field(default_factory=list)
    sink: OutputConsumer | None = None
    thread: threading.Thread | None = None
    writer: ClickHouseSink | None = None

    def start_sink(self) -> None:
        self.writer = ClickHouseSink(self.settings.clickhouse_dsn, self.settings.clickhouse_database)
        self.sink = OutputConsumer(self.settings, self.writer)
        self.sink.setup()
        self.thread = threading.Thread(target=self.sink.run, daemon=True)
        self.thread.start()

    def stop_sink(self) -> None:
        if self.sink is not None and self.thread is not None:
            self.sink.stop()
            self.thread.join(30)
            self.sink = None

    def start_workers(self) -> None:
        env = {**settings_env(self.settings), "JOURNEYS_IDLE_AFTER": "1"}
        self.processes = start_processes(self.workers, env, with_sink=False)

    def stop(self) -> None:
        stop_processes(self.processes)
        self.stop_sink()


@pytest.fixture(scope="module")
def lines() -> list[bytes]:
    return list(simulate(accounts=40, days=45, seed=5)) + INVALID


@pytest.fixture(scope="session")
def chdb_dir(chdb_dsn: str) -> Path:
    """The session's one embedded ClickHouse path (one per process)."""
    return Path(chdb_dsn.removeprefix("chdb://"))


def settings_for(tmp_path: Path, chdb_dir: Path, bootstrap: str, partitions: int) -> Settings:
    name = uuid.uuid4().hex[:10]
    return Settings(
        data_dir=tmp_path,
        clickhouse_url=f"chdb://{chdb_dir}",
        clickhouse_database=f"stream_{name}",
        kafka_bootstrap=bootstrap,
        topic_prefix=f"t{name}.",
        topic_partitions=partitions,
        allowed_lateness="0s",
    )


def produce(settings: Settings, lines: list[bytes]) -> None:
    ensure_pipeline_topics(settings)
    producer = EventProducer(settings)
    producer.start()
    try:
        producer.send_raw(lines)
    finally:
        producer.close()


def expected_ids(lines: list[bytes]) -> set[str]:
    ids = set()
    for line in lines:
        try:
            ids.add(parse_event(line).event_id)
        except InvalidEvent:
            pass
    return ids


def wait_settled(pipeline: Pipeline, want_events: int, want_dead: int, quiet: float = 5.0) -> dict[str, int]:
    assert pipeline.writer is not None
    client, db = pipeline.writer.client, pipeline.settings.clickhouse_database
    last, changed = None, time.monotonic()
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        for process in pipeline.processes:
            assert process.poll() is None, f"{process.args} exited with {process.returncode}"
        counts = table_counts(client, db)
        if counts != last:
            last, changed = counts, time.monotonic()
        if (
            counts.get("events", 0) >= want_events
            and counts.get("dead_letters", 0) >= want_dead
            and time.monotonic() - changed > quiet
        ):
            return counts
        time.sleep(0.5)
    raise AssertionError(f"pipeline did not settle: {last}")


def replayed(lines: list[bytes], chdb_dir: Path) -> dict[str, Any]:
    database = f"replay_{uuid.uuid4().hex[:10]}"
    sink = ClickHouseSink(f"chdb://{chdb_dir}", database)
    sink.setup()
    from journeys.streams.engine import EngineConfig

    replay(((f"line:{i}", line) for i, line in enumerate(lines)), sink, EngineConfig.default(), 0)
    return comparable(snapshot(connect(f"chdb://{chdb_dir}"), database))


def comparable(snap: dict[str, Any]) -> dict[str, Any]:
    """Tables as compared: dead letters by reason and payload (their source differs by design)."""
    out = dict(snap)
    out["dead_letters"] = sorted((row["reason"], row["payload"]) for row in snap.get("dead_letters", []))
    for name in ("events", "phase_transitions", "journeys", "alerts", "identity_links"):
        out[name] = [{k: v for k, v in row.items() if k not in ("inserted_at", "late")} for row in snap.get(name, [])]
    return out


@pytest.fixture()
def pipeline_factory(kafka_bootstrap: str, chdb_dir: Path, tmp_path: Path) -> Iterator[Any]:
    made: list[Pipeline] = []

    def make(workers: int = 1, partitions: int = 4) -> Pipeline:
        pipeline = Pipeline(settings_for(tmp_path, chdb_dir, kafka_bootstrap, partitions), workers)
        made.append(pipeline)
        return pipeline

    yield make
    for pipeline in made:
        pipeline.stop()


def run_through(pipeline: Pipeline, lines: list[bytes]) -> dict[str, Any]:
    produce(pipeline.settings, lines)
    pipeline.start_sink()
    pipeline.start_workers()
    wait_settled(pipeline, len(expected_ids(lines)), len(INVALID))
    assert pipeline.writer is not None
    return comparable(snapshot(pipeline.writer.client, pipeline.settings.clickhouse_database))


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
    wait_settled(pipeline, len(expected_ids(lines)), len(INVALID), quiet=6)
    assert pipeline.writer is not None
    again = comparable(snapshot(pipeline.writer.client, pipeline.settings.clickhouse_database))
    for table in expected:
        assert again[table] == expected[table], table


def test_two_workers_give_the_same_tables(pipeline_factory: Any, lines: list[bytes], chdb_dir: Path) -> None:
    streamed = run_through(pipeline_factory(workers=2, partitions=4), lines)
    expected = replayed(lines, chdb_dir)
    for table in expected:
        assert streamed[table] == expected[table], table


def test_kill_9_mid_stream_loses_and_duplicates_nothing(
    pipeline_factory: Any, lines: list[bytes], chdb_dir: Path
) -> None:
    pipeline = pipeline_factory(workers=1, partitions=2)
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
    expected = replayed(lines, chdb_dir)
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
    assert sum("invalid JSON" in r for r in reasons) >= 1 and sum("channel" in r for r in reasons) >= 1
    consumer = KafkaConsumer(
        pipeline.settings.topic("dead-letters"), bootstrap_servers=pipeline.settings.kafka_bootstrap,
        auto_offset_reset="earliest", consumer_timeout_ms=5000,
    )
    payloads = {message.value for message in consumer}
    consumer.close()
    assert len(payloads) >= len(INVALID)
    assert len(streamed["events"]) == len(expected_ids(lines[-30:]))
