"""Identity re-attribution inside ClickHouse agrees with the in-memory reference.

Whatever order events and links reach the sink in, and however they are
split into flushes, `events FINAL` shows the account `sinks.reference.final_tables`
gives.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest
from clickhouse_connect.driver.client import Client
from hypothesis import given, settings
from hypothesis import strategies as st

from journeys.schemas.rows import IdentityLink, Output, StoredEvent
from journeys.sinks.clickhouse.migrate import migrate
from journeys.sinks.clickhouse.queries import snapshot
from journeys.sinks.clickhouse.writer import ClickHouseSink
from journeys.sinks.reference import final_tables
from tests.unit.engine.journey import ev

pytestmark = pytest.mark.integration

Factory = Callable[..., ClickHouseSink]


def write(sink: ClickHouseSink, *batches: Output) -> dict[str, str]:
    """Flush each batch in turn; then {event_id: account} as read with FINAL."""
    for batch in batches:
        sink.add(batch)
        sink.flush()
    return {
        row["event_id"]: row["account_id"] for row in snapshot(sink.client, sink_db(sink))["events"]
    }


def sink_db(sink: ClickHouseSink) -> str:
    return sink._database  # noqa: SLF001 - the test reads back where it wrote


VISITS = Output(
    events=[
        StoredEvent(ev("page_view", 0, event_id="a1", anonymous_id="v1"), None),
        StoredEvent(ev("page_view", 1, event_id="a2", contact_id="c9"), None),
        StoredEvent(ev("page_view", 2, event_id="a3", email="x@acme.nl"), "acme.nl"),
    ]
)
LINKS = Output(
    links=[
        IdentityLink("anonymous_id", "v1", "acme.nl", 10),
        IdentityLink("contact_id", "c9", "acme.nl", 10),
        IdentityLink("account", "acme.nl", "erp-1", 20),
    ]
)


@pytest.mark.parametrize("link_first", [False, True])
def test_events_follow_links_written_before_or_after_them(
    ch_sink: Factory, ch_database: str, link_first: bool
) -> None:
    batches = (LINKS, VISITS) if link_first else (VISITS, LINKS)
    assert write(ch_sink(ch_database), *batches) == {"a1": "erp-1", "a2": "erp-1", "a3": "erp-1"}


def test_a_redelivered_event_keeps_its_attribution(ch_sink: Factory, ch_database: str) -> None:
    sink = ch_sink(ch_database)
    assert write(sink, VISITS, LINKS, VISITS) == {"a1": "erp-1", "a2": "erp-1", "a3": "erp-1"}


def test_contact_link_decides_before_anonymous_and_email(
    ch_sink: Factory, ch_database: str
) -> None:
    both = Output(
        events=[
            StoredEvent(
                ev("signup", 0, event_id="s1", anonymous_id="v1", contact_id="c1", email="j@b.nl"),
                None,
            ),
            StoredEvent(ev("page_view", 0, event_id="s2", anonymous_id="v1", email="j@b.nl"), None),
        ]
    )
    links = Output(
        links=[
            IdentityLink("email", "j@b.nl", "by-email", 5),
            IdentityLink("anonymous_id", "v1", "by-visitor", 5),
            IdentityLink("contact_id", "c1", "by-contact", 5),
        ]
    )
    assert write(ch_sink(ch_database), both, links) == {"s1": "by-contact", "s2": "by-visitor"}


def test_a_merge_chain_is_followed_even_when_a_later_link_has_an_earlier_time(
    ch_sink: Factory, ch_database: str
) -> None:
    sink = ch_sink(ch_database)
    stored = Output(events=[StoredEvent(ev("page_view", 0, event_id="p1", account_id="a"), "a")])
    first = Output(links=[IdentityLink("account", "a", "b", 100)])
    second = Output(links=[IdentityLink("account", "b", "c", 50)])
    assert write(sink, stored, first, second) == {"p1": "c"}
    versions = sink.client.query(
        f"SELECT account_id, version FROM {ch_database}.events ORDER BY version"
    ).result_rows
    assert versions == [("a", 2), ("b", 1100), ("c", 1101)]


def test_writing_the_same_batches_again_changes_nothing(ch_sink: Factory, ch_database: str) -> None:
    sink = ch_sink(ch_database)
    first = write(sink, VISITS, LINKS)
    before = snapshot(sink.client, ch_database)
    assert write(sink, VISITS, LINKS) == first
    assert snapshot(sink.client, ch_database) == before


# ---------------------------------------------------------------- cost: the flush, not the table

STORED = 400_000


def selected_rows(client: Client) -> int:
    """Rows this process's queries have read from tables so far."""
    rows = client.query("SELECT value FROM system.events WHERE event = 'SelectedRows'").result_rows
    return int(rows[0][0]) if rows else 0


def test_a_flush_reads_the_events_it_can_move_not_the_whole_table(
    ch_sink: Factory, ch_database: str
) -> None:
    # A table of 400k stored events of other accounts and visitors (a backfill's history),
    # then a flush of three events and their links: its re-attribution reads about the
    # granules of its own events (25k rows), not the table (it read 3.2M rows: 8 scans).
    sink = ch_sink(ch_database)
    sink.client.command(
        f"INSERT INTO {ch_database}.events (event_id, channel, type, occurred_at, account_id, "
        "contact_id, anonymous_id, email, dmu_role, segment, properties, context, late, "
        "engine_account_id, version) "
        "SELECT hex(cityHash64(number)), 'web', 'page_view', toDateTime64('2024-01-01', 3, 'UTC') "
        "+ number, if(number % 3 = 0, '', concat('old-', toString(number % 5000))), "
        "concat('oc-', toString(number % 7000)), concat('ov-', toString(number % 9000)), '', "
        "'', '', '{}', '{}', 0, if(number % 3 = 0, '', concat('old-', toString(number % 5000))), 2 "
        f"FROM numbers({STORED})"
    )
    sink.add(VISITS)
    sink.flush()
    sink.add(LINKS)
    before = selected_rows(sink.client)
    sink.flush()
    read = selected_rows(sink.client) - before
    moved = sink.client.query(
        f"SELECT event_id, account_id FROM {ch_database}.events FINAL "
        "WHERE event_id IN ('a1', 'a2', 'a3') ORDER BY event_id"
    ).result_rows
    assert moved == [("a1", "erp-1"), ("a2", "erp-1"), ("a3", "erp-1")]
    assert read < STORED // 4, f"re-attributing 3 events read {read:,} rows of {STORED:,}"


