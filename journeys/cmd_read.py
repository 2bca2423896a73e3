"""Commands that read the pipeline's database: `report`, `query`, `account`.

They read while the pipeline runs: with the embedded engine held by a sink,
they go through its read-only endpoint (see `journeys.sinks.report.source`).
"""

from __future__ import annotations

import csv
import sys
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import click
import orjson

from journeys.options import settings_options
from journeys.schemas.settings import Settings
from journeys.sinks.report.account import credited_lines, value_line

READ_SETTINGS = (
    "data_dir",
    "clickhouse_url",
    "clickhouse_database",
    "read_host",
    "read_port",
    "read_user",
)
#: What the read endpoint allows one query and the whole endpoint (`run` serves it too).
READ_LIMIT_SETTINGS = (
    "read_max_memory",
    "read_max_execution_time",
    "read_max_result_rows",
    "read_max_result_bytes",
    "read_max_queries",
    "read_max_connections",
)
ENDPOINT_SETTINGS = (
    "data_dir",
    "clickhouse_database",
    "read_host",
    "read_port",
    "read_user",
    *READ_LIMIT_SETTINGS,
)
CELL_CHARS = 60


def _reader(settings: Settings) -> Any:
    from journeys.sinks.report.source import open_reader, require_database

    client = open_reader(settings)
    require_database(client, settings.clickhouse_database)
    return client


@click.command()
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("journey-map.html"),
    show_default=True,
    help="Where to write the page.",
)
@settings_options(*READ_SETTINGS, "rules_file")
def report(output: Path, settings: Settings) -> None:
    """Write the journey map: one self-contained HTML file that opens with no network.

    Phase funnel, a Sankey of transitions, time in phase, touchpoints per
    phase and channel, DMU coverage and open alerts, filtered by segment and
    period in the page. Phase names and order come from --rules.
    """
    from journeys.sinks.report.data import gather
    from journeys.sinks.report.html import render
    from journeys.streams.engine.rules import load_rules

    phases = list(load_rules(settings.rules_file).phases)
    rules = str(settings.rules_file) if settings.rules_file else "the default rules"
    data = gather(_reader(settings), settings.clickhouse_database, phases, rules)
    page = render(data)
    output.write_text(page, "utf-8")
    click.echo(
        f"wrote {output} ({len(page.encode()) / 1e6:.1f} MB): "
        f"{len(data['accounts']['id']):,} accounts, "
        f"{len(data['transitions']['at']):,} transitions, {len(data['alerts']):,} open alerts; "
        "open it in any browser",
        err=True,
    )


def _plain(value: Any) -> Any:
    """A value as JSON or CSV shows it: times in ISO 8601 UTC, bytes as text."""
    if isinstance(value, datetime):
        text = value.isoformat(timespec="milliseconds")
        return text + "Z" if value.tzinfo is None else text
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"  # the table is for reading; --json and --csv carry every digit
    value = _plain(value)
    text = (
        ""
        if value is None
        else (orjson.dumps(value).decode() if isinstance(value, list | dict) else str(value))
    )
    text = text.replace("\n", " ")
    return text if len(text) <= CELL_CHARS else text[: CELL_CHARS - 1] + "…"


def print_table(names: list[str], rows: list[Any], count: bool = True) -> None:
    """Rows as aligned columns, numbers to the right; long cells shortened."""
    cells = [[_cell(v) for v in row] for row in rows]
    numeric = [
        all(isinstance(row[i], int | float | Decimal) for row in rows) and bool(rows)
        for i in range(len(names))
    ]
    widths = [max([len(n)] + [len(row[i]) for row in cells]) for i, n in enumerate(names)]

    def line(values: list[str]) -> str:
        return "  ".join(
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(values, widths, numeric, strict=True)
        ).rstrip()

    click.echo(line(names))
    click.echo(line(["─" * w for w in widths]))
    for row in cells:
        click.echo(line(row))
    if count:
        click.echo(f"({len(rows)} row{'s' if len(rows) != 1 else ''})", err=True)


@click.command()
@click.argument("sql")
@click.option("--json", "as_json", is_flag=True, help="A JSON array of objects.")
@click.option("--csv", "as_csv", is_flag=True, help="CSV with a header line.")
@settings_options(*READ_SETTINGS)
def query(sql: str, as_json: bool, as_csv: bool, settings: Settings) -> None:
    """Run one read-only SQL statement (- reads it from stdin) and print the result.

    Tables and views resolve in the configured database, so
    `journeys query "SELECT phase, count() FROM journeys_current GROUP BY phase"`
    works as typed. Only SELECT, WITH, SHOW, DESCRIBE, EXISTS and EXPLAIN run.
    """
    from clickhouse_connect.driver.exceptions import ClickHouseError

    from journeys.sinks.clickhouse.sql_guard import refusal

    if as_json and as_csv:
        raise click.UsageError("choose one of --json and --csv")
    text = sys.stdin.read() if sql == "-" else sql
    reason = refusal(text)
    if reason:
        raise click.UsageError(reason)
    client = _reader(settings)
    client.database = settings.clickhouse_database
    try:
        result = client.query(text)
    except ClickHouseError as exc:
        raise click.ClickException(f"ClickHouse refused the query: {_first_line(exc)}") from exc
    names = list(result.column_names)
    rows = result.result_rows
    if as_json:
        objects = [dict(zip(names, (_plain(v) for v in row), strict=True)) for row in rows]
        click.echo(orjson.dumps(objects, option=orjson.OPT_INDENT_2).decode())
    elif as_csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(names)
        for row in rows:
            writer.writerow([_csv(v) for v in row])
    else:
        print_table(names, rows)


