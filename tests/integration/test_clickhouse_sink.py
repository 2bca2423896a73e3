"""The ClickHouse schema and writer on the real embedded engine."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from schemas.rows import AlertRow, DeadLetterRow, IdentityLink, JourneyRow, Output, StoredEvent, TransitionRow
from sinks.clickhouse.client import connect
from sinks.clickhouse.migrate import migrate, migration_files
from sinks.clickhouse.queries import accounts_per_phase, funnel, open_alerts, snapshot, table_counts
from sinks.clickhouse.writer import ClickHouseSink
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
    tables = {r[0] for r in client.query("SELECT name FROM system.tables WHERE database = {d:String}", parameters={"d": name}).result_rows}
    assert {"events", "phase_transitions", "journeys", "alerts", "dead_letters", "identity_links", "journeys_current", "open_alerts"} <= tables


def test_same_rows_twice_are_one_row_and_newer_versions_win(chdb_dsn: str, database_name: Callable[[str], str]) -> None:
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
        "events": 1, "phase_transitions": 1, "journeys": 1, "alerts": 1, "dead_letters": 1, "identity_links": 0,
    }
    writer.add(Output(
        journeys=[JourneyRow("acme.nl", "decision", 7, 1, 7, 7, 2, 1, ("buyer",), None, 2)],
        alerts=[AlertRow("al_1", "cart_abandoned", "acme.nl", 5, "{}", 2, resolved_at=8)],
        transitions=[TransitionRow("acme.nl", None, "awareness", 1, "e1", "page_view", "web", 3, deleted=True)],
    ))
    writer.flush()
    snap = snapshot(writer.client, name)
    assert [j["phase"] for j in snap["journeys"]] == ["decision"]
    assert snap["phase_transitions"] == []
    assert open_alerts(writer.client, name) == []
    assert snap["dead_letters"][0]["payload"] == b"{oops" or snap["dead_letters"][0]["payload"] == "{oops"


@pytest.mark.parametrize("link_first", [False, True])
def test_links_reattribute_stored_events_in_either_order(
    chdb_dsn: str, database_name: Callable[[str], str], link_first: bool
) -> None:
    name = database_name("r")
    writer = sink(chdb_dsn, name)
    anonymous = Output(events=[
        StoredEvent(ev("page_view", 0, event_id="a1", anonymous_id="v1"), None),
        StoredEvent(ev("page_view", 1, event_id="a2", contact_id="c9"), None),
        StoredEvent(ev("page_view", 2, event_id="a3", email="x@acme.nl"), "acme.nl"),
    ])
    links = Output(links=[
        IdentityLink("anonymous_id", "v1", "acme.nl", 10),
        IdentityLink("contact_id", "c9", "acme.nl", 10),
        IdentityLink("account", "acme.nl", "erp-1", 20),
    ])
    for batch in ([links, anonymous] if link_first else [anonymous, links]):
        writer.add(batch)
        writer.flush()
    accounts = {row["event_id"]: row["account_id"] for row in snapshot(writer.client, name)["events"]}
    if link_first:
        # Links only move events already stored; the engine never emits an alias's events after its link.
        assert accounts == {"a1": "", "a2": "", "a3": "acme.nl"}
    else:
        assert accounts == {"a1": "erp-1", "a2": "erp-1", "a3": "erp-1"}


def test_queries_on_hand_built_journeys(chdb_dsn: str, database_name: Callable[[str], str]) -> None:
    name = database_name("q")
    writer = sink(chdb_dsn, name)
    writer.add(Output(journeys=[
        JourneyRow("a", "awareness", 1, 1, 1, 1, 1, 1, (), None, 1),
        JourneyRow("b", "purchase", 1, 1, 1, 1, 1, 1, (), None, 1),
        JourneyRow("c", "purchase", 1, 1, 1, 1, 1, 1, (), None, 1),
    ]))
    writer.flush()
    assert accounts_per_phase(writer.client, name) == [("awareness", 1), ("purchase", 2)]
    assert funnel(writer.client, name, ["awareness", "consideration", "purchase"]) == [
        ("awareness", 3), ("consideration", 2), ("purchase", 2),
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
