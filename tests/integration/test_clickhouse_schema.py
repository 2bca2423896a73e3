"""The schema on the real embedded engine: keys a redelivery cannot move, no partition limit,
an upgrade from the first schema that resumes where it stopped, and errors explained by code."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from clickhouse_connect.driver.client import Client
from hypothesis import given, settings
from hypothesis import strategies as st

from journeys.cli import main
from journeys.schemas.errors import SinkUnavailable
from journeys.schemas.record import EventRecord, to_ms
from journeys.schemas.rows import AlertRow, IdentityLink, Output, StoredEvent
from journeys.sinks.clickhouse.client import connect, run, select
from journeys.sinks.clickhouse.errors import SinkRejected
from journeys.sinks.clickhouse.migrate import migrate, migration_files, statements
from journeys.sinks.clickhouse.writer import ClickHouseSink
from journeys.sinks.reference import final_tables
from tests.unit.engine.journey import ev

pytestmark = pytest.mark.integration


def monthly(months: int, start_year: int) -> list[EventRecord]:
    """One page view a month for `months` months, all of one account."""
    out = []
    for n in range(months):
        moment = datetime(start_year + n // 12, n % 12 + 1, 15, 9, tzinfo=UTC)
        record = ev("page_view", 0, event_id=f"m{n:03d}", account_id="acme")
        out.append(replace(record, ts=to_ms(moment)))
    return out


def one(client: Client, sql: str) -> object:
    return client.query(sql).result_rows[0][0]


# ---------------------------------------------------------------- partitions


def test_twenty_years_of_monthly_events_are_one_insert(
    ch_sink: Callable[[str], ClickHouseSink], ch_database: str
) -> None:
    sink = ch_sink(ch_database)
    sink.add(Output(events=[StoredEvent(r, "acme") for r in monthly(240, 2006)]))
    sink.flush()  # 240 months: a monthly partition key refused this with code 252
    client = sink.client
    assert one(client, f"SELECT count() FROM {ch_database}.events_current") == 240
    keys = client.query(
        "SELECT name, partition_key, sorting_key FROM system.tables "
        "WHERE database = {db:String} AND engine LIKE '%MergeTree'",
        parameters={"db": ch_database},
    ).result_rows
    assert {name: partition for name, partition, _ in keys} == dict.fromkeys(
        [
            "events",
            "phase_transitions",
            "journeys",
            "alerts",
            "dead_letters",
            "identity_links",
            "schema_migrations",
            "derived_settings",
            "privacy_requests",
            "privacy_suppressions",
            "generations",
        ],
        "",
    )
    assert {name: order for name, _, order in keys}["events"] == "event_id"


def test_replay_of_150_months_stores_every_event(
    tmp_path: Path, chdb_dsn: str, database_name: Callable[[str], str]
) -> None:
    name = database_name("months")
    path = tmp_path / "months.jsonl"
    path.write_bytes(b"\n".join(r.to_json() for r in monthly(150, 2012)) + b"\n")
    args = [
        "replay",
        str(path),
        "--clickhouse-url",
        chdb_dsn,
        "--clickhouse-database",
        name,
        "--data-dir",
        str(tmp_path),
    ]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    client = connect(chdb_dsn)
    assert one(client, f"SELECT count() FROM {name}.events_current") == 150
    assert one(client, f"SELECT count() FROM {name}.journeys_current") == 1


# ---------------------------------------------------------------- redeliveries


def test_the_earliest_delivery_wins_and_is_re_attributed_whatever_the_order(
    ch_sink: Callable[[str], ClickHouseSink],
    database_name: Callable[[str], str],
    ch_client: Client,
) -> None:
    first = ev("add_to_cart", 5, event_id="r1", anonymous_id="v1")
    retried = replace(first, ts=first.ts + 3_000)  # the SDK's retry, skew-corrected later
    link = Output(links=[IdentityLink("anonymous_id", "v1", "acme", first.ts)])
    for batches in (
        [
            Output(events=[StoredEvent(retried, None)]),
            link,
            Output(events=[StoredEvent(first, None)]),
        ],
        [
            Output(events=[StoredEvent(first, None)]),
            link,
            Output(events=[StoredEvent(retried, None)]),
        ],
        [link, Output(events=[StoredEvent(retried, None), StoredEvent(first, None)])],
    ):
        db = database_name("redeliver")
        migrate(ch_client, db)
        sink = ch_sink(db)
        for batch in batches:
            sink.add(batch)
            sink.flush()
        rows = ch_client.query(
            f"SELECT event_id, toUnixTimestamp64Milli(occurred_at), account_id "
            f"FROM {db}.events_current"
        ).result_rows
        assert rows == [("r1", first.ts, "acme")]


@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_any_deliveries_in_any_order_are_one_event_at_its_earliest_time(
    ch_client: Client, chdb_dsn: str, data: st.DataObject
) -> None:
    pieces: list[Output] = []
    for n in range(data.draw(st.integers(1, 4))):
        record = ev("page_view", n, event_id=f"e{n}", anonymous_id=f"v{n % 2}")
        for _ in range(data.draw(st.integers(1, 4))):
            shifted = replace(record, ts=record.ts + data.draw(st.integers(0, 3_000)))
            account = data.draw(st.sampled_from([None, "acme", "other"]))
            pieces.append(Output(events=[StoredEvent(shifted, account, data.draw(st.booleans()))]))
    for alias in ("v0", "v1"):
        if data.draw(st.booleans()):
            pieces.append(Output(links=[IdentityLink("anonymous_id", alias, "linked", 7)]))
    if data.draw(st.booleans()):
        pieces.append(Output(links=[IdentityLink("account", "acme", "erp-1", 9)]))
    order = data.draw(st.permutations(pieces))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(order)), max_size=3)))
    database = f"d_{uuid.uuid4().hex[:12]}"
    migrate(ch_client, database)
    sink = ClickHouseSink(chdb_dsn, database)
    sink.setup()
    written = Output()
    for start, end in zip([0, *cuts], [*cuts, len(order)], strict=True):
        batch = Output()
        for piece in order[start:end]:
            batch.extend(piece)
        written.extend(batch)
        sink.add(batch)
        sink.flush()
    expected = {
        k: (row.record.ts, row.account_id or "") for k, row in final_tables(written).events.items()
    }
    rows = ch_client.query(
        f"SELECT event_id, toUnixTimestamp64Milli(occurred_at), account_id "
        f"FROM {database}.events_current"
    ).result_rows
    assert {e: (ts, account) for e, ts, account in rows} == expected
    assert all(
        ts
        == min(
            p.events[0].record.ts for p in pieces if p.events and p.events[0].record.event_id == e
        )
        for e, ts, _ in rows
    )
    ch_client.command(f"DROP DATABASE {database}")


# ---------------------------------------------------------------- upgrading 0001


def first_schema(client: Client, db: str) -> None:
    """A database as the first release left it, with rows the old keys kept apart."""
    run(client, f"CREATE DATABASE {db}")
    run(
        client,
        f"CREATE TABLE {db}.schema_migrations (name String, applied_at DateTime64(3, 'UTC') "
        "DEFAULT now64(3)) ENGINE = ReplacingMergeTree ORDER BY name",
    )
    name, sql = migration_files()[0]
    for statement in statements(sql):
        run(client, statement.replace("{db}", db))
    run(client, f"INSERT INTO {db}.schema_migrations (name) VALUES ('{name}')")
    columns = (
        "event_id, channel, type, occurred_at, account_id, contact_id, anonymous_id, email, "
        "dmu_role, segment, properties, context, late, version"
    )
    run(
        client,
        f"INSERT INTO {db}.events ({columns}) VALUES "
        # Two deliveries of e1 in two months (two partitions), the later one re-attributed.
        "('e1', 'web', 'page_view', '2024-02-01 00:00:02.000', '', '', 'v1', '', '', '', '{}', "
        "'{}', 0, 2), "
        "('e1', 'web', 'page_view', '2024-02-01 00:00:02.000', 'acme', '', 'v1', '', '', '', '{}', "
        "'{}', 0, 1010), "
        "('e1', 'web', 'page_view', '2024-01-31 23:59:59.000', '', '', 'v1', '', '', '', '{}', "
        "'{}', 0, 2), "
        "('e2', 'order', 'order_placed', '2024-03-01 10:00:00.000', 'erp-1', '', '', '', '', '', "
        "'{}', '{}', 0, 2), "
        "('e3', 'web', 'signup', '2024-03-02 10:00:00.000', 'moved', 'c3', '', '', '', '', "
        "'{}', '{}', 0, 1005)",
    )
    run(
        client,
        f"INSERT INTO {db}.identity_links VALUES ('anonymous_id', 'v1', 'acme', "
        "'2024-02-01 00:00:02.000'), ('email', 'j@b.nl', 'early', '2024-01-01 09:00:00.000')",
    )
    # Written last, this link won under the first schema; linked later, it loses now.
    run(
        client,
        f"INSERT INTO {db}.identity_links VALUES ('email', 'j@b.nl', 'late', "
        "'2024-01-01 10:00:00.000')",
    )
    run(
        client,
        f"INSERT INTO {db}.alerts VALUES ('al1', 'cart_abandoned', 'acme', "
        "'2024-02-01 04:00:02.000', '{{}}', NULL, 1)",
    )


def upgraded(client: Client, db: str) -> dict[str, object]:
    """What an upgrade must leave, read through the views and system tables."""
    events = client.query(
        f"SELECT event_id, toString(occurred_at), account_id FROM {db}.events_current "
        "ORDER BY event_id"
    ).result_rows
    engine = client.query(
        f"SELECT event_id, engine_account_id FROM {db}.events FINAL ORDER BY event_id"
    ).result_rows
    links = client.query(
        f"SELECT alias, account_id FROM {db}.identity_links_current ORDER BY alias"
    ).result_rows
    alerts = client.query(f"SELECT alert_id, status FROM {db}.alerts_current").result_rows
    tables = sorted(
        r[0]
        for r in client.query(
            "SELECT name FROM system.tables WHERE database = {db:String} AND name LIKE '%_0001'",
            parameters={"db": db},
        ).result_rows
    )
    return {"events": events, "engine": engine, "links": links, "alerts": alerts, "old": tables}


UPGRADED = {
    "events": [
        ("e1", "2024-01-31 23:59:59.000", "acme"),  # the earliest delivery, the newest account
        ("e2", "2024-03-01 10:00:00.000", "erp-1"),
        ("e3", "2024-03-02 10:00:00.000", "moved"),
    ],
    "engine": [("e1", ""), ("e2", "erp-1"), ("e3", "moved")],
    "links": [("j@b.nl", "early"), ("v1", "acme")],  # the link earliest in event time
    "alerts": [("al1", "raised")],
    "old": [],
}


def test_journeys_migrate_upgrades_a_first_schema_database(
    chdb_dsn: str, database_name: Callable[[str], str]
) -> None:
    client, db = connect(chdb_dsn), database_name("upgrade")
    first_schema(client, db)
    args = ["migrate", "--clickhouse-url", chdb_dsn, "--clickhouse-database", db]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    names = [name for name, _ in migration_files()[1:]]
    assert result.output.strip() == f"applied {', '.join(names)}"
    assert upgraded(client, db) == UPGRADED
    # The sink writes on: a redelivery later in time changes nothing; a link still moves.
    sink = ClickHouseSink(chdb_dsn, db)
    sink.setup()
    late = ev("page_view", 0, event_id="e1", anonymous_id="v1")
    sink.add(Output(events=[StoredEvent(late, None)]))
    sink.add(Output(links=[IdentityLink("contact_id", "c9", "x", 0)]))
    sink.flush()
    assert upgraded(client, db)["events"] == UPGRADED["events"]
    assert CliRunner().invoke(main, args).output.strip() == "schema is up to date"


UPGRADE_STEPS = statements(dict(migration_files())["0002_keys_redeliveries_cannot_move"])


@pytest.mark.parametrize("recorded", [True, False], ids=["recorded", "crashed-before-record"])
@pytest.mark.parametrize("done", range(1, len(UPGRADE_STEPS) + 1))
def test_an_interrupted_upgrade_resumes_and_loses_nothing(
    ch_client: Client, database_name: Callable[[str], str], done: int, recorded: bool
) -> None:
    db = database_name("resume")
    first_schema(ch_client, db)
    for number, statement in enumerate(UPGRADE_STEPS[:done], start=1):
        run(ch_client, statement.replace("{db}", db))
        last = number == done
        if not statement.startswith("CREATE ") and (recorded or not last):
            run(
                ch_client,
                f"INSERT INTO {db}.schema_migrations (name) VALUES "
                f"('0002_keys_redeliveries_cannot_move#{number}')",
            )
    migrate(ch_client, db)
    assert upgraded(ch_client, db) == UPGRADED


# ---------------------------------------------------------------- errors by code


def test_too_many_partitions_is_explained_by_its_code(ch_client: Client, ch_database: str) -> None:
    run(
        ch_client,
        f"CREATE TABLE {ch_database}.monthly (at DateTime) ENGINE = MergeTree "
        "PARTITION BY toYYYYMM(at) ORDER BY at",
    )
    with pytest.raises(SinkUnavailable) as caught:
        run(
            ch_client,
            f"INSERT INTO {ch_database}.monthly SELECT toDateTime('2000-01-01 00:00:00') "
            "+ toIntervalMonth(number) FROM numbers(240)",
        )
    message = str(caught.value)
    assert "(code 252 TOO_MANY_PARTS)" in message and "partitions" in message
    assert "another process" not in message and not isinstance(caught.value, SinkRejected)


def test_a_missing_database_is_refused_and_names_journeys_migrate(ch_client: Client) -> None:
    with pytest.raises(SinkRejected, match=r"code 81 UNKNOWN_DATABASE.*journeys migrate"):
        select(ch_client, "SELECT count() FROM no_such_database.events")


def test_a_second_embedded_path_in_one_process_is_explained(
    ch_client: Client, tmp_path: Path
) -> None:
    with pytest.raises(SinkUnavailable, match="one path per process") as caught:
        connect(f"chdb://{tmp_path}")
    assert f"cannot open {tmp_path} too" in str(caught.value)


def test_a_withdrawn_alert_is_stored_and_leaves_the_open_alerts(
    ch_sink: Callable[[str], ClickHouseSink], ch_database: str
) -> None:
    sink = ch_sink(ch_database)
    sink.add(Output(alerts=[AlertRow("w1", "cart_abandoned", "a", 5, "{}", 1)]))
    sink.flush()
    assert one(sink.client, f"SELECT count() FROM {ch_database}.open_alerts") == 1
    sink.add(Output(alerts=[AlertRow("w1", "cart_abandoned", "a", 5, "{}", 2, withdrawn=True)]))
    sink.flush()
    assert one(sink.client, f"SELECT count() FROM {ch_database}.open_alerts") == 0
    assert one(sink.client, f"SELECT count() FROM {ch_database}.alerts_current") == 0
    assert one(sink.client, f"SELECT withdrawn FROM {ch_database}.alerts FINAL") == 1
