"""The summary a user wants to see first: where accounts are, the funnel, speed, alerts."""

from __future__ import annotations

from typing import Any

import click

from journeys.sinks.clickhouse import queries
from journeys.streams.engine import load_rules


def _bar(count: int, total: int, width: int = 30) -> str:
    filled = round(width * count / total) if total else 0
    return "█" * filled + "·" * (width - filled)


def print_report(client: Any, database: str) -> None:
    """Print accounts per phase, the funnel, median days between phases and open alerts."""
    phases = list(load_rules().phases)
    counts = queries.table_counts(client, database)
    click.echo(
        f"stored: {counts.get('events', 0):,} events, {counts.get('journeys', 0):,} accounts, "
        f"{counts.get('phase_transitions', 0):,} transitions, {counts.get('alerts', 0):,} alerts, "
        f"{counts.get('dead_letters', 0):,} dead letters"
    )
    per_phase = dict(queries.accounts_per_phase(client, database))
    total = sum(per_phase.values())
    click.echo("\naccounts per phase")
    for phase in phases:
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
    open_alerts = queries.open_alerts(client, database)
    if not open_alerts:
        click.echo("  none")
    for kind, n in open_alerts:
        click.echo(f"  {kind:<16} {n:>6}")
