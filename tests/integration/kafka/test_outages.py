"""Outages are waited out: a deployment (`journeys run`: the sink and two workers as
processes) through a broker stop and start, and through ClickHouse being unavailable,
ends with the same tables as `journeys replay` of the same input, and never exits.

The broker test starts a broker of its own on free ports (never the shared one).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from journeys.kafka_broker import ensure_broker, stop_broker
from journeys.producers.simulator import simulate
from journeys.schemas.settings import Settings
from journeys.sinks.clickhouse.queries import snapshot
from tests.integration.kafka.deployment import ROOT, Deployment, compare_with_replay
from tests.integration.kafka.pipeline import (
    INVALID,
    Pipeline,
    comparable,
    expected_ids,
    produce,
    replayed,
    wait_settled,
)

pytestmark = [pytest.mark.kafka, pytest.mark.integration]


def free_ports(count: int) -> int:
    """The first of `count` consecutive free TCP ports on the loopback."""
    for _ in range(200):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = probe.getsockname()[1]
        if base + count >= 65_000:
            continue
        try:
            for port in range(base, base + count):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise RuntimeError("no free ports")


def pipeline_settings(tmp_path: Path, bootstrap: str, prefix: str) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        clickhouse_url=f"chdb://{tmp_path / 'clickhouse'}",
        clickhouse_database="journeys",
        kafka_bootstrap=bootstrap,
        topic_prefix=prefix,
        topic_partitions=4,
        allowed_lateness=0,
    )


def watch_health(
    deployment: Deployment, seconds: float, until_all: int | None = None
) -> dict[int, set[int | None]]:
    """The /health answers of every process, polled for `seconds` (or until every
    process has answered `until_all`)."""
    seen: dict[int, set[int | None]] = {i: set() for i in range(deployment.workers + 1)}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for index in seen:
            seen[index].add(deployment.health(index))
        assert deployment.running(), deployment.log.read_text()[-3000:]
        if until_all is not None and all(until_all in answers for answers in seen.values()):
            break
        time.sleep(0.5)
    return seen


def until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.3)


@pytest.fixture()
def deployments() -> Iterator[list[Deployment]]:
    made: list[Deployment] = []
    yield made
    for deployment in made:
        deployment.stop()


def test_clickhouse_unavailable_for_a_while_is_waited_out(
    kafka_bootstrap: str,
    topic_prefix: Callable[[], str],
    tmp_path: Path,
    deployments: list[Deployment],
) -> None:
    settings = pipeline_settings(tmp_path, kafka_bootstrap, topic_prefix())
    lines = list(simulate(accounts=40, days=45, seed=5)) + INVALID
    chdb = tmp_path / "clickhouse"
    holder = subprocess.Popen(  # another process holds the embedded database meanwhile
        [sys.executable, "-c", HOLD, str(chdb)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=ROOT,
    )
    assert holder.stdout is not None and holder.stdout.readline() == b"holding\n"
    produce(settings, lines)
    deployment = Deployment(settings, 2, free_ports(3), tmp_path / "run.log")
    deployments.append(deployment)
    deployment.start()
    until(lambda: deployment.health(0) == 503, 60, "the sink never said it cannot write")
    seen = watch_health(deployment, 8)
    assert seen[0] == {503}, seen  # unhealthy throughout, and alive
    assert deployment.metrics(0)["journeys_sink_rows_written"] == 0
    holder.communicate(b"", timeout=30)  # ClickHouse is back

    figures = deployment.wait_settled(len(lines))
    assert deployment.health(0) == 200
    assert deployment.stop() == 0
    assert deployment.restarts() == []
    result = compare_with_replay(chdb, settings.clickhouse_database, lines, tmp_path)
    assert result["different"] == [], result
    assert result["events"] == result["distinct_events"] == len(expected_ids(lines))
    print(f"\nClickHouse outage: {len(lines)} messages in, {result['counts']} rows out, {figures}")


HOLD = """
import sys
from journeys.sinks.clickhouse.client import connect
connect("chdb://" + sys.argv[1])
print("holding", flush=True)
sys.stdin.read()
"""


def test_a_broker_stop_and_start_is_waited_out(
    topic_prefix: Callable[[], str], tmp_path: Path, deployments: list[Deployment]
) -> None:
    port = free_ports(2)
    broker = Settings(
        data_dir=tmp_path / "broker",
        kafka_bootstrap=f"127.0.0.1:{port}",
        kafka_controller_port=port + 1,
        kafka_heap="512m",
        topic_partitions=4,
    )
    ensure_broker(broker)
    try:
        settings = pipeline_settings(tmp_path, broker.kafka_bootstrap, topic_prefix())
        lines = list(simulate(accounts=80, days=60, seed=11)) + INVALID
        half = len(lines) // 2
        produce(settings, lines[:half])
        deployment = Deployment(settings, 2, free_ports(3), tmp_path / "run.log")
        deployments.append(deployment)
        deployment.start()
        until(
            lambda: (
                deployment.metrics(0).get("journeys_sink_rows_written", 0) > 0
                and all(deployment.health(i) == 200 for i in range(3))
            ),
            120,
            "nothing was written before the outage",
        )
        stop_broker(broker)
        began = time.monotonic()
        seen = watch_health(deployment, 40, until_all=503)
        assert all(503 in answers for answers in seen.values()), seen
        time.sleep(max(0.0, 15 - (time.monotonic() - began)))  # down for 15 s at least
        ensure_broker(broker)
        print(f"\nbroker down for {time.monotonic() - began:.0f}s")
        produce(settings, lines[half:])
        figures = deployment.wait_settled(len(lines), timeout=240)
        print(f"settled {time.monotonic() - began:.0f}s after the broker stopped")
        until(
            lambda: all(deployment.health(i) == 200 for i in range(3)),
            30,
            f"still unhealthy: {[deployment.health(i) for i in range(3)]}",
        )
        assert deployment.stop() == 0
        assert deployment.restarts() == []
    finally:
        stop_broker(broker)
    result = compare_with_replay(
        tmp_path / "clickhouse", settings.clickhouse_database, lines, tmp_path
    )
    assert result["different"] == [], result
    assert result["events"] == result["distinct_events"] == len(expected_ids(lines))
    print(f"\nbroker outage: {len(lines)} messages in, {result['counts']} rows out, {figures}")


def committed_rows(settings: Settings) -> list[int | None]:
    """The sink group's committed offsets on the rows topic's partitions."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=f"{settings.topic_prefix}journeys-sink",
        enable_auto_commit=False,
    )
    topic = settings.topic("internal.rows")
    try:
        partitions = sorted(consumer.partitions_for_topic(topic) or ())
        return [consumer.committed(TopicPartition(topic, p)) for p in partitions]
    finally:
        consumer.close()


