"""Exact forever (issue 17): with an event-time span many times the window, any arrival,
redeliveries at any age, re-sent exports, imports in account order, merges and erasures
give the tables of sorted replay; and no journey's state needs a value above 256 KiB."""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from journeys.producers.simulator import simulate
from journeys.schemas.errors import InvalidEvent
from journeys.schemas.event import parse_event
from journeys.schemas.record import EventRecord
from journeys.schemas.rows import Output
from journeys.sinks.reference import FinalTables, final_tables
from journeys.streams.engine import EngineConfig, JourneyEngine, load_rules
from journeys.streams.engine.commands import (
    Absorb,
    AbsorbPart,
    Command,
    Release,
    Route,
    from_wire,
    partition_of,
    to_wire,
)
from journeys.streams.engine.partition import META, PartitionEngine, StateFormatError
from journeys.streams.engine.state import MAX_SEGMENT, Holder
from tests.unit.engine.journey import (
    DAY,
    HOUR,
    arrive,
    engine,
    ev,
    realistic_arrival,
    run,
    view,
)
from tests.unit.engine.test_arrival import SHORT, arrival, histories
from tests.unit.engine.test_checkpoint import Store, checkpoint_round_trip, restored_view

#: A window of two hours over histories of 25 days: almost everything late is older than it.
NARROW = {**SHORT, "window": 2 * HOUR}
SPAN = 600.0  # hours
LIMIT = 256 * 1024


def earliest(deliveries: list[EventRecord]) -> list[EventRecord]:
    """One copy per event_id, the earliest (what the events table keeps)."""
    best: dict[str, EventRecord] = {}
    for event in deliveries:
        other = best.get(event.event_id)
        if other is None or (event.ts, event.event_id) < (other.ts, other.event_id):
            best[event.event_id] = event
    return list(best.values())


def derived(tables: FinalTables) -> dict[str, dict[Any, Any]]:
    """What the journeys derive from events (the events table aside)."""
    seen = view(tables)
    return {k: v for k, v in seen.items() if k != "events"}


def far_copies(events: list[EventRecord], rnd: random.Random) -> list[EventRecord]:
    """Some events delivered again with their time moved by up to ten days either way."""
    copies = [
        replace(e, ts=e.ts + rnd.randint(-10 * DAY, 10 * DAY)) for e in events if rnd.random() < 0.3
    ]
    return events + copies


@given(histories(hours=SPAN, size=40), st.randoms(use_true_random=False))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_any_arrival_far_beyond_the_window_gives_the_sorted_tables(
    events: list[EventRecord], rnd: random.Random
) -> None:
    """Any order, copies days apart, one partition or three: the tables of sorted replay
    of the distinct events at their earliest times (counts, intervals, episodes, alerts)."""
    deliveries = arrival(far_copies(events, rnd), rnd, 0)
    partitions = rnd.choice([1, 3])
    arrived, _ = arrive(deliveries, partitions=partitions, **NARROW)
    until = max(e.ts for e in deliveries)
    assert view(arrived) == view(run(deliveries, **NARROW)[0])
    assert derived(arrived) == derived(run(earliest(deliveries), until, **NARROW)[0])


@given(histories(hours=SPAN, size=40), st.randoms(use_true_random=False))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_a_history_delivered_twice_and_re_sent_a_month_later_counts_once(
    events: list[EventRecord], rnd: random.Random
) -> None:
    """The whole history twice in a row, then again a month of event time later (a re-run
    export): one event per event_id in every count, interval and alert."""
    deliveries = arrival(events, rnd, 0)
    until = max(e.ts for e in events) + 30 * DAY
    eng = engine(rnd.choice([1, 2]), **NARROW)
    out = Output()
    for event in deliveries + deliveries:
        eng.process(event)
    out.extend(eng.take())
    eng.advance_to(until)
    for event in deliveries:
        eng.process_late(event)
    eng.advance_to(until)
    out.extend(eng.take())
    expected, _ = run(events, until, **NARROW)
    assert view(final_tables(out)) == view(expected)
    assert sum(j.events for j in expected.current()["journeys_current"].values()) <= len(events)


