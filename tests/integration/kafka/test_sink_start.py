"""A sink started before anything else: on a fresh deployment the sink may come up before
any worker has created the pipeline's topics."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from journeys.producers.kafka import new_admin, new_producer
from journeys.producers.topics import pipeline_layout
from journeys.schemas.codec import dead_letter_json
from journeys.schemas.rows import DeadLetterRow
from journeys.schemas.settings import Settings
from journeys.sinks.clickhouse.writer import ClickHouseSink
from journeys.sinks.consumer import OutputConsumer

pytestmark = [pytest.mark.kafka, pytest.mark.integration]


def test_a_sink_started_before_the_topics_exist_reads_them_at_once(
    kafka_bootstrap: str,
    topic_prefix: Callable[[], str],
    chdb_dir: Path,
    database_name: Callable[[str], str],
    tmp_path: Path,
) -> None:
    """Subscribed to topics still being created (the broker creates a missing topic when
    asked for it, with its default partition count), a consumer can join its group with no
    partitions and get none until its next metadata refresh, minutes later. The sink
    creates the pipeline's topics, laid out as the workers expect, before it subscribes."""
    settings = Settings(
        data_dir=tmp_path,
        clickhouse_url=f"chdb://{chdb_dir}",  # the session's: one path per process
        clickhouse_database=database_name("sink_start"),
        kafka_bootstrap=kafka_bootstrap,
        topic_prefix=topic_prefix(),
        journey_partitions=3,  # the broker's default is 4
    )
    writer = ClickHouseSink(settings.clickhouse_dsn, settings.clickhouse_database)
    sink = OutputConsumer(settings, writer)
    sink.setup()
    admin = new_admin(settings)
    try:
        layout = pipeline_layout(settings)
        described = admin.describe_topics([settings.topic(name) for name in layout])
    finally:
        admin.close()
    assert {d["name"]: len(d["partitions"]) for d in described} == {
        settings.topic(name): partitions for name, partitions in layout.items()
    }
    thread = threading.Thread(target=sink.run, daemon=True)
    thread.start()
    try:
        producer = new_producer(settings)
        row = DeadLetterRow("dl-1", 1_772_442_000_000, "invalid JSON", b"{", "file:1")
        producer.send(settings.topic("dead-letters"), dead_letter_json(row)).get(30)
        producer.close()
        deadline = time.monotonic() + 60
        stored = 0
        while time.monotonic() < deadline and not stored:
            time.sleep(0.5)
            stored = writer.client.query(
                f"SELECT count() FROM {settings.clickhouse_database}.dead_letters FINAL"
            ).result_rows[0][0]
        assert stored == 1, "the sink did not read a topic created after it subscribed"
    finally:
        sink.stop()
        thread.join(30)
