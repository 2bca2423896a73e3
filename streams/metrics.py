"""Prometheus metrics of the worker and the sink, read from their own counters.

Each process type serves its registry on `JOURNEYS_METRICS_PORT` when set
(`journeys run` gives the sink that port and worker i the port + 1 + i).
Values are read when scraped, so the hot path keeps plain integers.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, start_http_server


def _gauge(registry: CollectorRegistry, name: str, doc: str, read: Callable[[], float]) -> None:
    Gauge(name, doc, registry=registry).set_function(read)


def worker_registry(runtime: Any) -> CollectorRegistry:
    """A worker's ingest counters and, while it owns it, the journey stage's."""
    registry = CollectorRegistry()

    def stage(read: Callable[[Any], float]) -> Callable[[], float]:
        return lambda: read(runtime.stage) if runtime.stage is not None else 0.0

    _gauge(registry, "journeys_worker_ingested_events", "Valid events forwarded to the journey stage",
           lambda: runtime.counters["ingested"])
    _gauge(registry, "journeys_worker_invalid_events", "Events sent to dead letters",
           lambda: runtime.counters["invalid"])
    _gauge(registry, "journeys_stage_owned", "1 while this worker runs the journey stage",
           lambda: 1.0 if runtime.stage is not None else 0.0)
    _gauge(registry, "journeys_stage_released_events", "Events applied in event-time order",
           stage(lambda s: s.stats.released))
    _gauge(registry, "journeys_stage_late_events", "Events behind the watermark (stored, moved nothing)",
           stage(lambda s: s.stats.late))
    _gauge(registry, "journeys_stage_buffered_events", "Events waiting for the watermark",
           stage(lambda s: len(s.sequencer)))
    _gauge(registry, "journeys_stage_event_time_lag_seconds",
           "Latest event time seen less event time applied", stage(_event_time_lag))
    _gauge(registry, "journeys_stage_input_offset", "Input offset reflected in the checkpoint",
           stage(lambda s: s.offset))
    return registry


def _event_time_lag(stage: Any) -> float:
    if stage.engine.clock <= 0 or stage.max_ts <= 0:
        return 0.0
    return max(0.0, (stage.max_ts - stage.engine.clock) / 1000)


def sink_registry(progress: Any) -> CollectorRegistry:
    """The sink's rows and batches written, and the age of its last write."""
    registry = CollectorRegistry()
    _gauge(registry, "journeys_sink_rows_written", "Rows written to ClickHouse", lambda: progress.rows)
    _gauge(registry, "journeys_sink_batches_written", "Batches written and committed", lambda: progress.batches)
    _gauge(registry, "journeys_sink_seconds_since_last_write", "Seconds since the last committed batch",
           lambda: time.monotonic() - progress.last_write_at if progress.last_write_at else -1.0)
    return registry


def serve(registry: CollectorRegistry, port: int) -> None:
    """Serve a registry on `port` in a background thread (0: do nothing)."""
    if port:
        start_http_server(port, addr="0.0.0.0", registry=registry)
