"""The pipeline's processes: a worker, the sink, and the supervisor that runs them together.

`run_worker` and `run_sink` are the bodies of `journeys worker` and
`journeys sink`; `start_processes`, `supervise` and `stop_processes` are what
`journeys run` (and `journeys demo`) do with them as child processes.
`supervise` restarts a child that exits on its own, with capped backoff, as
an orchestrator would: a worker stopped by a failed send reads its input
again, and an outage never ends the pipeline.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING

from journeys.schemas.durations import format_duration_ms, parse_duration_ms
from journeys.schemas.settings import Settings

if TYPE_CHECKING:
    from journeys.sinks.clickhouse.http_reader import ReadServer

log = logging.getLogger(__name__)


def _durations() -> frozenset[str]:
    """Settings that are durations (`DurationMs`), passed on in their written form (`4h`)."""
    return frozenset(
        name
        for name, spec in Settings.model_fields.items()
        if any(getattr(m, "func", None) is parse_duration_ms for m in spec.metadata)
    )


class Repeats(logging.Filter):
    """Lets a message (by logger and template) through once per `every` seconds.

    aiokafka logs every failed connection attempt, several times a second per
    connection, while a broker is down; one line per kind and interval tells
    the same.
    """

    def __init__(self, every: float = 30.0) -> None:
        super().__init__()
        self.every = every
        self._last: dict[tuple[str, object], float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        """Whether to emit this record."""
        key = (record.name, record.msg)
        now = time.monotonic()
        if now - self._last.get(key, -self.every) < self.every:
            return False
        self._last[key] = now
        return True


def quiet_driver_logs(prefix: str = "aiokafka", every: float = 30.0) -> None:
    """Install `Repeats` on every logger of a driver that is imported by now."""
    repeats = Repeats(every)
    for name in list(logging.root.manager.loggerDict):
        if name == prefix or name.startswith(prefix + "."):
            logging.getLogger(name).addFilter(repeats)


def run_worker(settings: Settings, idle_after: float, loglevel: str = "warning") -> None:
    """Run one Faust worker in the foreground until stopped."""
    import faust.transport.drivers.aiokafka  # noqa: F401 (its loggers, for quiet_driver_logs)
    from faust.worker import Worker

    from journeys.producers.suppressions import followed_gate
    from journeys.producers.topics import ensure_pipeline_topics
    from journeys.streams.app import create_app
    from journeys.streams.metrics import serve, worker_registry

    quiet_driver_logs()
    app = create_app(settings, ensure_pipeline_topics(settings), idle_after=idle_after)
    state = app.journeys_state  # type: ignore[attr-defined]
    # The whole suppression list is read before the first event is: a forgotten person's
    # events must not slip through a worker that has just started.
    state.gate, follower = followed_gate(settings)
    serve(worker_registry(state), state, settings.metrics_port)
    worker = Worker(app, loglevel=loglevel, quiet=True, redirect_stdouts=False)
    # Faust's start-up spinner writes terminal codes (hide and show the cursor) even when
    # the output is a log file or the terminal `journeys demo` prints its report to.
    worker.spinner = None
    try:
        worker.execute_from_commandline()
    finally:
        follower.close()


def run_sink(settings: Settings) -> None:
    """Run the sink in the foreground until SIGINT/SIGTERM, waiting out outages."""
    from journeys.sinks.clickhouse.writer import ClickHouseSink
    from journeys.sinks.consumer import OutputConsumer, Stopped
    from journeys.streams.metrics import serve, sink_registry

    writer = ClickHouseSink(settings.clickhouse_dsn, settings.clickhouse_database)
    consumer = OutputConsumer(settings, writer)
    serve(sink_registry(consumer.progress), consumer.progress, settings.metrics_port)

    def stop(signum: int, frame: FrameType | None) -> None:
        consumer.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        consumer.setup()
    except Stopped:
        return
    from journeys.sinks.clickhouse.retention import follow_retention_setting

    follow_retention_setting(writer.client, settings)
    from journeys.sinks.clickhouse.derived import derived_values, write_derived_settings

    write_derived_settings(writer.client, settings.clickhouse_database, derived_values(settings))
    reader = _serve_reads(settings)
    try:
        consumer.run()
    finally:
        if reader is not None:
            reader.close()


def _serve_reads(settings: Settings) -> ReadServer | None:
    """The read-only ClickHouse HTTP endpoint of the embedded engine this process holds.

    BI tools, scripts and `journeys query` read a running pipeline through it
    (one process at a time may open an embedded path). A server needs none.
    """
    from journeys.schemas.errors import ConfigError, SinkUnavailable
    from journeys.sinks.clickhouse.http_reader import serve_readonly
    from journeys.sinks.clickhouse.read_access import read_access, read_limits

    if not settings.read_port or not settings.clickhouse_dsn.startswith("chdb://"):
        return None
    try:
        reader = serve_readonly(
            settings.clickhouse_dsn,
            settings.read_host,
            settings.read_port,
            access=read_access(settings),
            database=settings.clickhouse_database,
            limits=read_limits(settings),
        )
    except (SinkUnavailable, ConfigError) as exc:  # must not put the sink in a crash loop
        log.warning("no read endpoint: %s", exc)
        return None
    log.info("read-only ClickHouse HTTP on %s (user %s)", reader.url, settings.read_user)
    return reader


def settings_env(settings: Settings) -> dict[str, str]:
    """Settings as JOURNEYS_* variables, so child processes see the flags given here."""
    env = {}
    durations = _durations()
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        if name in durations:
            value = format_duration_ms(value)
        env[f"JOURNEYS_{name.upper()}"] = str(value)
    return env


class Child(subprocess.Popen[bytes]):
    """A child process that remembers its environment, so it can be started again."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        super().__init__(args, env=env)
        self.command = args
        self.env = env
        self.kind = args[-1]

    def again(self) -> Child:
        """The same command in the same environment, started anew."""
        return Child(self.command, self.env)