@given(histories(hours=SPAN, size=40), st.randoms(use_true_random=False))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_a_history_imported_account_after_account_gives_the_sorted_tables(
    events: list[EventRecord], rnd: random.Random
) -> None:
    """An export file delivered in customer order into a running pipeline: each
    customer's events in time order, customers one after another, all of them late."""
    live = ev("page_view", SPAN + 24, account_id="bystander")
    who = {id(e): (e.account_id or e.email or e.anonymous_id or "") for e in events}
    ordered = sorted(events, key=lambda e: (who[id(e)], e.ts, e.event_id))
    eng = engine(rnd.choice([1, 3]), **NARROW)
    eng.process(live)
    eng.process_late_batch(ordered)
    eng.advance_to(live.ts)
    assert view(final_tables(eng.take())) == view(run([live, *events], **NARROW)[0])


@given(histories(hours=SPAN, size=40), st.randoms(use_true_random=False), st.data())
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_restored_mid_stream_far_beyond_the_window_gives_the_sorted_tables(
    events: list[EventRecord], rnd: random.Random, data: st.DataObject
) -> None:
    """Checkpoints (`changes` / `restore`) anywhere: the sorted tables all the same."""
    deliveries = arrival(far_copies(events, rnd), rnd, 0)
    assert restored_view(deliveries, rnd, data, NARROW) == view(run(deliveries, **NARROW)[0])


#: Who may be erased without changing who the others are: these people's events carry
#: nothing but the journey's own key.
ERASABLE = {"erp-c", "kees@gmail.com", "boss@acme.nl"}


@given(histories(hours=SPAN, size=40), st.randoms(use_true_random=False))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_an_erased_journey_is_what_it_would_be_without_those_events(
    events: list[EventRecord], rnd: random.Random
) -> None:
    deliveries = arrival(events, rnd, 0)
    candidates = [e for e in events if (e.account_id or e.email) in ERASABLE and not e.contact_id]
    gone = {e.event_id for e in candidates if rnd.random() < 0.6}
    eng = engine(rnd.choice([1, 3]), **NARROW)
    out = Output()
    for event in deliveries:
        eng.process(event)
    eng.advance_to(max(e.ts for e in events))
    out.extend(eng.take())
    stored = final_tables(out).current()["events_current"]
    by_key: dict[str, list[str]] = {}
    for event_id in sorted(gone):
        key = stored[event_id].account_id or eng.router.identity.aliases.get(
            "e:" + (next(e for e in events if e.event_id == event_id).email or ""), ""
        )
        by_key.setdefault(key, []).append(event_id)
    for key, ids in by_key.items():
        eng.erase(key, ids)
    out.extend(eng.take())
    kept = [e for e in events if e.event_id not in gone]
    expected, _ = run(kept, max(e.ts for e in events), **NARROW)
    got = derived(final_tables(out))
    want = derived(expected)
    strip = {"journeys": lambda j: replace(j, contacts=0)}
    for table, fix in strip.items():
        got[table] = {k: fix(v) for k, v in got[table].items()}
        want[table] = {k: fix(v) for k, v in want[table].items()}
    del got["links"], want["links"]  # the router's part of an erasure (another change)
    assert got == want


def test_erase_follows_a_journey_that_merged_on() -> None:
    """An erasure sent to a visitor's key finds its events in the account it merged into."""
    events = [
        ev("pricing_view", 0, event_id="v1", anonymous_id="v"),
        ev("add_to_cart", 1, event_id="v2", anonymous_id="v"),
        ev("signup", 2, event_id="s", anonymous_id="v", email="ann@acme.nl"),
    ]
    eng = engine(3)
    eng.process_all(events)
    eng.advance_to(events[-1].ts + 10 * DAY)
    visitor = next(k for part in eng.parts for k in part.forwards.recent)
    eng.erase(visitor, ["v2"])
    eng.advance_to(events[-1].ts + 10 * DAY)
    got = derived(final_tables(eng.take()))
    want = derived(run([events[0], events[2]], events[-1].ts + 10 * DAY)[0])
    assert got["journeys"] == want["journeys"] and got["alerts"] == want["alerts"]


# ------------------------------------------------------------------ bounded records