LOOKUPS = ["by_anonymous_id", "by_contact_id", "by_email", "by_engine_account_id"]


def test_a_database_migrated_before_the_lookups_gets_them_for_its_stored_events(
    ch_client: Client, ch_sink: Factory, ch_database: str
) -> None:
    # As the database was before migration 0011: no projections, events stored.
    for name in LOOKUPS:
        ch_client.command(f"ALTER TABLE {ch_database}.events DROP PROJECTION {name}")
    ch_client.command(
        f"ALTER TABLE {ch_database}.schema_migrations DELETE WHERE name LIKE '0011_%' "
        "SETTINGS mutations_sync = 2"
    )
    ch_client.command(
        f"INSERT INTO {ch_database}.events (event_id, channel, type, occurred_at, account_id, "
        "contact_id, anonymous_id, email, dmu_role, segment, properties, context, late, "
        "engine_account_id, version) VALUES "
        "('a1', 'web', 'page_view', 0, '', '', 'v1', '', '', '', '{}', '{}', 0, '', 2), "
        "('a2', 'web', 'page_view', 1, '', 'c9', '', '', '', '', '{}', '{}', 0, '', 2), "
        "('a3', 'web', 'page_view', 2, 'acme.nl', '', '', 'x@acme.nl', '', '', '{}', '{}', 0, "
        "'acme.nl', 2)"
    )
    assert migrate(ch_client, ch_database) == ["0011_attribution_lookups"]
    stored = ch_client.query(
        "SELECT DISTINCT name FROM system.projection_parts WHERE database = {db:String} "
        "AND table = 'events' AND active ORDER BY name",
        parameters={"db": ch_database},
    ).result_rows
    assert [name for (name,) in stored] == LOOKUPS
    assert write(ch_sink(ch_database), LINKS) == {"a1": "erp-1", "a2": "erp-1", "a3": "erp-1"}


# ---------------------------------------------------------------- property: any order


PEOPLE = 4
ACCOUNTS = [f"acc{i}" for i in range(5)]


@st.composite
def histories(draw: st.DrawFn) -> tuple[list[Output], Output]:
    """Events and links of an identity world, split into shuffled batches.

    Any alias may be linked to any account, and linked again to another (a
    re-link: the link earliest in event time wins); an account may be merged
    into a later one, and merged again elsewhere; merges go only to later
    accounts at any moment, so chains never loop.
    """
    rows: list[Output] = []
    for i, account in enumerate(ACCOUNTS[:-1]):
        for _ in range(draw(st.integers(0, 2))):
            into = draw(st.sampled_from(ACCOUNTS[i + 1 :]))
            rows.append(
                Output(links=[IdentityLink("account", account, into, draw(st.integers(0, 99)))])
            )
    for p in range(PEOPLE):
        for kind, alias in (
            ("contact_id", f"c{p}"),
            ("anonymous_id", f"v{p}"),
            ("email", f"m{p}@x.nl"),
        ):
            for _ in range(draw(st.integers(0, 2))):
                owner = draw(st.sampled_from(ACCOUNTS))
                at = draw(st.integers(0, 99))
                rows.append(Output(links=[IdentityLink(kind, alias, owner, at)]))
    for n in range(draw(st.integers(1, 8))):
        p = draw(st.integers(0, PEOPLE - 1))
        kinds = draw(st.sets(st.sampled_from(["contact_id", "anonymous_id", "email"]), min_size=1))
        fields = {
            k: {"contact_id": f"c{p}", "anonymous_id": f"v{p}", "email": f"m{p}@x.nl"}[k]
            for k in kinds
        }
        stored = draw(st.one_of(st.none(), st.sampled_from(ACCOUNTS)))
        rows.append(
            Output(events=[StoredEvent(ev("page_view", n, event_id=f"e{n}", **fields), stored)])
        )
    rows += draw(st.lists(st.sampled_from(rows), max_size=3))  # re-deliveries
    order = draw(st.permutations(rows))
    cuts = draw(st.lists(st.integers(0, len(order)), max_size=3))
    batches = []
    for start, end in zip([0, *sorted(cuts)], [*sorted(cuts), len(order)], strict=True):
        batch = Output()
        for row in order[start:end]:
            batch.extend(row)
        batches.append(batch)
    everything = Output()
    for row in order:  # as written: of two links with equal times the last written wins
        everything.extend(row)
    return batches, everything


@settings(max_examples=40, deadline=None)
@given(history=histories())
def test_any_order_and_batching_gives_the_reference_accounts(
    ch_client: Client, chdb_dsn: str, history: tuple[list[Output], Output]
) -> None:
    batches, everything = history
    database = f"p_{uuid.uuid4().hex[:12]}"
    migrate(ch_client, database)
    sink = ClickHouseSink(chdb_dsn, database)
    sink.setup()
    expected = {k: v.account_id or "" for k, v in final_tables(everything).events.items()}
    assert write(sink, *batches) == expected
    ch_client.command(f"DROP DATABASE {database}")
