"""Generations of derived rows on the embedded engine (migration 0010, `journeys rebuild`):
rows from before stay visible as generation 0, the views switch to a generation when its
last partition reports and not before, the sink prunes older generations, and `forget`
recomputes in the live generation."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest
from clickhouse_connect.driver.client import Client

from journeys.schemas.rows import (
    AlertRow,
    GenerationRow,
    JourneyRow,
    Output,
    StoredEvent,
    TransitionRow,
)
from journeys.sinks.clickhouse.client import run, select
from journeys.sinks.clickhouse.forget import delete_where
from journeys.sinks.clickhouse.generations import (
    generation_progress,
    live_generation,
    next_generation,
    prune_generations,
)
from journeys.sinks.clickhouse.migrate import migrate, migration_files, statements
from journeys.sinks.clickhouse.queries import accounts_per_phase, table_counts
from journeys.sinks.clickhouse.recompute import recompute_accounts
from journeys.sinks.clickhouse.writer import ClickHouseSink
from journeys.sinks.reference import final_tables
from journeys.sinks.report.source import Tables
from journeys.streams.engine import EngineConfig
from journeys.streams.engine.rules import load_rules
from tests.unit.engine.journey import ev
from tests.unit.engine.journey import run as replay

pytestmark = pytest.mark.integration

DERIVED = ("journeys", "phase_transitions", "alerts")


def journey(account: str, phase: str, generation: int, version: int = 1) -> JourneyRow:
    return JourneyRow(
        account, phase, 10, 1, 20, 20, 3, 1, ("buyer",), "smb", version, generation=generation
    )


def transition(account: str, to_phase: str, generation: int) -> TransitionRow:
    return TransitionRow(
        account, None, to_phase, 10, "e1", "page_view", "web", 1, generation=generation
    )


def alert(alert_id: str, account: str, generation: int) -> AlertRow:
    return AlertRow(alert_id, "deal_stalled", account, 15, "{}", 1, generation=generation)


def report(generation: int, partition: int, partitions: int) -> GenerationRow:
    return GenerationRow(generation, partition, partitions, f"hash{generation}", "[rules]")


def rows(generation: int, phase: str, accounts: tuple[str, ...]) -> Output:
    """A journey, a transition and an open alert per account, in `generation`."""
    return Output(
        journeys=[journey(a, phase, generation) for a in accounts],
        transitions=[transition(a, phase, generation) for a in accounts],
        alerts=[alert(f"{a}:stalled", a, generation) for a in accounts],
    )


def current(client: Client, db: str) -> dict[str, list[tuple[object, ...]]]:
    """What the views show: journeys, transitions, alerts, open alerts, phase counts."""
    return {
        "journeys": select(
            client, f"SELECT account_id, phase FROM {db}.journeys_current ORDER BY 1"
        ),
        "transitions": select(
            client, f"SELECT account_id, to_phase FROM {db}.phase_transitions_current ORDER BY 1, 2"
        ),
        "alerts": select(client, f"SELECT alert_id FROM {db}.alerts_current ORDER BY 1"),
        "open": select(client, f"SELECT alert_id FROM {db}.open_alerts ORDER BY 1"),
        "per_phase": select(
            client,
            f"SELECT phase, accounts FROM {db}.analytics_accounts_per_phase ORDER BY 1",
        ),
    }


def generations_stored(client: Client, db: str) -> dict[str, list[int]]:
    """The generations each derived table holds rows of."""
    return {
        t: [
            int(g)
            for (g,) in select(client, f"SELECT DISTINCT generation FROM {db}.{t} ORDER BY 1")
        ]
        for t in DERIVED
    }


# ---------------------------------------------------------------- the migration


def test_rows_from_before_the_migration_stay_visible_as_generation_zero(
    ch_client: Client, database_name: Callable[[str], str]
) -> None:
    db = database_name("before")
    files = migration_files()
    at = [name for name, _ in files].index("0010_generations")
    older, (_, newest) = files[:at], files[at]
    run(ch_client, f"CREATE DATABASE {db}")
    run(
        ch_client,
        f"CREATE TABLE {db}.schema_migrations (name String, applied_at DateTime64(3, 'UTC') "
        "DEFAULT now64(3)) ENGINE = ReplacingMergeTree ORDER BY name",
    )
    for name, sql in older:
        for statement in statements(sql):
            run(ch_client, statement.replace("{db}", db))
        run(ch_client, f"INSERT INTO {db}.schema_migrations (name) VALUES ('{name}')")
    run(
        ch_client,
        f"INSERT INTO {db}.journeys (account_id, phase, phase_since, first_seen, last_seen, "
        "events, contacts, dmu_roles, segment, version, is_deleted) VALUES "
        "('acme', 'decision', '2024-01-02 00:00:00', '2024-01-01 00:00:00', "
        "'2024-01-03 00:00:00', 4, 1, ['buyer'], 'smb', 3, 0)",
    )
    run(
        ch_client,
        f"INSERT INTO {db}.phase_transitions VALUES ('acme', '', 'awareness', "
        "'2024-01-01 00:00:00', 'e1', 'page_view', 'web', 1, 0)",
    )
    run(
        ch_client,
        f"INSERT INTO {db}.alerts (alert_id, kind, account_id, raised_at, details, version) "
        "VALUES ('al1', 'deal_stalled', 'acme', '2024-01-03 00:00:00', '{{}}', 1)",
    )

    assert migrate(ch_client, db)[0] == "0010_generations"
    for statement in statements(newest):  # every statement can run again
        run(ch_client, statement.replace("{db}", db))

    assert current(ch_client, db) == {
        "journeys": [("acme", "decision")],
        "transitions": [("acme", "awareness")],
        "alerts": [("al1",)],
        "open": [("al1",)],
        "per_phase": [("decision", 1)],
    }
    assert generations_stored(ch_client, db) == dict.fromkeys(DERIVED, [0])
    keys = dict(
        select(
            ch_client,
            "SELECT name, sorting_key FROM system.tables WHERE database = {db:String}",
            {"db": db},
        )
    )
    assert (keys["journeys"], keys["phase_transitions"], keys["alerts"]) == (
        "account_id, generation",
        "account_id, to_phase, generation",
        "alert_id, generation",
    )
    assert select(ch_client, f"SELECT * FROM {db}.generation_current") == [(0, "", None)]
    assert live_generation(ch_client, db) == 0
    assert generation_progress(ch_client, db, 1) == (0, 0)
    assert next_generation(ch_client, db) == 1


# ---------------------------------------------------------------- switching and pruning


def test_views_switch_when_the_last_partition_reports_and_old_rows_are_pruned(
    ch_sink: Callable[[str], ClickHouseSink], ch_database: str
) -> None:
    db = ch_database
    sink = ch_sink(db)
    client = sink.client
    sink.add(rows(0, "awareness", ("acme", "globex")))
    sink.flush()
    before = current(client, db)
    assert before["journeys"] == [("acme", "awareness"), ("globex", "awareness")]

    # Partition 0 of 2 holds generation 1 (new rules: acme in decision, initech appears).
    sink.add(rows(1, "decision", ("acme", "initech")))
    sink.add(Output(generations=[report(1, 0, 2)]))
    sink.flush()
    assert current(client, db) == before  # half a generation is never shown
    assert live_generation(client, db) == 0
    assert generation_progress(client, db, 1) == (1, 2)
    assert next_generation(client, db) == 2
    assert generations_stored(client, db) == dict.fromkeys(DERIVED, [0, 1])

    # Partition 1 reports: the generation is complete, every view shows it alone.
    sink.add(rows(1, "decision", ("globex",)))
    sink.add(Output(generations=[report(1, 1, 2)]))
    sink.flush()
    assert live_generation(client, db) == 1
    assert generation_progress(client, db, 1) == (2, 2)
    assert current(client, db) == {
        "journeys": [("acme", "decision"), ("globex", "decision"), ("initech", "decision")],
        "transitions": [("acme", "decision"), ("globex", "decision"), ("initech", "decision")],
        "alerts": [("acme:stalled",), ("globex:stalled",), ("initech:stalled",)],
        "open": [("acme:stalled",), ("globex:stalled",), ("initech:stalled",)],
        "per_phase": [("decision", 3)],
    }
    gen = select(
        client,
        f"SELECT generation, rules_hash, completed_at IS NOT NULL FROM {db}.generation_current",
    )
    assert gen == [(1, "hash1", True)]
    # the sink pruned generation 0 after the batch that completed generation 1
    assert generations_stored(client, db) == dict.fromkeys(DERIVED, [1])
    assert accounts_per_phase(client, db) == [("decision", 3)]
    assert table_counts(client, db)["journeys"] == 3
    tables = Tables(client, db)
    assert len(select(client, f"SELECT alert_id FROM {tables.final('alerts')}")) == 3

    # A rebuild under way (generation 2, one partition of two) is kept by pruning.
    sink.add(rows(2, "purchase", ("acme",)))
    sink.add(Output(generations=[report(2, 0, 2)]))
    sink.flush()
    assert prune_generations(client, db) == dict.fromkeys(DERIVED, 0)
    assert generations_stored(client, db) == dict.fromkeys(DERIVED, [1, 2])
    assert live_generation(client, db) == 1
    assert next_generation(client, db) == 3
    assert table_counts(client, db)["journeys"] == 3


def test_prune_deletes_only_generations_older_than_the_live_one(
    ch_sink: Callable[[str], ClickHouseSink], ch_database: str
) -> None:
    db = ch_database
    sink = ch_sink(db)
    client = sink.client
    for generation in (0, 1, 2, 3):
        sink.add(rows(generation, "awareness", ("acme",)))
    sink.flush()
    assert prune_generations(client, db) == {}  # generation 0 is live: nothing to prune
    # Reports written by hand, so that the sink's own pruning does not run first.
    run(
        client,
        f"INSERT INTO {db}.generations (generation, partition, partitions, rules_hash, rules) "
        "VALUES (2, 0, 1, 'h2', '')",
    )
    assert prune_generations(client, db) == dict.fromkeys(DERIVED, 2)
    assert generations_stored(client, db) == dict.fromkeys(DERIVED, [2, 3])


def test_the_writer_stores_generations_and_the_reports(
    ch_sink: Callable[[str], ClickHouseSink], ch_database: str
) -> None:
    db = ch_database
    sink = ch_sink(db)
    client = sink.client
    sink.add(rows(7, "decision", ("acme",)))
    sink.add(Output(generations=[GenerationRow(7, 3, 4, "abc", "[phases]\nx = 1\n")]))
    sink.flush()
    for table in DERIVED:
        assert select(client, f"SELECT account_id, generation FROM {db}.{table}") == [("acme", 7)]
    assert select(
        client, f"SELECT generation, partition, partitions, rules_hash, rules FROM {db}.generations"
    ) == [(7, 3, 4, "abc", "[phases]\nx = 1\n")]
    assert generation_progress(client, db, 7) == (1, 4)
    assert next_generation(client, db) == 8


def test_the_reference_shows_the_live_generation_only() -> None:
    out = rows(0, "awareness", ("acme", "globex"))
    out.extend(rows(1, "decision", ("acme",)))
    out.extend(Output(generations=[report(1, 0, 2)]))
    assert {j.phase for j in final_tables(out).journeys.values()} == {"awareness"}
    out.extend(rows(1, "decision", ("globex",)))
    out.extend(Output(generations=[report(1, 1, 2)]))
    tables = final_tables(out)
    assert {a: j.phase for a, j in tables.journeys.items()} == {
        "acme": "decision",
        "globex": "decision",
    }
    assert {a.generation for a in tables.alerts.values()} == {1}


# ---------------------------------------------------------------- forget on a rebuilt database


def test_recompute_after_forget_stays_in_the_live_generation(
    ch_sink: Callable[[str], ClickHouseSink], ch_database: str, chdb_dsn: str
) -> None:
    db = ch_database
    sink = ch_sink(db)
    client = sink.client
    events = [
        ev("page_view", 0, event_id="p1"),
        ev("pricing_view", 1, event_id="p2"),
        ev("quote_requested", 2, event_id="p3"),
    ]
    _, out = replay(events)
    sink.add(Output(events=[StoredEvent(e, "acme") for e in events]))
    sink.add(out)  # generation 0, as the first replay wrote it
    sink.flush()
    rebuilt = Output(
        transitions=[replace(t, generation=1) for t in out.transitions],
        journeys=[replace(j, generation=1) for j in out.journeys],
        alerts=[replace(a, generation=1) for a in out.alerts],
        generations=[report(1, 0, 1)],
    )
    sink.add(rebuilt)
    sink.flush()
    assert live_generation(client, db) == 1
    assert select(client, f"SELECT events FROM {db}.journeys_current") == [(3,)]

    delete_where(client, db, "events", "event_id = {e:String}", {"e": "p3"})
    config = EngineConfig(rules=load_rules())
    assert recompute_accounts(client, chdb_dsn, db, config, ["acme"]) == 1

    expected, _ = replay(events[:2])
    assert select(client, f"SELECT phase, events FROM {db}.journeys_current") == [
        (expected.journeys["acme"].phase, 2)
    ]
    shown = select(client, f"SELECT to_phase FROM {db}.phase_transitions_current ORDER BY 1")
    assert shown == sorted((t.to_phase,) for t in expected.transitions.values())
    assert generations_stored(client, db) == {
        "journeys": [1],
        "phase_transitions": [1],
        "alerts": [1] if out.alerts else [],
    }
