"""The streaming pipeline as the Kafka tests drive it: workers as child processes, the
sink as a thread of the test process (the only one opening the session's embedded
database), and `journeys replay` of the same input as the reference answer.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from journeys.processes import settings_env, start_processes, stop_processes
from journeys.producers.client import EventProducer
from journeys.producers.topics import ensure_pipeline_topics
from journeys.schemas.errors import InvalidEvent
from journeys.schemas.event import parse_event
from journeys.schemas.settings import Settings
from journeys.sinks.clickhouse.client import connect
from journeys.sinks.clickhouse.queries import snapshot, table_counts
from journeys.sinks.clickhouse.writer import ClickHouseSink
from journeys.sinks.consumer import OutputConsumer
from journeys.streams.config import engine_config
from journeys.streams.replay import replay
from tests.integration.kafka.deployment import uncommitted

#: The tests send whole histories again: the engine remembers every event_id they hold.
WINDOW = 365 * 86_400_000

INVALID = [
    b"{not json",
    b'{"channel":"fax","type":"x","occurred_at":"2026-01-01T00:00:00Z","email":"a@b.nl"}',
]


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
        self.writer = ClickHouseSink(
            self.settings.clickhouse_dsn, self.settings.clickhouse_database
        )
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


def settings_for(
    tmp_path: Path, chdb_dir: Path, bootstrap: str, partitions: int, window: int = WINDOW
) -> Settings:
    name = uuid.uuid4().hex[:10]
    return Settings(
        data_dir=tmp_path,
        clickhouse_url=f"chdb://{chdb_dir}",
        clickhouse_database=f"stream_{name}",
        kafka_bootstrap=bootstrap,
        topic_prefix=f"t{name}.",
        topic_partitions=partitions,
        allowed_lateness=0,
        dedupe_window=window,
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


def wait_settled(
    pipeline: Pipeline, want_events: int, want_dead: int, quiet: float = 5.0
) -> dict[str, int]:
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
            and uncommitted(pipeline.settings) == 0  # nothing in flight between the stages
        ):
            return counts
        time.sleep(0.5)
    raise AssertionError(f"pipeline did not settle: {last}")


def replayed(lines: list[bytes], chdb_dir: Path, window: int = WINDOW) -> dict[str, Any]:
    database = f"replay_{uuid.uuid4().hex[:10]}"
    sink = ClickHouseSink(f"chdb://{chdb_dir}", database)
    sink.setup()
    config = engine_config(Settings(dedupe_window=window))  # as the workers run it
    replay(((f"line:{i}", line) for i, line in enumerate(lines)), sink, config, 0)
    return comparable(snapshot(connect(f"chdb://{chdb_dir}"), database))


def comparable(snap: dict[str, Any]) -> dict[str, Any]:
    """Tables as compared: dead letters by reason and payload (their source differs by design)."""
    out = dict(snap)
    out["dead_letters"] = sorted(
        (row["reason"], row["payload"]) for row in snap.get("dead_letters", [])
    )
    for name in ("events", "phase_transitions", "journeys", "alerts", "identity_links"):
        out[name] = [
            {k: v for k, v in row.items() if k not in ("inserted_at", "late")}
            for row in snap.get(name, [])
        ]
    return out


def run_through(pipeline: Pipeline, lines: list[bytes]) -> dict[str, Any]:
    produce(pipeline.settings, lines)
    pipeline.start_sink()
    pipeline.start_workers()
    wait_settled(pipeline, len(expected_ids(lines)), len(INVALID))
    assert pipeline.writer is not None
    return comparable(snapshot(pipeline.writer.client, pipeline.settings.clickhouse_database))
