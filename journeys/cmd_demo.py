"""`journeys demo`: simulate accounts, run them through the pipeline, show what matters first."""

from __future__ import annotations

import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any

import click

from journeys.options import settings_options
from journeys.schemas.errors import InvalidEvent, JourneysError
from journeys.schemas.event import parse_event
from journeys.schemas.settings import Settings


@click.command()
@click.option("--accounts", default=300, show_default=True, help="Simulated companies.")
@click.option("--days", default=120, show_default=True, help="Days of history to simulate.")
@click.option("--seed", default=7, show_default=True, help="Simulation seed.")
@click.option(
    "--kafka/--no-kafka",
    "via_kafka",
    default=True,
    show_default=True,
    help="Stream through a local Kafka broker, or replay without one.",
)
@click.option("--workers", default=1, show_default=True, help="Faust workers (with --kafka).")
@settings_options(
    "data_dir",
    "kafka_bootstrap",
    "kafka_controller_port",
    "topic_partitions",
    "cart_abandon_after",
    "deal_stall_after",
    "rules_file",
    "attribution_lookback",
    "attribution_half_life",
)
def demo(
    accounts: int, days: int, seed: int, via_kafka: bool, workers: int, settings: Settings
) -> None:
    """Simulate B2B journeys, run them through the pipeline, print the summary.

    Data goes to a fresh embedded ClickHouse under DATA_DIR/demo, which stays
    there for you to query afterwards.
    """
    from journeys.producers.simulator import simulate

    home = settings.data_dir / "demo"
    if home.exists():
        shutil.rmtree(home)
    settings = settings.model_copy(
        update={
            "data_dir": home,
            "clickhouse_url": None,
            "topic_prefix": f"demo{int(time.time())}.",
        }
    )
    started = time.monotonic()
    lines = list(simulate(accounts=accounts, days=days, seed=seed))
    click.echo(f"simulated {len(lines):,} events of {accounts} accounts over {days} days", err=True)
    if not via_kafka:
        _through_replay(lines, settings)
        click.echo(f"done in {time.monotonic() - started:.1f}s\n", err=True)
        _report(settings)
        return
    from journeys.kafka_broker import broker_running, ensure_broker, stop_broker

    started_broker = not broker_running(settings)
    try:
        ensure_broker(settings)
    except JourneysError as exc:
        raise click.ClickException(
            f"{exc}\n(or run `journeys demo --no-kafka` to replay without Kafka)"
        ) from exc
    from journeys.processes import wait_processes

    processes: list[Any] = []
    try:
        _stream(lines, settings, workers, processes)
        click.echo(f"done in {time.monotonic() - started:.1f}s\n", err=True)
        _report(settings)  # while the workers shut down
    finally:
        wait_processes(processes)
        if started_broker:
            # Its data lives under the demo directory, which the next demo replaces.
            stop_broker(settings)


def _through_replay(lines: list[bytes], settings: Settings) -> None:
    from journeys.cmd_core import replay_files

    path = settings.data_dir / "simulated.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\n".join(lines) + b"\n")
    replay_files((str(path),), settings)


def _expected_events(lines: list[bytes]) -> int:
    ids = set()
    for line in lines:
        try:
            ids.add(parse_event(line).event_id)
        except InvalidEvent:
            pass
    return len(ids)


def _stream(lines: list[bytes], settings: Settings, workers: int, processes: list[Any]) -> None:
    """Produce, then run the workers (added to `processes`, asked to stop on the way out) and
    a sink in this process until everything is stored."""
    from journeys.processes import settings_env, start_processes, terminate_processes
    from journeys.producers.client import EventProducer
    from journeys.producers.topics import ensure_pipeline_topics
    from journeys.sinks.clickhouse.derived import derived_values, write_derived_settings
    from journeys.sinks.clickhouse.writer import ClickHouseSink
    from journeys.sinks.consumer import OutputConsumer

    ensure_pipeline_topics(settings)
    producer = EventProducer(settings)
    producer.start()
    try:
        producer.send_raw(lines)
    finally:
        producer.close()
    click.echo(f"produced {len(lines):,} events to {settings.topic('events')}", err=True)

    expected = _expected_events(lines)
    writer = ClickHouseSink(settings.clickhouse_dsn, settings.clickhouse_database)
    topic_sink = OutputConsumer(settings, writer)
    topic_sink.setup()
    write_derived_settings(writer.client, settings.clickhouse_database, derived_values(settings))
    thread = threading.Thread(target=topic_sink.run, name="sink", daemon=True)
    thread.start()
    processes += start_processes(
        workers, {**settings_env(settings), "JOURNEYS_IDLE_AFTER": "1"}, with_sink=False
    )
    try:
        _wait_until_settled(writer, settings, expected, processes)
    finally:
        terminate_processes(processes)
        topic_sink.stop()
        thread.join(timeout=30)


