"""The `<table>_current` views give plain SQL the current rows: what FINAL and the reference give.

Rows are written twice, in other orders and batches, with superseding
versions, deletions, withdrawals, re-linked aliases and redeliveries that
moved occurred_at; `SELECT count() FROM <view>` without FINAL must equal the
right answer, and each view's rows must equal `sinks.reference`'s.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client
from hypothesis import given, settings
from hypothesis import strategies as st

from journeys.schemas.rows import (
    AlertRow,
    DeadLetterRow,
    IdentityLink,
    JourneyRow,
    Output,
    StoredEvent,
    TransitionRow,
)
from journeys.sinks.clickhouse.migrate import migrate
from journeys.sinks.clickhouse.writer import ClickHouseSink
from journeys.sinks.reference import FinalTables, final_tables
from tests.unit.engine.journey import ev, ms

pytestmark = pytest.mark.integration

VIEWS = (
    "events_current",
    "phase_transitions_current",
    "journeys_current",
    "alerts_current",
    "open_alerts",
    "identity_links_current",
    "dead_letters_current",
)


def rows() -> list[Output]:
    """One row per Output, covering every way a row can be superseded."""
    return [
        Output(events=[StoredEvent(ev("page_view", 0, event_id="e1", account_id="a"), "a")]),
        Output(events=[StoredEvent(ev("pricing_view", 5, event_id="e2", anonymous_id="v1"), None)]),
        # A redelivery 3 s later (clock-skew correction moved it): the same event.
        Output(
            events=[
                StoredEvent(
                    ev("pricing_view", 5, event_id="e2", anonymous_id="v1"), None
                ).__class__(ev("pricing_view", 5, event_id="e2", anonymous_id="v1"), None)
            ]
        ),
        Output(
            events=[StoredEvent(moved(ev("signup", 6, event_id="e3", contact_id="c1"), 3), None)]
        ),
        Output(events=[StoredEvent(ev("signup", 6, event_id="e3", contact_id="c1"), None)]),
        Output(links=[IdentityLink("anonymous_id", "v1", "a", ms(10))]),
        # Re-linked to the account it was linked to earlier in event time: that one wins.
        Output(links=[IdentityLink("anonymous_id", "v1", "b", ms(4))]),
        Output(links=[IdentityLink("contact_id", "c1", "a", ms(6))]),
        Output(links=[IdentityLink("contact_id", "c1", "z", ms(9))]),
        # A free-mail contact merged into a company domain, the domain into an ERP account.
        Output(links=[IdentityLink("contact_id", "c2", "kees@gmail.com", ms(1))]),
        Output(links=[IdentityLink("email", "jan@acme.nl", "acme.nl", ms(3))]),
        Output(links=[IdentityLink("account", "kees@gmail.com", "acme.nl", ms(4))]),
        Output(links=[IdentityLink("account", "acme.nl", "erp-1", ms(8))]),
        Output(
            transitions=[TransitionRow("a", None, "awareness", ms(0), "e1", "page_view", "web", 1)]
        ),
        Output(
            transitions=[
                TransitionRow(
                    "a", "awareness", "consideration", ms(5), "e2", "pricing_view", "web", 2
                )
            ]
        ),
        Output(
            transitions=[
                TransitionRow(
                    "a",
                    "awareness",
                    "consideration",
                    ms(5),
                    "e2",
                    "pricing_view",
                    "web",
                    3,
                    deleted=True,
                )
            ]
        ),
        Output(
            journeys=[JourneyRow("a", "awareness", ms(0), ms(0), ms(0), ms(0), 1, 1, (), None, 1)]
        ),
        Output(
            journeys=[
                JourneyRow(
                    "a", "consideration", ms(5), ms(0), ms(6), ms(6), 3, 2, ("buyer",), "x", 4
                )
            ]
        ),
        Output(
            journeys=[JourneyRow("gone", "awareness", ms(1), ms(1), ms(1), None, 1, 1, (), None, 1)]
        ),
        Output(
            journeys=[
                JourneyRow("gone", "awareness", ms(1), ms(1), ms(1), None, 1, 1, (), None, 2, True)
            ]
        ),
        Output(alerts=[AlertRow("al1", "cart_abandoned", "a", ms(7), "{}", 1)]),
        Output(alerts=[AlertRow("al1", "cart_abandoned", "a", ms(7), "{}", 2, resolved_at=ms(8))]),
        Output(alerts=[AlertRow("al2", "deal_stalled", "a", ms(9), "{}", 1)]),
        Output(alerts=[AlertRow("al2", "deal_stalled", "a", ms(9), "{}", 2, withdrawn=True)]),
        Output(alerts=[AlertRow("al3", "deal_stalled", "b", ms(9), "{}", 1)]),
        Output(dead_letters=[DeadLetterRow("dl1", ms(2), "invalid JSON", b"{", "file:1")]),
    ]


def moved(record: Any, seconds: int) -> Any:
    """The record as a retried delivery carries it: the same event_id, a later time."""
    from dataclasses import replace

    return replace(record, ts=record.ts + seconds * 1000)


def read_views(client: Client, db: str) -> dict[str, dict[Any, Any]]:
    """Every view's rows by key, times in ms, read with plain SQL (no FINAL)."""
    q = {
        "events_current": "SELECT event_id, toUnixTimestamp64Milli(occurred_at), account_id "
        "FROM {db}.events_current",
        "phase_transitions_current": "SELECT (account_id, to_phase), from_phase, "
        "toUnixTimestamp64Milli(transitioned_at), event_id FROM {db}.phase_transitions_current",
        "journeys_current": "SELECT account_id, phase, toUnixTimestamp64Milli(phase_since), events "
        "FROM {db}.journeys_current",
        "alerts_current": "SELECT alert_id, kind, account_id, "
        "toUnixTimestamp64Milli(resolved_at), status FROM {db}.alerts_current",
        "open_alerts": "SELECT alert_id, kind, account_id FROM {db}.open_alerts",
        "identity_links_current": "SELECT (kind, alias), account_id, "
        "toUnixTimestamp64Milli(linked_at) FROM {db}.identity_links_current",
        "dead_letters_current": "SELECT dead_letter_id, reason, payload "
        "FROM {db}.dead_letters_current",
    }
    out = {}
    for view, sql in q.items():
        found = client.query(sql.format(db=db)).result_rows
        out[view] = {tuple(r[0]) if isinstance(r[0], tuple) else r[0]: tuple(r[1:]) for r in found}
        assert len(out[view]) == len(found), f"{view} shows a key twice"
    return out