def _first_line(exc: Exception) -> str:
    text = str(exc)
    start = text.find("Code: ")
    text = text[start:] if start >= 0 else text
    return text.split("\n", 1)[0].split(" (for url ", 1)[0].strip()


def _csv(value: Any) -> Any:
    value = _plain(value)
    return orjson.dumps(value).decode() if isinstance(value, list | dict) else value


@click.command()
@click.argument("account_id")
@click.option(
    "--events",
    "recent",
    default=20,
    show_default=True,
    type=click.IntRange(0, 10_000),
    help="How many of the latest events to list.",
)
@click.option("--json", "as_json", is_flag=True, help="Everything as one JSON object.")
@settings_options(*READ_SETTINGS)
def account(account_id: str, recent: int, as_json: bool, settings: Settings) -> None:
    """One account's journey: phase, transitions, channels, contacts and DMU roles, alerts.

    ACCOUNT_ID may also be an alias: an email domain merged into an ERP
    account, a contact id, an email or an anonymous id.
    """
    from journeys.sinks.report.account import account_timeline

    timeline = account_timeline(_reader(settings), settings.clickhouse_database, account_id, recent)
    if timeline is None:
        raise click.ClickException(
            f"no account or alias {account_id!r} in database {settings.clickhouse_database}; "
            '`journeys query "SELECT account_id FROM journeys_current LIMIT 20"` lists some'
        )
    if as_json:
        click.echo(orjson.dumps(timeline, option=orjson.OPT_INDENT_2).decode())
        return
    _print_account(timeline)


def _print_account(t: dict[str, Any]) -> None:
    j = t["journey"]
    if t["resolved"]:
        click.echo(f"({t['resolved']})")
    click.echo(f"account {t['account_id']}  ·  segment {j['segment'] or '-'}")
    click.echo(
        f"  phase {j['phase']} since {j['phase_since']}; first seen {j['first_seen']}, "
        f"last seen {j['last_seen']}, last activity {j['last_activity'] or '-'}"
    )
    click.echo(
        f"  {j['events']} events, {j['contacts']} contacts, "
        f"DMU roles: {', '.join(j['dmu_roles']) or 'none'}"
    )
    click.echo(value_line(t))
    click.echo("\ntransitions")
    for tr in t["transitions"]:
        click.echo(
            f"  {tr['at']}  {tr['from_phase'] or '(start)':>13} → {tr['to_phase']:<14} "
            f"by {tr['channel']}/{tr['event_type']}"
        )
        for line in credited_lines(tr):
            click.echo(line)
    click.echo("\nevents by channel")
    print_table(
        ["channel", "type", "events", "first", "last"],
        [[c["channel"], c["type"], c["events"], c["first"], c["last"]] for c in t["channels"]],
        count=False,
    )
    click.echo("\ncontacts")
    print_table(
        ["contact", "email", "dmu roles", "events", "first", "last"],
        [
            [
                c["contact"],
                "" if c["email"] == c["contact"] else c["email"] or "",
                ", ".join(c["dmu_roles"]),
                c["events"],
                c["first"],
                c["last"],
            ]
            for c in t["contacts"]
        ],
        count=False,
    )
    click.echo("\nalerts")
    if not t["alerts"]:
        click.echo("  none")
    for a in t["alerts"]:
        end = f", resolved {a['resolved_at']}" if a["resolved_at"] else ""
        click.echo(f"  {a['raised_at']}  {a['kind']:<16} {a['status']}{end}  {a['details']}")
    if t["recent_events"]:
        click.echo(f"\nlatest {len(t['recent_events'])} events")
        for e in t["recent_events"]:
            role = f" ({e['dmu_role']})" if e["dmu_role"] else ""
            click.echo(f"  {e['at']}  {e['channel']:<6} {e['type']:<20} {e['contact'] or ''}{role}")


@click.command("read-credentials")
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
@settings_options(*ENDPOINT_SETTINGS)
def read_credentials(as_json: bool, settings: Settings) -> None:
    """Print the read endpoint's URL, user and password, and the limits it applies.

    The password is JOURNEYS_READ_PASSWORD when set, else the one generated
    under the data dir on the sink's first start (generated now if there
    is none yet). Give these to Grafana, Metabase, Superset or
    clickhouse-connect (docs/bi.md)."""
    from journeys.sinks.clickhouse.read_access import read_access, read_limits

    access = read_access(settings)
    limits = read_limits(settings)
    shown = {
        "url": f"http://{settings.read_host}:{settings.read_port}",
        "user": access.user,
        "password": access.password.get_secret_value(),
        "database": settings.clickhouse_database,
        "max_memory_bytes": limits.max_memory,
        "max_execution_seconds": limits.max_execution_seconds,
        "max_result_rows": limits.max_result_rows,
        "max_result_bytes": limits.max_result_bytes,
        "max_concurrent_queries": limits.max_queries,
        "max_connections": limits.max_connections,
        "idle_timeout_seconds": limits.idle_timeout,
    }
    if not settings.read_port:
        click.echo("the read endpoint is off (JOURNEYS_READ_PORT=0)", err=True)
    if as_json:
        click.echo(orjson.dumps(shown, option=orjson.OPT_INDENT_2).decode())
        return
    for name, value in shown.items():
        click.echo(f"{name}: {value}")


COMMANDS: list[click.Command] = [report, query, account, read_credentials]
