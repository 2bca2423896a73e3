"""Commands that need no broker: schema, rules, replay, demo."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import orjson

from journeys.options import settings_options
from journeys.schemas.event import event_json_schema
from journeys.schemas.record import format_ms
from journeys.schemas.settings import Settings
from journeys.streams import replay as replaying
from journeys.streams.config import engine_config
from journeys.streams.engine.rules import default_rules_text
from journeys.streams.replay import ReplaySummary

ENGINE_SETTINGS = (
    "rules_file",
    "cart_abandon_after",
    "deal_stall_after",
    "visitor_ttl",
    "dedupe_window",
    "reorder_factor",
    "journey_partitions",
)
CLICKHOUSE_SETTINGS = ("data_dir", "clickhouse_url", "clickhouse_database")


@click.command()
def schema() -> None:
    """Print the event's JSON Schema, for producers in other languages."""
    click.echo(orjson.dumps(event_json_schema(), option=orjson.OPT_INDENT_2).decode())


@click.command()
def rules() -> None:
    """Print the built-in phase rules (a starting point for --rules FILE)."""
    click.echo(default_rules_text(), nl=False)


def _open_sink(settings: Settings) -> Any:
    from journeys.sinks.background import BackgroundSink
    from journeys.sinks.clickhouse.derived import derived_values, write_derived_settings
    from journeys.sinks.clickhouse.retention import follow_retention_setting
    from journeys.sinks.clickhouse.writer import ClickHouseSink

    writer = ClickHouseSink(
        settings.clickhouse_dsn, settings.clickhouse_database, batch_rows=20_000
    )
    sink = BackgroundSink(writer)
    sink.setup()
    write_derived_settings(writer.client, settings.clickhouse_database, derived_values(settings))
    follow_retention_setting(writer.client, settings)
    return sink


def replay_files(files: tuple[str, ...], settings: Settings, quiet: bool = False) -> ReplaySummary:
    """Replay JSONL files (`-` is stdin) into ClickHouse, with progress on stderr."""
    for name in files:
        if name != "-" and not Path(name).is_file():
            raise click.BadParameter(f"no such file: {name}", param_hint="FILE")
    started = time.monotonic()
    size = sum(Path(name).stat().st_size for name in files if name != "-")
    from journeys.privacy_service import replay_gate

    progress = Progress(show=not quiet and _on_terminal())
    sink = _open_sink(settings)
    try:
        progress.stage("replaying", size)
        summary = replaying.replay(
            _all_lines(files),
            sink,
            _live_config(settings),
            received_at=int(time.time() * 1000),
            on_line=progress.update,
            on_events=progress.update,
            on_stage=progress.stage,
            partitions=settings.journey_partitions,
            spill_dir=_spill_dir(settings),
            gate=replay_gate(settings),
            jobs=settings.replay_jobs,
        )
    finally:
        try:
            sink.close()
        finally:
            progress.close()
    if not quiet:
        _print_summary(summary, time.monotonic() - started, _current(settings))
    return summary


def _live_config(settings: Settings) -> Any:
    """The engine's settings, writing into the database's live generation (the one the
    `_current` views show; see `journeys rebuild`)."""
    from dataclasses import replace

    from journeys.sinks.clickhouse.client import connect
    from journeys.sinks.clickhouse.generations import live_generation

    client = connect(settings.clickhouse_dsn)
    generation = live_generation(client, settings.clickhouse_database)
    return replace(engine_config(settings), generation=generation)


def _on_terminal() -> bool:
    """Whether stderr is a terminal (progress is drawn only there)."""
    return sys.stderr.isatty()


class Progress:
    """The replay's progress on stderr, one bar per stage: the bytes read, then the events
    through the journey engine (their rows handed to the writer as they go), then a line
    while the last writes are waited for. Hidden when `show` is false."""

    def __init__(self, show: bool) -> None:
        self.show = show
        self._bar: Any = None

    def stage(self, label: str, total: int) -> None:
        """Start the bar of a new stage (`total` units to go; 0 for an open-ended one)."""
        self.close()
        if self.show and total <= 0:
            click.echo(f"{label}…", err=True)
            return
        self._bar = click.progressbar(
            length=max(total, 1), label=label, file=sys.stderr, hidden=not self.show
        )
        self._bar.__enter__()

    def update(self, done: int) -> None:
        """`done` more units of the current stage."""
        if self._bar is not None:
            self._bar.update(done)

    def close(self) -> None:
        """Finish the current bar, if any."""
        if self._bar is not None:
            bar, self._bar = self._bar, None
            bar.__exit__(None, None, None)