def test_writes_refused_mid_run_are_retried_and_nothing_is_skipped(
    pipeline_factory: Any, chdb_dir: Path
) -> None:
    """ClickHouse refuses inserts for a while (a table detached under the running sink)."""
    lines = list(simulate(accounts=40, days=45, seed=5)) + INVALID
    pipeline: Pipeline = pipeline_factory(workers=1, partitions=2)
    pipeline.start_sink()
    assert pipeline.writer is not None and pipeline.sink is not None
    client, db = pipeline.writer.client, pipeline.settings.clickhouse_database
    client.command(f"DETACH TABLE {db}.phase_transitions")
    produce(pipeline.settings, lines)
    pipeline.start_workers()
    progress = pipeline.sink.progress
    until(lambda: progress.retries >= 2, 120, "the sink never tried to write")
    assert progress.problem is not None and "ClickHouse" in progress.problem
    # No offset moves while the write fails (batches written before it may have committed).
    before, retries = committed_rows(pipeline.settings), progress.retries
    until(lambda: progress.retries >= retries + 2, 120, "the sink stopped retrying")
    assert committed_rows(pipeline.settings) == before
    client.command(f"ATTACH TABLE {db}.phase_transitions")
    wait_settled(pipeline, len(expected_ids(lines)), len(INVALID))
    assert progress.problem is None
    streamed = comparable(snapshot(client, db))
    expected = replayed(lines, chdb_dir)
    for table in expected:
        assert streamed[table] == expected[table], table