def bulk(n: int, span: int, **identity: str) -> list[EventRecord]:
    """`n` events of one journey spread over `span` ms (built directly: fast)."""
    types = ["page_view", "pricing_view", "add_to_cart", "checkout_started", "order_placed"]
    start = 1_780_000_000_000
    return [
        EventRecord(
            event_id=f"bulk-{i:07d}",
            channel="order" if i % 5 == 4 else "web",
            type=types[i % 5],
            ts=start + i * span // n,
            **identity,
        )
        for i in range(n)
    ]


def largest(eng: JourneyEngine) -> tuple[int, int]:
    """The largest value of the engine's changes, and all of them together."""
    sizes = [len(v) for part in eng.changes().values() for v in part.values() if v is not None]
    return max(sizes), sum(sizes)


def test_a_100000_event_account_is_stored_in_bounded_records() -> None:
    events = bulk(100_000, 2 * DAY, account_id="huge")
    eng = JourneyEngine(EngineConfig(rules=load_rules()))
    eng.process_all(events)
    eng.advance_to(events[-1].ts)
    eng.take()
    top, total = largest(eng)
    assert top <= LIMIT
    assert eng.holders["huge"].events == 100_000
    assert total / len(events) < 60  # bytes per event, archive included
    # The history delivered again counts once, and the records stay bounded.
    eng.process_late_batch(events[::7])
    assert eng.holders["huge"].events == 100_000
    assert largest(eng)[0] <= LIMIT