def _spill_dir(settings: Settings) -> Path:
    """Where a large replay sorts its events: inside the data dir (private), not /tmp,
    which may be memory."""
    path = Path(settings.data_dir)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def _all_lines(files: tuple[str, ...]) -> Iterator[replaying.Line]:
    """The lines of every file in turn, `-` being stdin, each with its position
    (`stdin:N`, or the file's absolute path and line number), read in bounded memory."""
    for name in files:
        if name == "-":
            yield from replaying.read_lines(sys.stdin.buffer, "stdin")
        else:
            path = Path(name)
            with path.open("rb") as handle:
                yield from replaying.read_lines(handle, str(path.resolve()))


def _current(settings: Settings) -> dict[str, int]:
    """Current rows per table after the replay (what the views and the summary count)."""
    from journeys.report import current_counts
    from journeys.sinks.clickhouse.client import connect

    return current_counts(connect(settings.clickhouse_dsn), settings.clickhouse_database)


def _print_summary(summary: ReplaySummary, seconds: float, current: dict[str, int]) -> None:
    rate = summary.lines / seconds if seconds > 0 else 0.0
    span = (
        f"{format_ms(summary.first_ts)} .. {format_ms(summary.last_ts)}"
        if summary.first_ts is not None and summary.last_ts is not None
        else "no events"
    )
    click.echo(
        f"replayed {summary.lines} lines in {seconds:.1f}s ({rate:,.0f} lines/s): "
        f"{summary.events} events, {summary.duplicates} duplicates, "
        f"{summary.invalid} dead letters, {summary.accounts} accounts, "
        f"{summary.transitions} transition rows written; event time {span}",
        err=True,
    )
    superseded = (
        "; the other rows written are earlier versions, superseded when a visitor or domain "
        "turned out to belong to an account and its journey was recomputed"
        if summary.transitions != current["phase_transitions"]
        else ""
    )
    click.echo(
        f"  in the database now: {current['phase_transitions']} transitions{superseded}; "
        f"{current['alerts']} alerts ({current['open_alerts']} open)",
        err=True,
    )
    for reason, count in sorted(summary.reasons.items(), key=lambda kv: -kv[1]):
        click.echo(f"  dead letters: {count} x {reason}", err=True)
    for reason, count in sorted(summary.withheld.items()):
        click.echo(f"  withheld (docs/privacy.md): {count} x {reason}", err=True)


@click.command()
@click.argument("files", nargs=-1, required=True)
@click.option("-q", "--quiet", is_flag=True, help="No progress bar and no summary.")
@settings_options(
    *CLICKHOUSE_SETTINGS, *ENGINE_SETTINGS, "attribution_lookback", "attribution_half_life",
    "retention", "consent_category", "consent_mode", "privacy_salt", "replay_jobs",
)  # fmt: skip
def replay(files: tuple[str, ...], quiet: bool, settings: Settings) -> None:
    """Run the journey logic over JSONL FILES (- for stdin) and write everything to ClickHouse.

    The input is sorted into event-time order, so the result does not depend on
    the order of lines; replaying the same input twice leaves the same tables.
    Journeys are kept in JOURNEYS_JOURNEY_PARTITIONS partitions, as the streaming
    workers keep them (the tables are the same for any number); --jobs N runs them
    in N processes (at least N partitions), the identity router in this one.
    """
    replay_files(files, settings, quiet)


@click.command()
@settings_options(*CLICKHOUSE_SETTINGS)
def migrate(settings: Settings) -> None:
    """Create or upgrade the ClickHouse schema (the sink and replay also do this on start)."""
    from journeys.sinks.clickhouse.client import connect
    from journeys.sinks.clickhouse.migrate import migrate as apply

    applied = apply(connect(settings.clickhouse_dsn), settings.clickhouse_database)
    click.echo(f"applied {', '.join(applied)}" if applied else "schema is up to date")


COMMANDS: list[click.Command] = [schema, rules, replay, migrate]
