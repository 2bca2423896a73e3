"""Prometheus metrics and health of the worker and the sink, read from their own state.

Each process type serves its registry on `JOURNEYS_METRICS_PORT` when set
(`journeys run` gives the sink that port and worker i the port + 1 + i):
`/metrics` (and any other path) the Prometheus text, `/health` 200 `ok` or
503 with what is wrong (Kafka or ClickHouse unreachable, a send waiting for
its acknowledgement). Values are read when scraped, so the hot path keeps
plain integers.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, Gauge, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer


class Status(Protocol):
    """What a process reports about itself: `problem` is None while it does its job."""

    problem: str | None
    #: `time.monotonic()` when the current problem began (0 while healthy).
    unhealthy_since: float


def report(status: Status, problem: str | None) -> None:
    """Record a problem (keeping when it began), or None once it is gone."""
    if problem is None:
        status.unhealthy_since = 0.0
    elif status.problem is None:
        status.unhealthy_since = time.monotonic()
    status.problem = problem


def _gauge(registry: CollectorRegistry, name: str, doc: str, read: Callable[[], float]) -> None:
    Gauge(name, doc, registry=registry).set_function(read)


def _health_gauges(registry: CollectorRegistry, prefix: str, status: Status) -> None:
    _gauge(
        registry,
        f"{prefix}_healthy",
        "1 while the process can do its job (Kafka and ClickHouse reachable), else 0",
        lambda: 1.0 if status.problem is None else 0.0,
    )
    _gauge(
        registry,
        f"{prefix}_unhealthy_seconds",
        "For how long the process has been unhealthy (0 while healthy)",
        lambda: time.monotonic() - status.unhealthy_since if status.problem is not None else 0.0,
    )


def worker_registry(state: Any) -> CollectorRegistry:
    """A worker's ingest counters, health, the identity stage's while it owns it, and its
    journey partitions'."""
    registry = CollectorRegistry()

    def stage(read: Callable[[Any], float]) -> Callable[[], float]:
        return lambda: read(state.identity) if state.identity is not None else 0.0

    gauges: Iterable[tuple[str, str, Callable[[], float]]] = (
        (
            "journeys_worker_ingested_events",
            "Valid events forwarded to the journey stage",
            lambda: state.counters["ingested"],
        ),
        (
            "journeys_worker_invalid_events",
            "Input sent to dead letters",
            lambda: state.counters["invalid"],
        ),
        (
            "journeys_stage_owned",
            "1 while this worker runs the identity stage",
            lambda: 1.0 if state.identity is not None else 0.0,
        ),
        (
            "journeys_partitions_owned",
            "Journey partitions this worker runs",
            lambda: len(state.journeys),
        ),
        (
            "journeys_partition_commands",
            "Commands applied by this worker's journey partitions since they were opened",
            lambda: sum(stage.commands for stage in list(state.journeys.values())),
        ),
        (
            "journeys_partition_journeys_in_memory",
            "Journeys this worker's journey partitions hold in memory (the others wait in "
            "RocksDB, see JOURNEYS_STATE_CACHE)",
            lambda: sum(len(stage.engine.holders) for stage in list(state.journeys.values())),
        ),
        (
            "journeys_partition_journeys_read_back",
            "Journeys read back from RocksDB by this worker's journey partitions since they "
            "were opened (many per event: JOURNEYS_STATE_CACHE is small for the active ones)",
            lambda: sum(stage.engine.loads for stage in list(state.journeys.values())),
        ),
        (
            "journeys_partitions_generation",
            "The oldest generation of derived rows (`journeys rebuild`) this worker's journey "
            "partitions hold",
            lambda: min(
                (stage.engine.config.generation for stage in list(state.journeys.values())),
                default=0,
            ),
        ),
        (
            "journeys_stage_released_events",
            "Events routed in event-time order",
            stage(lambda s: s.stats.released),
        ),
        (
            "journeys_stage_redelivered_events",
            "Source messages forwarded again (after a restart or rebalance) and dropped",
            stage(lambda s: s.stats.redelivered),
        ),
        (
            "journeys_stage_suppressed_events",
            "Events of erased people dropped by the identity stage (`journeys forget`)",
            stage(lambda s: s.stats.suppressed),
        ),
        (
            "journeys_stage_late_events",
            "Events behind the watermark (routed at once, corrected their journeys)",
            stage(lambda s: s.stats.late),
        ),
        (
            "journeys_stage_buffered_events",
            "Events waiting for the watermark",
            stage(lambda s: len(s.sequencer)),
        ),
        (
            "journeys_stage_event_time_lag_seconds",
            "Latest event time seen less event time applied",
            stage(_event_time_lag),
        ),
        (
            "journeys_stage_input_offset",
            "Input offset reflected in the identity stage's saved state",
            stage(lambda s: s.offset),
        ),
    )
    for name, doc, read in gauges:
        _gauge(registry, name, doc, read)
    _withheld_gauges(registry, state.counters)
    _health_gauges(registry, "journeys_worker", state)
    return registry


#: Why ingest withholds valid events (`journeys.schemas.privacy.Reason`).
WITHHELD = ("suppressed", "consent_dropped", "consent_anonymised")


def _withheld_gauges(registry: CollectorRegistry, counters: dict[str, int]) -> None:
    """Valid events the privacy gate withheld at ingest, by reason (the worker's counters
    under the reason's name)."""
    gauge = Gauge(
        "journeys_worker_withheld_events",
        "Valid events the privacy gate dropped or anonymised (consent, suppression list)",
        ["reason"],
        registry=registry,
    )
    for reason in WITHHELD:
        gauge.labels(reason).set_function(functools.partial(_counted, counters, reason))


def _counted(counters: dict[str, int], name: str) -> float:
    return float(counters.get(name, 0))


def _event_time_lag(stage: Any) -> float:
    if stage.clock <= 0 or stage.max_ts <= 0:
        return 0.0
    return max(0.0, (stage.max_ts - stage.clock) / 1000)


def sink_registry(progress: Any) -> CollectorRegistry:
    """The sink's rows and batches written, the age of its last write, and its health."""
    registry = CollectorRegistry()
    _gauge(
        registry,
        "journeys_sink_rows_written",
        "Rows written to ClickHouse",
        lambda: progress.rows,
    )
    _gauge(
        registry,
        "journeys_sink_batches_written",
        "Batches written and committed",
        lambda: progress.batches,
    )
    _gauge(
        registry,
        "journeys_sink_seconds_since_last_write",
        "Seconds since the last committed batch",
        lambda: time.monotonic() - progress.last_write_at if progress.last_write_at else -1.0,
    )
    _health_gauges(registry, "journeys_sink", progress)
    return registry


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base's name)
        """Requests are not logged."""


def health_app(registry: CollectorRegistry, status: Status) -> Callable[..., Any]:
    """A WSGI app: `/health` answers from `status`, every other path the metrics."""
    metrics = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if environ.get("PATH_INFO") == "/health":
            problem = status.problem
            code = "200 OK" if problem is None else "503 Service Unavailable"
            body = ("ok" if problem is None else f"unhealthy: {problem}").encode() + b"\n"
            start_response(code, [("Content-Type", "text/plain; charset=utf-8")])
            return [body]
        return metrics(environ, start_response)

    return app


def serve(registry: CollectorRegistry, status: Status, port: int) -> Any:
    """Serve metrics and /health on `port` from a background thread (0: do nothing).

    Returns the server (its `shutdown()` stops it), or None.
    """
    if not port:
        return None
    server = make_server(
        "0.0.0.0", port, health_app(registry, status), ThreadingWSGIServer, handler_class=_Quiet
    )
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server
