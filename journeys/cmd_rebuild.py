"""`journeys rebuild --rules FILE`: every derived table again, with new rules.

Journeys, transitions, alerts, attribution and engagement are derived from
the stored events by the phase rules. A rebuild derives them again with new
rules as a new *generation* (rows carry it; the `_current` views show the
newest generation every journey partition has reached), so readers switch
from the old tables to the new ones at once when the new ones are complete.

- With the pipeline running (default): the request goes to the workers
  through their sequenced input. Each journey partition folds every journey
  it holds again from its archive with the new rules, writes it under the
  new generation, reports, and goes on streaming with the new rules: events
  that arrive meanwhile end in the new generation too. Alerts the new rules
  raise, move or withdraw reach `journeys notify` as corrections; unchanged
  ones are not sent again. The command follows the progress; interrupting it
  stops only the following (the workers carry on), and the same command run
  again follows the same rebuild.
- `--no-kafka`, for a database built by `journeys replay` with no pipeline
  running: the stored events are replayed here with the new rules into the
  new generation. Interrupted, it leaves an incomplete generation nobody
  reads; run again, it starts a new one.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from journeys.options import settings_options
from journeys.schemas.errors import ConfigError
from journeys.schemas.record import EventRecord
from journeys.schemas.rows import GenerationRow, Output
from journeys.schemas.settings import Settings
from journeys.streams.engine.rules import rules_hash

#: How often the progress is read while the workers rebuild (seconds).
POLL_SECONDS = 1.0

_STORED_EVENTS = """
SELECT {columns}, account_id
FROM {db}.events FINAL
WHERE toYYYYMM(occurred_at) = {{month:UInt32}}
ORDER BY occurred_at, event_id
"""


def new_generation(client: Any, db: str) -> int:
    """A number above every generation reported: the request's Unix second, so a request
    the workers have not reported on yet is never given the same number again."""
    from journeys.sinks.clickhouse.generations import next_generation

    return max(next_generation(client, db), int(time.time()))


def pending_generation(client: Any, db: str, digest: str) -> int | None:
    """A generation with these rules that some partitions reported and is not live yet."""
    from journeys.sinks.clickhouse.client import select
    from journeys.sinks.clickhouse.generations import live_generation

    live = live_generation(client, db)
    rows = select(
        client,
        f"SELECT max(generation) FROM {db}.generations FINAL "
        "WHERE rules_hash = {digest:String} AND generation > {live:UInt32}",
        {"digest": digest, "live": live},
    )
    found = int(rows[0][0] or 0) if rows else 0
    return found or None


@click.command()
@click.option(
    "--rules",
    "rules_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The new phase rules (TOML; `journeys rules` prints the built-in ones).",
)
@click.option(
    "--kafka/--no-kafka",
    default=True,
    show_default=True,
    help="Ask the running workers (--no-kafka: replay the stored events here, for a "
    "database built by `journeys replay` with no pipeline running).",
)
@click.option(
    "--wait/--no-wait",
    default=True,
    show_default=True,
    help="Follow the workers' progress until the new generation is live.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    default=3600.0,
    show_default=True,
    help="Seconds to follow the workers (the rebuild goes on after).",
)
@settings_options(
    "data_dir", "clickhouse_url", "clickhouse_database", "kafka_bootstrap", "topic_prefix",
    "read_host", "read_port", "read_user",
    "cart_abandon_after", "deal_stall_after", "visitor_ttl", "dedupe_window", "reorder_factor",
    "journey_partitions",
)  # fmt: skip
def rebuild(rules_path: Path, kafka: bool, wait: bool, timeout: float, settings: Settings) -> None:
    """Derive journeys, transitions, alerts, attribution and engagement again from the
    stored events with new rules, as a new generation the `_current` views switch to at
    once when it is complete.

    With the pipeline running, the workers rebuild while they go on streaming, and
    alerts the new rules raise or withdraw are delivered as corrections. Interrupting
    this command stops only the progress display; run it again to follow the same
    rebuild. Use --no-kafka for a database built by `journeys replay`.
    """
    from journeys.streams.engine.rules import rules_from_text, rules_text

    text = rules_text(rules_path)
    try:
        rules_from_text(text, str(rules_path))
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    if kafka:
        _through_workers(text, wait, timeout, settings)
    else:
        _here(text, settings)


# ------------------------------------------------------------------ the running pipeline


def _through_workers(text: str, wait: bool, timeout: float, settings: Settings) -> None:
    from journeys.producers.control import publish_rebuild
    from journeys.sinks.report.source import open_reader

    db = settings.clickhouse_database
    digest = rules_hash(text)
    unattended = _no_sink_holds(settings)
    client = open_reader(settings)
    pending = pending_generation(client, db, digest)
    if pending is not None:
        generation = pending
        click.echo(f"generation {generation} with these rules is under way; following it", err=True)
    else:
        generation = new_generation(client, db)
        publish_rebuild(settings, generation, text)
        click.echo(f"asked the workers to rebuild as generation {generation}", err=True)
    if unattended:
        click.echo(
            "no running sink holds the embedded database, so nothing writes the new generation "
            "now: the workers rebuild when the pipeline runs (`journeys run`); run this command "
            "again then to follow it",
            err=True,
        )
        return
    if not wait:
        click.echo(f"follow it with the same command, or `journeys query \"SELECT * FROM {db}."
                   "generation_current\"`", err=True)  # fmt: skip
        return
    _follow(client, db, generation, timeout)


def _no_sink_holds(settings: Settings) -> bool:
    """Whether the database is embedded and no process holds it (no sink runs): following
    the progress from here would keep it from the sink that has to write it."""
    from journeys.sinks.clickhouse.client import is_open
    from journeys.sinks.clickhouse.errors import embedded_path, held_elsewhere

    dsn = settings.clickhouse_dsn
    if not dsn.startswith("chdb://") or is_open(dsn):
        return False
    return not held_elsewhere(embedded_path(dsn))


def _follow(client: Any, db: str, generation: int, timeout: float) -> None:
    """Print the partitions' progress until `generation` (or a newer one) is live."""
    from journeys.sinks.clickhouse.generations import generation_progress, live_generation

    deadline = time.monotonic() + timeout
    shown: tuple[int, int] | None = None
    try:
        while True:
            live = live_generation(client, db)
            done, total = generation_progress(client, db, generation)
            if (done, total) != shown and total:
                click.echo(f"  {done}/{total} journey partitions hold generation {generation}",
                           err=True)  # fmt: skip
                shown = (done, total)
            if live >= generation:
                break
            if time.monotonic() >= deadline:
                raise click.ClickException(
                    f"generation {generation} is not complete after {timeout:.0f}s; the workers "
                    "go on with it: run the same command again to follow it (are the workers "
                    "running? `journeys run`)"
                )
            time.sleep(POLL_SECONDS)
    except KeyboardInterrupt:
        click.echo(
            f"\nstopped following; the workers go on with generation {generation}: run the "
            "same command again to follow it",
            err=True,
        )
        raise SystemExit(130) from None
    if live > generation:
        click.echo(f"a newer generation ({live}) is live already", err=True)
        return
    _print_live(client, db, generation)