def _wait_until_settled(
    writer: Any, settings: Settings, expected: int, processes: list[Any]
) -> None:
    """Until every event is stored and nothing has been written for a few seconds."""
    from journeys.sinks.clickhouse.queries import table_counts

    client = writer.client
    last_change, last_seen = time.monotonic(), None
    while True:
        for process in processes:
            if process.poll() is not None:
                raise click.ClickException(f"a worker exited with {process.returncode}")
        counts = table_counts(client, settings.clickhouse_database)
        seen = tuple(sorted(counts.items()))
        if seen != last_seen:
            last_seen, last_change = seen, time.monotonic()
        stored = counts.get("events", 0)
        if sys.stderr.isatty():
            click.echo(
                f"\r  stored {stored:,}/{expected:,} events, {counts.get('alerts', 0):,} alerts ",
                err=True,
                nl=False,
            )
        if stored >= expected and (time.monotonic() - last_change > 4 or _drained(settings)):
            break
        if time.monotonic() - last_change > 120:
            raise click.ClickException(
                "the pipeline stopped making progress; see .journeys/demo logs"
            )
        time.sleep(0.5)
    if sys.stderr.isatty():
        click.echo("", err=True)


def _drained(settings: Settings) -> bool:
    """Whether nothing is left on its way to ClickHouse: the identity stage's last input is
    its drain (every event released, event time at the last one), and every consumer group
    of the demo's topics (the workers' and the sink's) has committed all it reads."""
    from kafka import KafkaConsumer, TopicPartition

    from journeys.producers.kafka import uncommitted
    from journeys.schemas.codec import DRAIN_JSON

    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False)
    try:
        ordered = TopicPartition(settings.topic("internal.ordered"), 0)
        end = consumer.end_offsets([ordered])[ordered]
        if end == 0:
            return False
        consumer.assign([ordered])
        consumer.seek(ordered, end - 1)
        polled = consumer.poll(timeout_ms=2000)
        last = [m.value for messages in polled.values() for m in messages]
        if not last or last[-1] != DRAIN_JSON:
            return False
        groups, behind = uncommitted(settings)
        return groups >= 2 and behind == 0
    except Exception:  # Kafka did not answer: the quiet period decides
        return False
    finally:
        consumer.close()


def _report(settings: Settings) -> None:
    from journeys.report import print_report
    from journeys.sinks.clickhouse.client import connect
    from journeys.streams.engine.rules import load_rules

    rules = load_rules(settings.rules_file)
    if settings.rules_file:
        click.echo(f"phases from {settings.rules_file}: {' → '.join(rules.phases)}\n")
    print_report(connect(settings.clickhouse_dsn), settings.clickhouse_database, rules.phases)
    home = Path(settings.data_dir).resolve()
    click.echo(
        f"\nThe data stays in {home}. Look at it with\n"
        f"  journeys report --data-dir {home}    (the journey map, one HTML file)\n"
        f'  journeys query --data-dir {home} "SELECT * FROM analytics_accounts_per_phase"\n'
        f"  journeys account --data-dir {home} ACCOUNT_ID\n"
        f"or any ClickHouse client: JOURNEYS_CLICKHOUSE_URL={settings.clickhouse_dsn} "
        f"(database {settings.clickhouse_database})"
    )


COMMANDS: list[click.Command] = [demo]