def expected_views(ref: FinalTables) -> dict[str, dict[Any, Any]]:
    """The same shape, from the reference."""
    current = ref.current()
    return {
        "events_current": {
            k: (e.record.ts, e.account_id or "") for k, e in current["events_current"].items()
        },
        "phase_transitions_current": {
            k: (t.from_phase or "", t.transitioned_at, t.event_id)
            for k, t in current["phase_transitions_current"].items()
        },
        "journeys_current": {
            k: (j.phase, j.phase_since, j.events) for k, j in current["journeys_current"].items()
        },
        "alerts_current": {
            k: (a.kind, a.account_id, a.resolved_at, a.status)
            for k, a in current["alerts_current"].items()
        },
        "open_alerts": {k: (a.kind, a.account_id) for k, a in current["open_alerts"].items()},
        "identity_links_current": {
            k: (link.account_id, link.linked_at)
            for k, link in current["identity_links_current"].items()
        },
        "dead_letters_current": {
            k: (d.reason, d.payload.decode()) for k, d in current["dead_letters_current"].items()
        },
    }


def counts(client: Client, db: str) -> dict[str, int]:
    """`SELECT count() FROM <view>`, as a BI tool writes it."""
    return {
        view: client.query(f"SELECT count() FROM {db}.{view}").result_rows[0][0] for view in VIEWS
    }