def _print_live(client: Any, db: str, generation: int) -> None:
    from journeys.report import current_counts

    counts = current_counts(client, db)
    click.echo(
        f"generation {generation} is live: {counts['journeys']} journeys, "
        f"{counts['phase_transitions']} transitions, {counts['alerts']} alerts "
        f"({counts['open_alerts']} open)",
        err=True,
    )


# ------------------------------------------------------------------ here, without Kafka


def stored_events(client: Any, db: str) -> Iterator[EventRecord]:
    """Every stored event (one per event_id), in event-time order, each naming the
    account it is stored under (none for a visitor never identified). Read a month (a
    partition of the events table) at a time, so memory holds one month."""
    from journeys.sinks.clickhouse.client import select
    from journeys.sinks.clickhouse.recompute import STORED_COLUMNS, stored_record

    months = select(
        client, f"SELECT DISTINCT toYYYYMM(occurred_at) AS m FROM {db}.events ORDER BY m"
    )
    query = _STORED_EVENTS.format(db=db, columns=STORED_COLUMNS)
    for (month,) in months:
        for r in select(client, query, {"month": int(month)}):
            yield stored_record(r, r[11] or None)


class _Derived:
    """A sink that passes on only derived rows: the events and identity links stay as
    they are stored."""

    def __init__(self, sink: Any) -> None:
        self._sink = sink

    def setup(self) -> None:
        """The inner sink is set up already."""

    def add(self, out: Output) -> None:
        """Buffer the derived rows of `out`."""
        self._sink.add(
            Output(
                transitions=out.transitions,
                journeys=out.journeys,
                alerts=out.alerts,
                generations=out.generations,
            )
        )

    def flush(self) -> None:
        """Write everything buffered."""
        self._sink.flush()

    def close(self) -> None:
        """Flush and let go of the inner sink."""
        self._sink.close()


def _here(text: str, settings: Settings) -> None:
    from journeys.cmd_core import Progress, _on_terminal, _open_sink
    from journeys.sinks.clickhouse.client import connect, select
    from journeys.streams.config import engine_config
    from journeys.streams.engine import JourneyEngine
    from journeys.streams.engine.rules import rules_from_text
    from journeys.streams.replay import ReplaySummary, run_engine

    started = time.monotonic()
    db = settings.clickhouse_database
    sink = _open_sink(settings)
    progress = Progress(show=_on_terminal())
    try:
        client = connect(settings.clickhouse_dsn)
        generation = new_generation(client, db)
        config = replace(
            engine_config(settings), rules=rules_from_text(text), generation=generation
        )
        total = int(select(client, f"SELECT uniqExact(event_id) FROM {db}.events")[0][0])
        progress.stage(f"rebuilding as generation {generation}", total)
        summary = ReplaySummary()
        engine = JourneyEngine(config, settings.journey_partitions)
        run_engine(stored_events(client, db), engine, _Derived(sink), summary, progress.update)
        progress.stage("writing", 0)
        sink.add(Output(generations=[GenerationRow(generation, 0, 1, rules_hash(text), text)]))
    finally:
        try:
            sink.close()
        finally:
            progress.close()
    click.echo(f"rebuilt {summary.events} events in {time.monotonic() - started:.1f}s", err=True)
    _print_live(client, db, generation)


COMMANDS: list[click.Command] = [rebuild]
