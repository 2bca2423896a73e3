"""Property tests: duplicates, delivery order and identity merge order change nothing."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from journeys.schemas.record import EventRecord
from journeys.sinks.reference import FinalTables
from tests.unit.engine.journey import ev, run

ANON_TYPES = ["page_view", "content_view", "search", "product_view", "pricing_view", "add_to_cart"]
ACCOUNT_TYPES = [
    "page_view",
    "pricing_view",
    "demo",
    "quote_requested",
    "quote_sent",
    "checkout_started",
    "add_to_cart",
    "order_placed",
    "order_delivered",
    "invoice_paid",
    "open",
    "sent",
    "meeting",
    "quote_rejected",
    "remove_from_cart",
    "survey_response",
    # Weighed differently by the engagement score (contract section 8).
    "click",
    "reply",
    "form_submit",
    "unsubscribe",
]


def snapshot(tables: FinalTables) -> tuple[object, ...]:
    """Everything a reader sees, without versions (which count steps, not results)."""
    journeys = {
        k: (
            j.phase,
            j.phase_since,
            j.first_seen,
            j.last_seen,
            j.last_activity,
            j.events,
            j.dmu_roles,
            j.engagement,
            j.engagement_at,
        )
        for k, j in tables.journeys.items()
    }
    transitions = {
        k: (t.from_phase, t.transitioned_at, t.event_id) for k, t in tables.transitions.items()
    }
    alerts = {
        k: (a.kind, a.account_id, a.raised_at, a.resolved_at)
        for k, a in tables.current()["alerts_current"].items()
    }
    events = {k: e.account_id for k, e in tables.events.items()}
    return journeys, transitions, alerts, events


@st.composite
def account_history(draw: st.DrawFn) -> list[EventRecord]:
    """One company's events: anonymous research, identified contacts, ERP orders."""
    events = []
    hours = st.floats(min_value=0, max_value=2000, allow_nan=False).map(lambda h: round(h, 1))
    for _ in range(draw(st.integers(1, 25))):
        kind = draw(st.sampled_from(["anon", "contact", "erp"]))
        at = draw(hours)
        if kind == "anon":
            events.append(ev(draw(st.sampled_from(ANON_TYPES)), at, anonymous_id="v1"))
        elif kind == "contact":
            events.append(ev(draw(st.sampled_from(ACCOUNT_TYPES)), at, email="jan@acme.nl"))
        else:
            events.append(ev(draw(st.sampled_from(ACCOUNT_TYPES)), at, account_id="erp-1"))
    return events


@given(account_history(), st.data())
@settings(max_examples=150, deadline=None)
def test_duplicate_delivery_changes_nothing(events: list[EventRecord], data: st.DataObject) -> None:
    extra = data.draw(st.lists(st.sampled_from(events), max_size=10))
    assert snapshot(run(events + extra)[0]) == snapshot(run(events)[0])


@given(account_history(), st.randoms(use_true_random=False))
@settings(max_examples=150, deadline=None)
def test_input_order_changes_nothing(events: list[EventRecord], rnd: random.Random) -> None:
    shuffled = list(events)
    rnd.shuffle(shuffled)
    assert snapshot(run(shuffled)[0]) == snapshot(run(events)[0])


@given(
    st.lists(
        st.tuples(st.sampled_from(ANON_TYPES), st.floats(0, 500).map(lambda h: round(h, 1))),
        min_size=1,
        max_size=12,
    ),
    st.lists(
        st.tuples(st.sampled_from(ACCOUNT_TYPES[:8]), st.floats(0, 500).map(lambda h: round(h, 1))),
        max_size=12,
    ),
    st.floats(0, 600).map(lambda h: round(h, 1)),
    st.floats(0, 600).map(lambda h: round(h, 1)),
)
@settings(max_examples=200, deadline=None)
def test_identity_merge_order_does_not_change_the_final_journey(
    anon: list[tuple[str, float]], known: list[tuple[str, float]], signup_at: float, erp_at: float
) -> None:
    """Whenever the visitor signs up and whenever the ERP id is learnt, the account's phase
    history is the one it would have had if everything had been known from the start."""
    stitched = [ev(t, h, anonymous_id="v1") for t, h in anon]
    stitched += [ev(t, h, email="jan@acme.nl", contact_id="c1") for t, h in known]
    stitched.append(
        ev("signup", signup_at, anonymous_id="v1", email="jan@acme.nl", contact_id="c1")
    )
    stitched.append(ev("call", erp_at, account_id="erp-1", contact_id="c1"))
    known_up_front = [
        ev(e.type, (e.ts - stitched[0].ts) / 3_600_000, event_id=e.event_id, account_id="erp-1")
        for e in stitched
    ]
    # Same event times: rebuild from the originals' own timestamps.
    known_up_front = [replace(e, ts=o.ts) for e, o in zip(known_up_front, stitched, strict=True)]
    merged, _ = run(stitched)
    direct, _ = run(known_up_front)
    assert list(merged.journeys) == ["erp-1"]

    def strip(t: FinalTables) -> dict[str, tuple[str | None, int, str]]:
        return {
            k[1]: (v.from_phase, v.transitioned_at, v.event_id) for k, v in t.transitions.items()
        }

    assert strip(merged) == strip(direct)
    m, d = merged.journeys["erp-1"], direct.journeys["erp-1"]
    assert (m.phase, m.phase_since, m.first_seen, m.last_seen, m.events) == (
        d.phase,
        d.phase_since,
        d.first_seen,
        d.last_seen,
        d.events,
    )
    # The merged score is the sum of both journeys' scores, decayed to the later activity:
    # the same in exact arithmetic as one journey's, the same to 6 decimals in floating point.
    assert m.engagement_at == d.engagement_at
    assert m.engagement == pytest.approx(d.engagement, abs=2e-6)
