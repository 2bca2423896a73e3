"""The ClickHouse schema and writer on the real embedded engine."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from journeys.schemas.rows import (
    AlertRow,
    DeadLetterRow,
    JourneyRow,
    Output,
    StoredEvent,
    TransitionRow,
)
from journeys.sinks.clickhouse.client import connect
from journeys.sinks.clickhouse.migrate import migrate, migration_files
from journeys.sinks.clickhouse.queries import (
    accounts_per_phase,
    funnel,
    median_days_between_phases,
    open_alerts,
    snapshot,
    table_counts,
)
from journeys.sinks.clickhouse.writer import ClickHouseSink
from tests.unit.engine.journey import ev

pytestmark = pytest.mark.integration


def sink(dsn: str, name: str) -> ClickHouseSink:
    writer = ClickHouseSink(dsn, name)
    writer.setup()
    return writer


def test_migrations_are_idempotent(chdb_dsn: str, database_name: Callable[[str], str]) -> None:
    client, name = connect(chdb_dsn), database_name("m")
    assert migrate(client, name) == [n for n, _ in migration_files()]
    assert migrate(client, name) == []
    tables = {
        r[0]
        for r in client.query(
            "SELECT name FROM system.tables WHERE database = {d:String}", parameters={"d": name}
        ).result_rows
    }
    assert {
        "events",
        "phase_transitions",
        "journeys",
        "alerts",
        "dead_letters",
        "identity_links",
        "journeys_current",
        "open_alerts",
    } <= tables


def test_same_rows_twice_are_one_row_and_newer_versions_win(
    chdb_dsn: str, database_name: Callable[[str], str]
) -> None:
    name = database_name("w")
    writer = sink(chdb_dsn, name)
    out = Output(
        events=[StoredEvent(ev("page_view", 0, event_id="e1", email="a@acme.nl"), "acme.nl")],
        transitions=[TransitionRow("acme.nl", None, "awareness", 1, "e1", "page_view", "web", 1)],
        journeys=[JourneyRow("acme.nl", "awareness", 1, 1, 1, 1, 1, 1, ("buyer",), None, 1)],
        alerts=[AlertRow("al_1", "cart_abandoned", "acme.nl", 5, "{}", 1)],
        dead_letters=[DeadLetterRow("dl_1", 9, "invalid JSON", b"{oops", "file:3")],
    )
    for _ in range(2):
        writer.add(out)
        writer.flush()
    assert table_counts(writer.client, name) == {
        "events": 1,
        "phase_transitions": 1,
        "journeys": 1,
        "alerts": 1,
        "dead_letters": 1,
        "identity_links": 0,
    }
    writer.add(
        Output(
            journeys=[JourneyRow("acme.nl", "decision", 7, 1, 7, 7, 2, 1, ("buyer",), None, 2)],
            alerts=[AlertRow("al_1", "cart_abandoned", "acme.nl", 5, "{}", 2, resolved_at=8)],
            transitions=[
                TransitionRow(
                    "acme.nl", None, "awareness", 1, "e1", "page_view", "web", 3, deleted=True
                )
            ],
        )
    )
    writer.flush()
    snap = snapshot(writer.client, name)
    assert [j["phase"] for j in snap["journeys"]] == ["decision"]
    assert snap["phase_transitions"] == []
    assert open_alerts(writer.client, name) == []
    assert (
        snap["dead_letters"][0]["payload"] == b"{oops"
        or snap["dead_letters"][0]["payload"] == "{oops"
    )


def test_queries_on_hand_built_journeys(chdb_dsn: str, database_name: Callable[[str], str]) -> None:
    name = database_name("q")
    writer = sink(chdb_dsn, name)
    writer.add(
        Output(
            journeys=[
                JourneyRow("a", "awareness", 1, 1, 1, 1, 1, 1, (), None, 1),
                JourneyRow("b", "purchase", 1, 1, 1, 1, 1, 1, (), None, 1),
                JourneyRow("c", "purchase", 1, 1, 1, 1, 1, 1, (), None, 1),
            ]
        )
    )
    writer.flush()
    assert accounts_per_phase(writer.client, name) == [("awareness", 1), ("purchase", 2)]
    assert funnel(writer.client, name, ["awareness", "consideration", "purchase"]) == [
        ("awareness", 3),
        ("consideration", 2),
        ("purchase", 2),
    ]


def test_migrate_command(chdb_dsn: str, database_name: Callable[[str], str]) -> None:
    from click.testing import CliRunner

    from journeys.cli import main

    name = database_name("cli")
    args = ["migrate", "--clickhouse-url", chdb_dsn, "--clickhouse-database", name]
    first = CliRunner().invoke(main, args, catch_exceptions=False)
    assert first.exit_code == 0 and "applied 0001_initial" in first.output
    second = CliRunner().invoke(main, args, catch_exceptions=False)
    assert second.output.strip() == "schema is up to date"


def test_final_hides_deleted_journeys_and_the_view_shows_one_row_per_account(
    ch_sink: Callable[[str], ClickHouseSink], ch_database: str
) -> None:
    writer = ch_sink(ch_database)
    writer.add(
        Output(
            journeys=[
                JourneyRow("a", "awareness", 1, 1, 1, 1, 1, 1, (), None, 1),
                JourneyRow("a", "decision", 5, 1, 5, 5, 3, 2, ("buyer", "user"), "growers", 4),
                JourneyRow("a", "consideration", 3, 1, 3, 3, 2, 1, ("buyer",), None, 2),
                JourneyRow("gone", "awareness", 1, 1, 1, 1, 1, 1, (), None, 1),
                JourneyRow("gone", "awareness", 1, 1, 1, 1, 1, 1, (), None, 2, deleted=True),
            ]
        )
    )
    writer.flush()
    rows = writer.client.query(
        "SELECT account_id, phase, events, contacts, dmu_roles, segment "
        f"FROM {ch_database}.journeys_current"
    ).result_rows
    assert rows == [("a", "decision", 3, 2, ["buyer", "user"], "growers")]


def test_queries_give_exact_values_for_hand_built_rows(
    ch_sink: Callable[[str], ClickHouseSink], ch_database: str
) -> None:
    day = 86_400_000
    writer = ch_sink(ch_database)
    writer.add(
        Output(
            journeys=[
                JourneyRow("a", "purchase", 9 * day, 0, 9 * day, None, 4, 1, (), None, 1),
                JourneyRow("b", "consideration", 2 * day, 0, 2 * day, None, 2, 1, (), None, 1),
                JourneyRow("c", "awareness", 0, 0, 0, None, 1, 1, (), None, 1),
                JourneyRow("d", "legacy", 0, 0, 0, None, 1, 1, (), None, 1),
            ],
            transitions=[
                TransitionRow("a", None, "awareness", 0, "a0", "page_view", "web", 1),
                TransitionRow("a", "awareness", "consideration", 1 * day, "a1", "demo", "sales", 1),
                TransitionRow(
                    "a", "consideration", "purchase", 9 * day, "a2", "order_placed", "order", 1
                ),
                TransitionRow("b", None, "awareness", 0, "b0", "page_view", "web", 1),
                TransitionRow("b", "awareness", "consideration", 3 * day, "b1", "demo", "sales", 1),
                TransitionRow("c", None, "awareness", 0, "c0", "page_view", "web", 1),
            ],
            alerts=[
                AlertRow("x1", "cart_abandoned", "a", day, "{}", 1),
                AlertRow("x2", "cart_abandoned", "b", day, "{}", 1),
                AlertRow("x3", "deal_stalled", "b", day, "{}", 1),
                AlertRow("x3", "deal_stalled", "b", day, "{}", 2, resolved_at=2 * day),
                AlertRow("x4", "deal_stalled", "c", day, "{}", 1),
            ],
        )
    )
    writer.flush()
    client = writer.client
    assert accounts_per_phase(client, ch_database) == [
        ("awareness", 1),
        ("consideration", 1),
        ("purchase", 1),
        ("legacy", 1),
    ]
    # Median of 1 and 3 days, then the one 8-day step.
    assert median_days_between_phases(client, ch_database) == [
        ("awareness", "consideration", 2.0),
        ("consideration", "purchase", 8.0),
    ]
    assert open_alerts(client, ch_database) == [("cart_abandoned", 2), ("deal_stalled", 1)]
    assert table_counts(client, ch_database) == {
        "events": 0,
        "phase_transitions": 6,
        "journeys": 4,
        "alerts": 4,
        "dead_letters": 0,
        "identity_links": 0,
    }
    snap = snapshot(client, ch_database)
    assert [(t["account_id"], t["to_phase"]) for t in snap["phase_transitions"]] == [
        ("a", "awareness"),
        ("a", "consideration"),
        ("a", "purchase"),
        ("b", "awareness"),
        ("b", "consideration"),
        ("c", "awareness"),
    ]
    assert [a["resolved_at"] is None for a in snap["alerts"]] == [True, True, False, True]


def test_a_second_process_on_the_same_embedded_path_is_told_what_to_do(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, f"chdb://{tmp_path}"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        probe = subprocess.run(
            [sys.executable, "-c", PROBE, f"chdb://{tmp_path}"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        holder.kill()
        holder.communicate()
    assert probe.stdout.strip() == (
        f"SinkUnavailable: another process holds the embedded database at {tmp_path} (only one "
        "process may open it): stop that process, or point JOURNEYS_CLICKHOUSE_URL at a "
        "ClickHouse server"
    )


HOLD = """
import sys, time
from journeys.sinks.clickhouse.client import connect
connect(sys.argv[1])
print("open", flush=True)
time.sleep(120)
"""
PROBE = """
import sys
from journeys.schemas.errors import SinkUnavailable
from journeys.sinks.clickhouse.client import connect
try:
    connect(sys.argv[1])
except SinkUnavailable as exc:
    print(f"SinkUnavailable: {exc}")
"""
