"""The summary a user wants to see first: where accounts are, the funnel, speed, alerts.

Counts are current rows (the `_current` views, or FINAL), in the phases of
the rules the data was made with.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import click

from journeys.sinks.clickhouse import queries
from journeys.sinks.clickhouse.client import select
from journeys.sinks.report.source import Tables
from journeys.streams.engine.rules import load_rules

COUNTED = (
    ("events", "events"),
    ("journeys", "accounts"),
    ("phase_transitions", "transitions"),
    ("alerts", "alerts"),
    ("dead_letters", "dead letters"),
)


def _bar(count: int, total: int, width: int = 30) -> str:
    filled = round(width * count / total) if total else 0
    return "█" * filled + "·" * (width - filled)


def current_counts(client: Any, database: str) -> dict[str, int]:
    """Current rows per table: what plain SQL on the `_current` views counts."""
    tables = Tables(client, database)
    parts = " UNION ALL ".join(
        f"SELECT '{name}', count() FROM {tables.current(name)}" for name, _ in COUNTED
    )
    counts = {str(name): int(n) for name, n in select(client, parts)}
    counts["open_alerts"] = int(select(client, f"SELECT count() FROM {tables.open_alerts()}")[0][0])
    return counts


def print_report(client: Any, database: str, phases: Sequence[str] | None = None) -> None:
    """Print accounts per phase, the funnel, median days between phases and open alerts.

    `phases` are the rules' phases in order (the default rules' when None)."""
    phases = list(phases if phases is not None else load_rules().phases)
    counts = current_counts(client, database)
    click.echo("stored: " + ", ".join(f"{counts.get(t, 0):,} {label}" for t, label in COUNTED))
    per_phase = dict(queries.accounts_per_phase(client, database, phases))
    total = sum(per_phase.values())
    click.echo("\naccounts per phase")
    for phase in [*phases, *(p for p in per_phase if p not in phases)]:
        n = per_phase.get(phase, 0)
        click.echo(f"  {phase:<14} {n:>6}  {_bar(n, total)}")
    funnel = queries.funnel(client, database, phases)
    click.echo("\nfunnel (accounts that reached the phase or beyond)")
    top = funnel[0][1] if funnel else 0
    for phase, n in funnel:
        share = f"{100 * n / top:5.1f}%" if top else "    -"
        click.echo(f"  {phase:<14} {n:>6}  {share}  {_bar(n, top)}")
    click.echo("\nmedian days between phases")
    for from_phase, to_phase, days in queries.median_days_between_phases(client, database):
        click.echo(f"  {from_phase:>13} → {to_phase:<14} {days:6.1f} days")
    click.echo("\nopen alerts")
    tables = Tables(client, database)
    open_alerts = select(
        client, f"SELECT kind, count() FROM {tables.open_alerts()} GROUP BY kind ORDER BY kind"
    )
    if not open_alerts:
        click.echo("  none")
    for kind, n in open_alerts:
        click.echo(f"  {kind:<16} {n:>6}")