def write(sink: ClickHouseSink, batches: list[Output]) -> None:
    for batch in batches:
        sink.add(batch)
        sink.flush()


def test_plain_counts_are_right_after_writing_twice_and_superseding(
    ch_sink: Callable[[str], ClickHouseSink], ch_database: str
) -> None:
    sink = ch_sink(ch_database)
    everything = rows()
    write(sink, everything)
    write(sink, list(reversed(everything)))  # the same rows again, in the other order
    assert counts(sink.client, ch_database) == {
        "events_current": 3,  # e2 and e3 were delivered twice
        "phase_transitions_current": 1,  # consideration was deleted
        "journeys_current": 1,  # "gone" was merged away
        "alerts_current": 2,  # al2 was withdrawn
        "open_alerts": 1,  # al1 resolved, al2 withdrawn
        "identity_links_current": 6,
        "dead_letters_current": 1,
    }
    views = read_views(sink.client, ch_database)
    assert views["events_current"] == {
        "e1": (ms(0), "a"),
        "e2": (ms(5), "b"),  # v1 belongs to b: linked to it earlier in event time
        "e3": (ms(6), "a"),  # the earliest delivery, though written second
    }
    assert views["identity_links_current"][("contact_id", "c1")] == ("a", ms(6))
    # Each alias names the account it ends at, through merges of one or two steps.
    assert views["identity_links_current"][("contact_id", "c2")] == ("erp-1", ms(1))
    assert views["identity_links_current"][("email", "jan@acme.nl")] == ("erp-1", ms(3))
    assert views["identity_links_current"][("account", "kees@gmail.com")] == ("erp-1", ms(4))
    assert views["alerts_current"]["al1"][3] == "resolved"
    assert views == expected_views(final_tables(_joined(everything)))


def test_views_equal_final_on_the_tables(
    ch_sink: Callable[[str], ClickHouseSink], ch_database: str
) -> None:
    sink = ch_sink(ch_database)
    write(sink, rows())
    client, db = sink.client, ch_database
    final = {
        "events_current": f"SELECT count() FROM {db}.events FINAL",
        "phase_transitions_current": f"SELECT count() FROM {db}.phase_transitions FINAL",
        "journeys_current": f"SELECT count() FROM {db}.journeys FINAL",
        "alerts_current": f"SELECT count() FROM {db}.alerts FINAL WHERE withdrawn = 0",
        "open_alerts": f"SELECT count() FROM {db}.alerts FINAL "
        "WHERE withdrawn = 0 AND resolved_at IS NULL",
        "identity_links_current": f"SELECT count() FROM {db}.identity_links FINAL",
        "dead_letters_current": f"SELECT count() FROM {db}.dead_letters FINAL",
    }
    assert counts(client, db) == {
        v: client.query(sql).result_rows[0][0] for v, sql in final.items()
    }
    plain = client.query(f"SELECT count() FROM {db}.events").result_rows[0][0]
    assert plain > counts(client, db)["events_current"]  # the tables alone would count wrong


@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_any_order_and_batching_gives_the_reference_views(
    ch_client: Client, chdb_dsn: str, data: st.DataObject
) -> None:
    pieces = rows()
    chosen = data.draw(st.lists(st.sampled_from(pieces), min_size=1, max_size=30))
    order = data.draw(st.permutations(chosen))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(order)), max_size=4)))
    batches = [_joined(order[a:b]) for a, b in zip([0, *cuts], [*cuts, len(order)], strict=True)]
    database = f"v_{uuid.uuid4().hex[:12]}"
    migrate(ch_client, database)
    sink = ClickHouseSink(chdb_dsn, database)
    sink.setup()
    write(sink, batches)
    assert read_views(ch_client, database) == expected_views(final_tables(_joined(order)))
    ch_client.command(f"DROP DATABASE {database}")


def _joined(outputs: list[Output]) -> Output:
    out = Output()
    for piece in outputs:
        out.extend(piece)
    return out