def test_a_hostile_visitor_cannot_outgrow_a_record_or_a_message() -> None:
    """200 events alternating 30 KB segments, then identified (its state travels to the
    account's partition): every record and every command stays small; segments are cut
    to `MAX_SEGMENT` in journey state and rows."""
    big = ["x" * 30_000, "y" * 30_000]
    visitor = [
        replace(e, segment=big[i % 2], context=orjson.dumps({"segment": big[i % 2]}).decode())
        for i, e in enumerate(bulk(200, HOUR, anonymous_id="evil"))
    ]
    signup = ev("signup", 0, anonymous_id="evil", email="evil@acme.nl")
    signup = replace(signup, ts=visitor[-1].ts + 1)
    eng = JourneyEngine(EngineConfig(rules=load_rules(), window=HOUR // 4), 3)
    sent: list[bytes] = []
    for part in eng.parts:
        take = part.take_outbox

        def recorded(take: Any = take) -> list[tuple[int, Command]]:
            out = take()
            sent.extend(to_wire(c) for _, c in out)
            return out

        part.take_outbox = recorded  # type: ignore[method-assign]
    eng.process_all(visitor)
    assert largest(eng)[0] <= LIMIT
    eng.process(signup)
    eng.advance_to(signup.ts + DAY)
    out = eng.take()
    assert largest(eng)[0] <= LIMIT
    assert sent and max(map(len, sent)) <= LIMIT
    rows = [j for j in out.journeys if j.account_id == "acme.nl"]
    assert rows and rows[-1].events == 201 and len(rows[-1].segment or "") == MAX_SEGMENT
    assert len(out.events) == 201  # the stored events keep their context whole
    assert sum(len(e.record.context) > 30_000 for e in out.events) == 200


def test_an_absorb_in_parts_survives_a_restart_between_them() -> None:
    """The archive chunks of a released journey arrive ahead of its absorb; the winner's
    partition saves them, and the absorb after a restart finds them."""
    config = EngineConfig(rules=load_rules(), window=HOUR)
    events = bulk(1_500, 4 * DAY, anonymous_id="v")
    home = PartitionEngine(config, 0, 2)
    for i, event in enumerate(events):
        home.apply(Route(i + 1, "?a:v", 0, 0, False, event))
    home.take()
    winner = "x"  # on the other partition
    assert partition_of(winner, 2) == 1
    home.apply(Release(len(events) + 1, "?a:v", winner, 4, events[-1].ts))
    commands = [from_wire(orjson.loads(to_wire(c))) for _, c in home.take_outbox()]
    parts = [c for c in commands if isinstance(c, AbsorbPart)]
    absorb = next(c for c in commands if isinstance(c, Absorb))
    assert len(parts) >= 5 and absorb.parts == len(parts)
    assert isinstance(absorb.holder, Holder) and not absorb.holder.archive.chunks

    whole = PartitionEngine(config, 1, 2)
    whole.apply_all(commands)
    store: dict[bytes, bytes] = {}
    split = PartitionEngine(config, 1, 2)
    split.apply_all(parts[:3])
    for key, value in split.changes().items():
        if value is None:
            store.pop(key, None)
        else:
            store[key] = value
    split = PartitionEngine.restore(config, store, 1, 2)
    split.apply_all([*parts[3:], absorb])
    a, b = whole.holders[winner], split.holders[winner]
    assert a.events == b.events == 1_500
    assert sorted(a.history()) == sorted(b.history())
    assert a.to_bytes() == b.to_bytes()
    assert not any(k.startswith(b"i:") for k, v in split.changes().items() if v is not None)


def test_a_record_deleted_with_its_journey_leaves_no_chunk() -> None:
    """A released journey's archive chunks are deleted with it (tombstones)."""
    eng = JourneyEngine(EngineConfig(rules=load_rules(), window=HOUR), 2)
    store: Store = {}
    visitor = bulk(800, 3 * DAY, anonymous_id="v")
    eng.process_all(visitor)
    eng.advance_to(visitor[-1].ts + DAY)
    eng = checkpoint_round_trip(eng, store)
    assert any(k.startswith(b"k:?a:v") for part in store.values() for k in part)
    eng.process(replace(ev("signup", 0, anonymous_id="v", email="a@b.nl"), ts=visitor[-1].ts + 2))
    eng.take()
    eng = checkpoint_round_trip(eng, store)
    assert not any(k.startswith((b"k:?a:v", b"h:?a:v")) for part in store.values() for k in part)
    assert eng.holders["b.nl"].events == 801


def test_state_saved_before_the_archive_is_refused_with_what_to_do() -> None:
    """A journey saved by the engine that forgot events past the window cannot be folded
    again exactly: restoring it says so instead of silently losing its history."""
    config = EngineConfig.default()
    old = {b"h:acme.nl": Holder("acme.nl", 3, 0).to_bytes(), META: b'{"clock": 5}'}
    with pytest.raises(StateFormatError, match="JOURNEYS_TOPIC_PREFIX"):
        PartitionEngine.restore(config, old)
    current = PartitionEngine(config)
    current.holders["acme.nl"] = Holder("acme.nl", 3, 0)
    current._touched.add("acme.nl")
    saved = {k: v for k, v in current.changes().items() if v is not None}
    assert PartitionEngine.restore(config, saved).holders.keys() == {"acme.nl"}


class _AbsorbsLate(JourneyEngine):
    """Absorbs wait in a queue and go out after later router commands, a few at a time,
    as on a busy topic: winners merge on before the absorbs for them arrive."""

    def __init__(self, config: EngineConfig, partitions: int) -> None:
        super().__init__(config, partitions)
        self.queue: list[tuple[int, Command]] = []
        self.rnd = random.Random(1)

    def _deliver(self) -> None:
        commands, links = self.router.take()
        self._links += links
        for partition, command in commands:
            self._one(partition, command)
            while self.queue and self.rnd.random() < 0.02:
                self._one(*self.queue.pop(0))

    def _one(self, partition: int, command: Command) -> None:
        part = self.parts[partition]
        part.apply(from_wire(orjson.loads(to_wire(command))))
        self.queue += part.take_outbox()

    def take(self) -> Output:
        while self.queue:
            self._one(*self.queue.pop(0))
        return super().take()


def test_absorbs_forwarded_to_a_winner_that_merged_on_take_their_archive_along() -> None:
    """An absorb whose winner merged on meanwhile follows it, with the archive chunks that
    came ahead of it (they once stayed behind: the journey lost its older events)."""
    events = []
    for line in simulate(accounts=120, days=45, seed=5):
        try:
            events.append(parse_event(line))
        except InvalidEvent:
            pass
    arriving = sorted(realistic_arrival(events, seed=4), key=lambda e: (e.ts, e.event_id))
    config = EngineConfig(rules=load_rules(), window=HOUR)  # old events in archives
    tables = []
    for eng in (JourneyEngine(config, 4), _AbsorbsLate(config, 4)):
        eng.process_all(arriving)
        eng.advance_to(arriving[-1].ts)
        tables.append(final_tables(eng.take()))
    assert derived(tables[1]) == derived(tables[0])
