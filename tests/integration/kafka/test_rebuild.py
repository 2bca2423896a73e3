"""`journeys rebuild --rules FILE` against the running pipeline on the real broker.

History streams in with the built-in rules; the rebuild is asked for while
more events are being produced. When the command reports the new generation
live, every table read through the `_current` views equals `journeys replay`
of all the events with the new rules, and the alerts topic carried only what
the new rules (or the later events) changed: no alert the old generation had
as it is was delivered again.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner
from kafka import KafkaConsumer, TopicPartition

from journeys.cli import main
from journeys.producers.simulator import simulate
from journeys.producers.topics import Topics
from journeys.schemas.settings import Settings
from journeys.sinks.clickhouse.client import connect, select
from journeys.sinks.clickhouse.queries import snapshot
from journeys.sinks.clickhouse.writer import ClickHouseSink
from journeys.streams.config import engine_config
from journeys.streams.engine.rules import rules_from_text
from journeys.streams.replay import replay
from tests.integration.kafka.conftest import chdb_dir, kafka_bootstrap  # noqa: F401
from tests.integration.kafka.pipeline import (
    WINDOW,
    Pipeline,
    comparable,
    expected_ids,
    produce,
    settings_for,
    wait_settled,
)
from tests.unit.engine.test_rebuild import OTHER

pytestmark = [pytest.mark.integration, pytest.mark.kafka]

DERIVED = ("events", "journeys", "phase_transitions", "alerts")


def replayed_with(lines: list[bytes], chdb_dir: Path, rules: str) -> dict[str, Any]:  # noqa: F811
    """`journeys replay` of the lines with `rules`, as the workers are configured."""
    database = f"replay_{uuid.uuid4().hex[:10]}"
    sink = ClickHouseSink(f"chdb://{chdb_dir}", database)
    sink.setup()
    config = replace(engine_config(Settings(dedupe_window=WINDOW)), rules=rules_from_text(rules))
    replay(((f"line:{i}", line) for i, line in enumerate(lines)), sink, config, 0)
    return comparable(snapshot(connect(f"chdb://{chdb_dir}"), database))


def shown(alert_id: str, status: str, raised_at: int, details: Any) -> tuple[Any, ...]:
    """An alert as a receiver sees it."""
    return alert_id, status, raised_at, orjson.dumps(details, option=orjson.OPT_SORT_KEYS)


def ms(moment: datetime) -> int:
    return round(moment.timestamp() * 1000)


def published_alerts(settings: Settings, generation: int) -> list[tuple[Any, ...]]:
    """The alert messages of `generation` on the public alerts topic."""
    topic = Topics.of(settings).alerts
    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=None,
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    out = []
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        ends = consumer.end_offsets(partitions)
        deadline = time.monotonic() + 30
        while any(consumer.position(p) < ends[p] for p in partitions):
            assert time.monotonic() < deadline, "the alerts topic was not read"
            for batch in consumer.poll(timeout_ms=500).values():
                for message in batch:
                    body = orjson.loads(message.value)
                    if body.get("generation") == generation:
                        raised = ms(datetime.fromisoformat(body["raised_at"]))
                        out.append(shown(body["alert_id"], body["status"], raised, body["details"]))
    finally:
        consumer.close()
    return out


def test_a_rebuild_while_events_stream_gives_a_replay_with_the_new_rules(
    tmp_path: Path,
    chdb_dir: Path,  # noqa: F811
    kafka_bootstrap: str,  # noqa: F811
) -> None:
    settings = settings_for(tmp_path, chdb_dir, kafka_bootstrap, partitions=2)
    lines = list(simulate(accounts=30, days=50, seed=11, invalid_share=0, missing_id_share=0))
    cut = len(lines) * 3 // 5
    first, later = lines[:cut], lines[cut:]
    rules = tmp_path / "other.toml"
    rules.write_text(OTHER)
    pipeline = Pipeline(settings, workers=2)
    try:
        produce(settings, first)
        pipeline.start_sink()
        pipeline.start_workers()
        wait_settled(pipeline, len(expected_ids(first)), 0)
        assert pipeline.writer is not None
        client, db = pipeline.writer.client, settings.clickhouse_database
        before = {
            shown(r[0], r[1], ms(r[2]), orjson.loads(r[3]))
            for r in select(
                client, f"SELECT alert_id, status, raised_at, details FROM {db}.alerts_current"
            )
        }

        # The rest of the history streams in while the rebuild is asked for and followed.
        streaming = threading.Thread(target=produce, args=(settings, later))
        streaming.start()
        result = CliRunner().invoke(
            main,
            [
                "rebuild", "--rules", str(rules), "--timeout", "240",
                "--clickhouse-url", settings.clickhouse_url or "",
                "--clickhouse-database", db, "--data-dir", str(tmp_path),
                "--kafka-bootstrap", kafka_bootstrap, "--topic-prefix", settings.topic_prefix,
            ],
            catch_exceptions=False,
        )  # fmt: skip
        streaming.join(60)
        assert result.exit_code == 0, result.output
        assert "is live" in result.output
        (generation,) = select(client, f"SELECT generation FROM {db}.generation_current")[0]
        assert generation > 0
        wait_settled(pipeline, len(expected_ids(lines)), 0)

        streamed = comparable(snapshot(client, db))
        expected = replayed_with(lines, chdb_dir, OTHER)
        for table in DERIVED:
            assert streamed[table] == expected[table], table
        assert streamed["journeys"] != []

        # Receivers got corrections and later changes, never an alert as it was.
        published = published_alerts(settings, generation)
        assert published
        assert not set(published) & before
    finally:
        pipeline.stop()
