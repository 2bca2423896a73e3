"""Streaming commands: `worker`, `sink`, and `run` which starts both kinds."""

from __future__ import annotations

import signal
from types import FrameType

import click

from journeys.cmd_read import READ_LIMIT_SETTINGS
from journeys.options import settings_options
from journeys.schemas.settings import Settings

KAFKA_SETTINGS = (
    "kafka_bootstrap",
    "topic_prefix",
    "topic_partitions",
    "topic_retention",
    "erase_within",
    "kafka_session_timeout",
)
ENGINE_SETTINGS = (
    "rules_file",
    "cart_abandon_after",
    "deal_stall_after",
    "allowed_lateness",
    "visitor_ttl",
    "dedupe_window",
    "reorder_factor",
    "journey_partitions",
)
CLICKHOUSE_SETTINGS = ("clickhouse_url", "clickhouse_database", "retention")
#: Consent and the suppression list, which a worker's ingest applies.
PRIVACY_SETTINGS = ("consent_category", "consent_mode", "privacy_salt")
#: What the derived views in ClickHouse read (written by each process that writes the database).
DERIVED_SETTINGS = ("attribution_lookback", "attribution_half_life")
READ_SETTINGS = ("read_host", "read_port", "read_user", "read_password", *READ_LIMIT_SETTINGS)
ALERT_SETTINGS = (
    "alert_webhooks",
    "alert_webhook_secret",
    "alert_retry_max",
    "alert_give_up_after",
    "alert_allow_private",
)
IDLE_AFTER = click.option(
    "--idle-after",
    default=2.0,
    show_default=True,
    type=float,
    help="Seconds an input partition must be caught up and quiet before it stops holding "
    "event time back [env: JOURNEYS_IDLE_AFTER]",
    envvar="JOURNEYS_IDLE_AFTER",
)


@click.command()
@IDLE_AFTER
@click.option("--loglevel", default="warning", show_default=True, help="Faust's log level.")
@settings_options(
    "data_dir", "metrics_port", "state_cache", *KAFKA_SETTINGS, *ENGINE_SETTINGS, *PRIVACY_SETTINGS
)
def worker(idle_after: float, loglevel: str, settings: Settings) -> None:
    """One Faust worker: validates input, runs the journey stage when it owns it."""
    from journeys.processes import run_worker

    run_worker(settings, idle_after, loglevel)


@click.command()
@settings_options(
    "data_dir",
    "metrics_port",
    *KAFKA_SETTINGS,
    *CLICKHOUSE_SETTINGS,
    *DERIVED_SETTINGS,
    *READ_SETTINGS,
)
def sink(settings: Settings) -> None:
    """Write the pipeline's output topics to ClickHouse (one per embedded database)."""
    from journeys.processes import run_sink

    run_sink(settings)


@click.command()
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Faust worker processes [env: JOURNEYS_WORKERS]",
    envvar="JOURNEYS_WORKERS",
)
@IDLE_AFTER
@settings_options(
    "data_dir",
    "metrics_port",
    *KAFKA_SETTINGS,
    *CLICKHOUSE_SETTINGS,
    *DERIVED_SETTINGS,
    *ENGINE_SETTINGS,
    *READ_SETTINGS,
    *ALERT_SETTINGS,
    *PRIVACY_SETTINGS,
)
def run(workers: int, idle_after: float, settings: Settings) -> None:
    """The whole streaming pipeline on this machine, until Ctrl-C or SIGTERM: N workers,
    the sink (serving reads of the embedded engine on the read port) and, when webhooks
    are configured, the alert notifier.

    A process that exits is started again (with backoff), so outages of Kafka
    or ClickHouse are waited out.
    """
    from journeys.processes import settings_env, start_processes, stop_processes, supervise
    from journeys.producers.topics import ensure_pipeline_topics

    ensure_pipeline_topics(settings)
    env = {**settings_env(settings), "JOURNEYS_IDLE_AFTER": str(idle_after)}
    processes = start_processes(workers, env)
    click.echo(f"running {workers} worker(s) and the sink; Ctrl-C to stop", err=True)
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        supervise(processes, lambda: stopping, say=lambda line: click.echo(line, err=True))
    finally:
        stop_processes(processes)


COMMANDS: list[click.Command] = [worker, sink, run]
