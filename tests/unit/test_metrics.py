"""Worker and sink metrics read the processes' own state when scraped; /health says why not."""

from __future__ import annotations

import urllib.error
import urllib.request

from prometheus_client import CollectorRegistry, generate_latest

from journeys.schemas.codec import DRAIN_JSON, forwarded_json, idle_json, pack, rebuild_json
from journeys.schemas.settings import Settings
from journeys.sinks.consumer import SinkProgress
from journeys.streams.app import WorkerState
from journeys.streams.engine import EngineConfig
from journeys.streams.engine.commands import to_wire
from journeys.streams.engine.rules import default_rules_text
from journeys.streams.ingest import IdleWatch
from journeys.streams.metrics import report, serve, sink_registry, worker_registry
from journeys.streams.stage import IdentityStage, JourneyStage
from tests.unit.collect.server import free_port
from tests.unit.engine.journey import ev


def value(registry: CollectorRegistry, name: str) -> float:
    sample = registry.get_sample_value(name)
    assert sample is not None, name
    return float(sample)


def test_worker_metrics_follow_the_stages() -> None:
    state = WorkerState(Settings(), source_partitions=1, idle=IdleWatch(1.0))
    registry = worker_registry(state)
    assert value(registry, "journeys_stage_owned") == 0
    assert value(registry, "journeys_stage_released_events") == 0
    assert value(registry, "journeys_partitions_owned") == 0
    assert value(registry, "journeys_worker_healthy") == 0  # starting
    report(state, None)
    assert value(registry, "journeys_worker_healthy") == 1
    state.counters["ingested"] = 3
    config = EngineConfig.default()
    identity = IdentityStage(config, 0, 3)
    identity.restore({})
    state.identity = identity
    assert value(registry, "journeys_stage_owned") == 1
    first, second = (
        forwarded_json(ev("page_view", 0), 0, 1, 0),
        forwarded_json(ev("page_view", 5), 0, 1, 1),
    )
    commands, _ = identity.handle([(0, first), (1, second)])
    assert value(registry, "journeys_worker_ingested_events") == 3
    assert value(registry, "journeys_stage_released_events") == 1
    assert value(registry, "journeys_stage_buffered_events") == 1
    assert value(registry, "journeys_stage_event_time_lag_seconds") == 5 * 3600
    more, _ = identity.handle([(2, first), (3, idle_json(0, 1)), (4, DRAIN_JSON)])
    assert value(registry, "journeys_stage_redelivered_events") == 1
    assert value(registry, "journeys_stage_buffered_events") == 0
    assert value(registry, "journeys_stage_event_time_lag_seconds") == 0
    assert b"journeys_stage_input_offset 4.0" in generate_latest(registry)
    late, _ = identity.handle([(5, forwarded_json(ev("page_view", 1), 0, 1, 2))])
    assert value(registry, "journeys_stage_late_events") == 1
    assert value(registry, "journeys_stage_suppressed_events") == 0
    identity.stats.suppressed = 2  # events of erased people (see tests/unit/engine/test_erase)
    assert value(registry, "journeys_stage_suppressed_events") == 2

    by_partition: dict[int, list[bytes]] = {}
    for partition, command in [*commands, *more, *late]:
        by_partition.setdefault(partition, []).append(to_wire(command))
    for partition, items in sorted(by_partition.items()):
        stage = state.journeys[partition] = JourneyStage(config, partition, 3)
        stage.handle(enumerate(pack(items)))
    assert value(registry, "journeys_partitions_owned") == len(by_partition) == 3
    applied = sum(len(items) for items in by_partition.values())
    assert value(registry, "journeys_partition_commands") == applied
    assert value(registry, "journeys_partitions_generation") == 0
    held = sum(len(stage.engine.holders) for stage in state.journeys.values())
    assert value(registry, "journeys_partition_journeys_in_memory") == held > 0
    assert value(registry, "journeys_partition_journeys_read_back") == 0
    rebuild = identity.handle([(6, rebuild_json(7, default_rules_text()))])[0]
    for partition, command in rebuild:
        state.journeys[partition].handle([(99, next(pack([to_wire(command)])))])
    assert value(registry, "journeys_partitions_generation") == 7
    state.identity = None  # revoked
    assert value(registry, "journeys_stage_owned") == 0
    assert value(registry, "journeys_stage_released_events") == 0
    report(state, "Kafka has not acknowledged sends for 12s")
    assert value(registry, "journeys_worker_healthy") == 0
    assert value(registry, "journeys_worker_unhealthy_seconds") >= 0
    report(state, None)
    assert value(registry, "journeys_worker_healthy") == 1


def test_sink_metrics() -> None:
    progress = SinkProgress(rows=10, batches=2, last_write_at=0.0, problem=None)
    registry = sink_registry(progress)
    assert value(registry, "journeys_sink_rows_written") == 10
    assert value(registry, "journeys_sink_seconds_since_last_write") == -1
    assert value(registry, "journeys_sink_healthy") == 1
    progress.report("writing to ClickHouse: unavailable")
    assert value(registry, "journeys_sink_healthy") == 0


def test_health_endpoint_answers_503_with_the_problem_then_200() -> None:
    progress = SinkProgress(problem=None)
    port = free_port()
    server = serve(sink_registry(progress), progress, port)
    url = f"http://127.0.0.1:{port}"
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=5) as answer:
            assert answer.status == 200 and answer.read() == b"ok\n"
        progress.report("writing to ClickHouse: refused")
        try:
            urllib.request.urlopen(f"{url}/health", timeout=5)
            raise AssertionError("expected 503")
        except urllib.error.HTTPError as exc:
            assert exc.code == 503 and b"refused" in exc.read()
        with urllib.request.urlopen(f"{url}/metrics", timeout=5) as answer:
            assert b"journeys_sink_healthy 0.0" in answer.read()
    finally:
        server.shutdown()
        server.server_close()