def _command(kind: str) -> list[str]:
    return [sys.executable, "-m", "journeys", kind]


def start_processes(
    workers: int, extra_env: dict[str, str] | None = None, with_sink: bool = True
) -> list[Child]:
    """Start N workers (and the sink first) as child processes of this one, and the
    alert notifier when webhooks are configured (`JOURNEYS_ALERT_WEBHOOKS`).

    With `JOURNEYS_METRICS_PORT` set, the sink serves on that port and worker
    i on the port + 1 + i.
    """
    env = {**os.environ, **(extra_env or {})}
    port = int(env.get("JOURNEYS_METRICS_PORT", "0") or 0)

    def with_port(offset: int) -> dict[str, str]:
        return {**env, "JOURNEYS_METRICS_PORT": str(port + offset)} if port else env

    processes = [Child(_command("sink"), with_port(0))] if with_sink else []
    for i in range(workers):
        processes.append(Child(_command("worker"), with_port(1 + i)))
    if env.get("JOURNEYS_ALERT_WEBHOOKS", "").strip():
        processes.append(Child(_command("notify"), env))
    return processes


def supervise(
    processes: list[Child],
    stopping: Callable[[], bool],
    first_delay: float = 1.0,
    max_delay: float = 30.0,
    say: Callable[[str], None] = log.warning,
) -> int:
    """Keep the processes running until `stopping()`; the number of restarts.

    A child that exits is started again with the same command and environment
    after a delay that doubles with each exit in a row (up to `max_delay`) and
    starts over once the child has run for a minute.
    """
    restarts = 0
    delays = [first_delay] * len(processes)
    started = [time.monotonic()] * len(processes)
    due: dict[int, float] = {}
    while not stopping():
        now = time.monotonic()
        for i, process in enumerate(processes):
            if i in due:
                if now >= due[i]:
                    del due[i]
                    processes[i] = process.again()
                    started[i] = now
                    restarts += 1
                continue
            code = process.poll()
            if code is None:
                continue
            if now - started[i] > 60:
                delays[i] = first_delay
            say(
                f"journeys {process.kind} (pid {process.pid}) exited with {code}; "
                f"starting it again in {delays[i]:g}s"
            )
            due[i] = now + delays[i]
            delays[i] = min(max_delay, delays[i] * 2)
        time.sleep(0.2)
    return restarts


def stop_processes(processes: list[Child], timeout: float = 20.0) -> None:
    """SIGTERM every process, then SIGKILL what is left after `timeout`."""
    terminate_processes(processes)
    wait_processes(processes, timeout)


def terminate_processes(processes: list[Child]) -> None:
    """SIGTERM every process still running; `wait_processes` waits for them."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)


def wait_processes(processes: list[Child], timeout: float = 20.0) -> None:
    """Wait for processes asked to stop; SIGKILL what is left after `timeout`."""
    deadline = time.monotonic() + timeout
    for process in processes:
        try:
            process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
