"""Streaming commands: `worker`, `sink`, and `run` which starts both kinds."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from types import FrameType

import click

from journeys.options import settings_options
from journeys.schemas.durations import format_duration_ms
from journeys.schemas.errors import BrokerError
from journeys.schemas.settings import Settings

KAFKA_SETTINGS = ("kafka_bootstrap", "topic_prefix", "topic_partitions")
ENGINE_SETTINGS = ("rules_file", "cart_abandon_after", "deal_stall_after", "allowed_lateness", "visitor_ttl")
CLICKHOUSE_SETTINGS = ("clickhouse_url", "clickhouse_database")
DURATIONS = frozenset({"cart_abandon_after", "deal_stall_after", "allowed_lateness", "visitor_ttl"})


def source_partitions(settings: Settings) -> int:
    """Make sure the public topics exist; the events topic's partition count."""
    from journeys.producers.topics import ensure_topics

    public = {name: settings.topic_partitions for name in ("events", "transitions", "alerts", "dead-letters")}
    counts = ensure_topics(settings, {**public, "internal.ordered": 1, "internal.rows": 1})
    partitions = counts.get(settings.topic("events"), 0)
    if not partitions:
        raise BrokerError(f"topic {settings.topic('events')} has no partitions")
    return partitions


def run_worker(settings: Settings, idle_after: float, loglevel: str = "warning") -> None:
    """Run one Faust worker in the foreground until stopped."""
    from faust.worker import Worker

    from journeys.streams.app import create_app
    from journeys.streams.metrics import serve, worker_registry

    app = create_app(settings, source_partitions(settings), idle_after=idle_after)
    serve(worker_registry(app.journeys_runtime), settings.metrics_port)  # type: ignore[attr-defined]
    Worker(app, loglevel=loglevel, quiet=True, redirect_stdouts=False).execute_from_commandline()


@click.command()
@click.option("--idle-after", default=2.0, show_default=True, type=float,
              help="Seconds of silence after which an input partition stops holding event time "
              "back [env: JOURNEYS_IDLE_AFTER]", envvar="JOURNEYS_IDLE_AFTER")
@click.option("--loglevel", default="warning", show_default=True, help="Faust's log level.")
@settings_options("data_dir", "metrics_port", *KAFKA_SETTINGS, *ENGINE_SETTINGS)
def worker(idle_after: float, loglevel: str, settings: Settings) -> None:
    """One Faust worker: validates input, runs the journey stage when it owns it."""
    run_worker(settings, idle_after, loglevel)


def run_sink(settings: Settings) -> None:
    """Run the sink in the foreground until SIGINT/SIGTERM."""
    from journeys.sinks.clickhouse.writer import ClickHouseSink
    from journeys.sinks.consumer import TopicSink
    from journeys.streams.metrics import serve, sink_registry

    topic_sink = TopicSink(settings, ClickHouseSink(settings.clickhouse_dsn, settings.clickhouse_database))
    topic_sink.setup()
    serve(sink_registry(topic_sink.progress), settings.metrics_port)

    def stop(signum: int, frame: FrameType | None) -> None:
        topic_sink.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    topic_sink.run()


@click.command()
@settings_options("data_dir", "metrics_port", *KAFKA_SETTINGS, *CLICKHOUSE_SETTINGS)
def sink(settings: Settings) -> None:
    """Write the pipeline's output topics to ClickHouse (one per embedded database)."""
    run_sink(settings)


def start_processes(
    workers: int, extra_env: dict[str, str] | None = None, with_sink: bool = True
) -> list[subprocess.Popen[bytes]]:
    """Start N workers (and the sink) as child processes of this one."""
    env = {**os.environ, **(extra_env or {})}
    command = [sys.executable, "-m", "journeys"]
    port = int(env.get("JOURNEYS_METRICS_PORT", "0") or 0)

    def with_port(offset: int) -> dict[str, str]:  # one metrics port per process
        return {**env, "JOURNEYS_METRICS_PORT": str(port + offset)} if port else env

    processes = [subprocess.Popen([*command, "sink"], env=with_port(0))] if with_sink else []
    for i in range(workers):
        processes.append(subprocess.Popen([*command, "worker"], env=with_port(1 + i)))
    return processes


def stop_processes(processes: list[subprocess.Popen[bytes]], timeout: float = 20.0) -> None:
    """SIGTERM every process, then SIGKILL what is left after `timeout`."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for process in processes:
        try:
            process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@click.command()
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Faust worker processes [env: JOURNEYS_WORKERS]", envvar="JOURNEYS_WORKERS")
@settings_options("data_dir", "metrics_port", *KAFKA_SETTINGS, *CLICKHOUSE_SETTINGS, *ENGINE_SETTINGS)
def run(workers: int, settings: Settings) -> None:
    """The whole streaming pipeline on this machine, until Ctrl-C or SIGTERM."""
    source_partitions(settings)
    env = _settings_env(settings)
    processes = start_processes(workers, env)
    click.echo(f"running {workers} worker(s) and the sink; Ctrl-C to stop", err=True)
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        while not stopping:
            for process in processes:
                if process.poll() is not None:
                    raise click.ClickException(
                        f"process {process.args} exited with {process.returncode}; stopping the rest"
                    )
            time.sleep(0.5)
    finally:
        stop_processes(processes)


def _settings_env(settings: Settings) -> dict[str, str]:
    """Settings as JOURNEYS_* variables, so child processes see the flags given here."""
    env = {}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        if name in DURATIONS:
            value = format_duration_ms(value)
        env[f"JOURNEYS_{name.upper()}"] = str(value)
    return env


COMMANDS: list[click.Command] = [worker, sink, run]
