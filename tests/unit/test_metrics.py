"""Worker and sink metrics read the processes' own counters when scraped."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import generate_latest

from journeys.schemas.settings import Settings
from journeys.sinks.consumer import SinkProgress
from journeys.streams.app import Runtime
from journeys.streams.checkpoint import CheckpointStore
from journeys.streams.engine import EngineConfig
from journeys.streams.metrics import sink_registry, worker_registry
from journeys.streams.stage import DRAIN_MESSAGE, JourneyStage, envelope
from tests.unit.engine.journey import ev


def value(registry, name: str) -> float:  # type: ignore[no-untyped-def]
    return float(registry.get_sample_value(name))


def test_worker_metrics_follow_the_stage(tmp_path: Path) -> None:
    runtime = Runtime(Settings(), source_partitions=1, idle_after=1.0)
    registry = worker_registry(runtime)
    assert value(registry, "journeys_stage_owned") == 0
    runtime.counters["ingested"] = 3
    stage = JourneyStage(EngineConfig.default(), 0, CheckpointStore(tmp_path))
    stage.open()
    runtime.stage = stage
    stage.handle([(0, envelope(ev("page_view", 0), 0, 1)), (1, envelope(ev("page_view", 5), 0, 1))])
    assert value(registry, "journeys_worker_ingested_events") == 3
    assert value(registry, "journeys_stage_released_events") == 1
    assert value(registry, "journeys_stage_buffered_events") == 1
    assert value(registry, "journeys_stage_event_time_lag_seconds") == 5 * 3600
    stage.handle([(2, DRAIN_MESSAGE)])
    assert value(registry, "journeys_stage_buffered_events") == 0
    assert b"journeys_stage_input_offset 2.0" in generate_latest(registry)


def test_sink_metrics() -> None:
    progress = SinkProgress(rows=10, batches=2, last_write_at=0.0)
    registry = sink_registry(progress)
    assert value(registry, "journeys_sink_rows_written") == 10
    assert value(registry, "journeys_sink_seconds_since_last_write") == -1
