"""Property tests: late data is data. Any arrival order, any lateness and redeliveries
with shifted times, with journeys in one partition or several, give the same tables as
replay of the same events sorted."""

from __future__ import annotations

import random
from contextlib import suppress
from dataclasses import replace
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from journeys.producers.simulator import simulate
from journeys.schemas.errors import InvalidEvent
from journeys.schemas.event import parse_event
from journeys.schemas.record import EventRecord
from tests.unit.engine.journey import DAY, HOUR, arrive, ev, realistic_arrival, run, view

WEB = ["page_view", "content_view", "search", "product_view", "pricing_view", "add_to_cart"]
ACCOUNT = [
    "page_view", "pricing_view", "demo", "meeting", "quote_requested", "quote_sent",
    "checkout_started", "add_to_cart", "remove_from_cart", "order_placed", "order_shipped",
    "order_delivered", "invoice_paid", "survey_response", "open", "sent", "quote_rejected",
    "deal_won", "click", "form_submit",
]  # fmt: skip

#: Who an event comes from: its identity fields and the types it may have. Two companies
#: with anonymous research, sign-ups, contacts and ERP accounts; a free-mail contact; and a
#: contact who moved between two ERP accounts (seen only with the accounts themselves); and
#: an account that keeps reordering.
WHO: dict[str, tuple[dict[str, str], list[str]]] = {
    "visitor-a": ({"anonymous_id": "va"}, WEB),
    "signup-a": ({"anonymous_id": "va", "email": "jan@acme.nl", "contact_id": "ca"}, ["signup"]),
    "jan": ({"email": "jan@acme.nl", "contact_id": "ca"}, ACCOUNT),
    "erp-a": ({"account_id": "erp-a", "contact_id": "ca"}, ACCOUNT),
    "erp-a-only": ({"account_id": "erp-a"}, ACCOUNT),
    "boss-a": ({"email": "boss@acme.nl"}, ACCOUNT),
    "visitor-b": ({"anonymous_id": "vb"}, WEB),
    "login-b": ({"anonymous_id": "vb", "email": "piet@beta.nl"}, ["login"]),
    "piet": ({"email": "piet@beta.nl"}, ACCOUNT),
    "kees": ({"email": "kees@gmail.com"}, ACCOUNT),
    "reorders": ({"account_id": "erp-c"}, ["order_placed", "order_placed", "order_delivered"]),
    "moved-a": ({"account_id": "erp-a", "contact_id": "cx"}, ACCOUNT),
    "moved-b": ({"account_id": "erp-b", "contact_id": "cx"}, ACCOUNT),
}

SHORT = {"cart_abandon_after": 2 * HOUR, "deal_stall_after": 10 * HOUR}


@st.composite
def histories(draw: st.DrawFn, hours: float, size: int = 40) -> list[EventRecord]:
    """Events of several accounts within `hours`, with identity merges, carts, deals and
    conditional rules; times on a coarse grid so that ties happen."""
    events = []
    grid = st.integers(0, int(hours * 4)).map(lambda q: q / 4)
    for _ in range(draw(st.integers(1, size))):
        fields, types = WHO[draw(st.sampled_from(sorted(WHO)))]
        extra: dict[str, Any] = {}
        if draw(st.integers(0, 9)) == 0:
            extra["dmu_role"] = draw(st.sampled_from(["buyer", "decider", "user"]))
        if draw(st.integers(0, 9)) == 0:
            extra["segment"] = draw(st.sampled_from(["roses", "tomatoes"]))
        events.append(ev(draw(st.sampled_from(types)), draw(grid), **fields, **extra))
    return events


def redeliver(events: list[EventRecord], rnd: random.Random) -> list[EventRecord]:
    """Some events delivered again with the same event_id and a time moved by up to 3 s."""
    copies = []
    for event in events:
        if rnd.random() < 0.2:
            copies.append(replace(event, ts=event.ts + rnd.choice([-3000, -1000, 1, 2500, 3000])))
    return events + copies


def arrival(deliveries: list[EventRecord], rnd: random.Random, max_delay: int) -> list[EventRecord]:
    """An arrival order: each delivery late by up to `max_delay` (0: any order at all)."""
    if max_delay == 0:
        shuffled = list(deliveries)
        rnd.shuffle(shuffled)
        return shuffled
    keyed = [(e.ts + rnd.randint(0, max_delay), i, e) for i, e in enumerate(deliveries)]
    return [e for _, _, e in sorted(keyed)]


def check(events: list[EventRecord], rnd: random.Random, max_delay: int, **config: Any) -> None:
    deliveries = redeliver(events, rnd)
    expected = view(run(deliveries, **config)[0])
    # The reference itself: redeliveries change nothing, the earliest time wins (a later
    # copy's time still counts as event time reached: the end is the same for both).
    earliest: dict[str, EventRecord] = {}
    for event in sorted(deliveries, key=lambda e: e.ts):
        earliest.setdefault(event.event_id, event)
    end = max(e.ts for e in deliveries)
    assert view(run(list(earliest.values()), until=end, **config)[0]) == expected
    arriving = arrival(deliveries, rnd, max_delay)
    assert view(arrive(arriving, partitions=rnd.choice([1, 3]), **config)[0]) == expected
    lateness = rnd.choice([0, HOUR, 6 * HOUR])
    partitions = rnd.choice([1, 2, 4])
    got = arrive(
        arriving, lateness=lateness, batch=rnd.randint(1, 5), partitions=partitions, **config
    )
    assert view(got[0]) == expected


@given(histories(hours=60), st.randoms(use_true_random=False), st.sampled_from([0, HOUR, DAY]))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_within_the_window_any_arrival_gives_the_sorted_tables(
    events: list[EventRecord], rnd: random.Random, max_delay: int
) -> None:
    """Three days of history (the default window): every delivery at most that late."""
    check(events, rnd, max_delay, **SHORT)


@given(histories(hours=2000, size=60), st.randoms(use_true_random=False))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_with_a_window_over_the_whole_history_any_permutation_gives_the_sorted_tables(
    events: list[EventRecord], rnd: random.Random
) -> None:
    """Months of history, the contract's thresholds, any permutation at all."""
    check(events, rnd, 0, window=3000 * HOUR)


def test_realistic_deliveries_held_back_any_amount_give_the_sorted_link_times() -> None:
    """Simulated B2B history (visitors who sign up, ERP accounts, late exports), delivered
    as real sources do and then held back again by up to three days, as a stream stalled
    by a rebalance or an outage would be: identity links and their times are replay's."""
    records = []
    for line in simulate(accounts=150, days=60, seed=23):
        with suppress(InvalidEvent):  # the simulator sends some malformed lines too
            records.append(parse_event(line))
    deliveries = realistic_arrival(records, seed=5)
    expected = view(run(deliveries)[0])
    assert sum(1 for kind, _ in expected["links"] if kind == "account") >= 10
    rnd = random.Random(7)
    for delay in (DAY, 3 * DAY):
        keyed = [(e.ts + rnd.randint(0, delay), i, e) for i, e in enumerate(deliveries)]
        held = [e for _, _, e in sorted(keyed)]
        assert view(arrive(held, partitions=3)[0]) == expected, delay
