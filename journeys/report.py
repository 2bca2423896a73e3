"""The summary a user wants to see first: where accounts are, the funnel, speed, alerts,
and what moves accounts (attribution per channel, engagement tiers, the customer pyramid).

Counts are current rows (the `_current` views, or FINAL), in the phases of
the rules the data was made with. The parts that need a view the database does not
have yet are left out.
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
    print_moves(client, tables, phases)


def print_moves(client: Any, tables: Tables, phases: Sequence[str]) -> None:
    """Conversions credited per channel (linear model), engagement tiers, the customer pyramid."""
    db = tables.database
    if "analytics_attribution_by_channel" in tables.names:
        click.echo("\nwhat moves accounts (conversions credited per channel, linear model)")
        rows = select(
            client,
            f"SELECT to_phase, channel, conversions FROM {db}.analytics_attribution_by_channel "
            "WHERE model = 'linear' AND conversions > 0",
        )
        per_phase: dict[str, list[str]] = {}
        for phase, channel, conversions in rows:
            per_phase.setdefault(str(phase), []).append(f"{channel} {float(conversions):.1f}")
        for phase in [*phases, *(p for p in per_phase if p not in phases)]:
            if phase in per_phase:
                click.echo(f"  {phase:<14} " + " · ".join(per_phase[phase]))
    if "analytics_engagement" in tables.names:
        heat = dict(
            select(client, f"SELECT tier, count() FROM {db}.analytics_engagement GROUP BY tier")
        )
        click.echo("\nengagement (as of the latest event)")
        click.echo("  " + " · ".join(f"{t} {heat.get(t, 0)}" for t in ("hot", "warm", "cold")))
    if "analytics_customer_pyramid" in tables.names:
        click.echo("\ncustomer pyramid (last 12 months' order revenue)")
        for tier, accounts, revenue in select(
            client, f"SELECT tier, accounts, revenue FROM {db}.analytics_customer_pyramid"
        ):
            click.echo(f"  {tier:<10} {int(accounts):>6}  {float(revenue):>12,.0f}")
