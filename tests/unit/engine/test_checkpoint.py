"""An engine restored from its checkpoint continues exactly where the original was."""

from __future__ import annotations

import random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from journeys.schemas.record import EventRecord
from journeys.schemas.rows import Output
from journeys.sinks.reference import final_tables
from journeys.streams.engine import JourneyEngine, Sequencer
from tests.unit.engine.journey import HOUR, engine, ev, run, view
from tests.unit.engine.test_arrival import SHORT, arrival, histories, redeliver
from tests.unit.engine.test_properties import account_history, snapshot

Store = dict[str, dict[bytes, bytes]]


def save_changes(eng: JourneyEngine, store: Store) -> None:
    """Apply the engine's changes to a byte store (a compacted changelog per partition and
    one for the router)."""
    for name, changes in eng.changes().items():
        kept = store.setdefault(name, {})
        for key, value in changes.items():
            if value is None:
                kept.pop(key, None)
            else:
                kept[key] = value


def checkpoint_round_trip(eng: JourneyEngine, store: Store) -> JourneyEngine:
    """`save_changes`, then build a new engine from the store."""
    save_changes(eng, store)
    return JourneyEngine.restore(eng.config, {k: dict(v) for k, v in store.items()})


@given(account_history(), st.data())
@settings(max_examples=100, deadline=None)
def test_restore_continues_exactly(events: list[EventRecord], data: st.DataObject) -> None:
    ordered = sorted(events, key=lambda e: (e.ts, e.event_id))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(ordered)), max_size=3)))
    whole = engine()
    whole.process_all(ordered)
    whole.advance_to(ordered[-1].ts)
    expected = whole.take()

    store: Store = {}
    out, current, start = Output(), engine(), 0
    for cut in [*cuts, len(ordered)]:
        current.process_all(ordered[start:cut])
        out.extend(current.take())
        current = checkpoint_round_trip(current, store)
        start = cut
    current.advance_to(ordered[-1].ts)
    out.extend(current.take())
    assert snapshot(final_tables(out)) == snapshot(final_tables(expected))


def test_sequencer_releases_in_event_time_order_and_flags_late_events() -> None:
    seq = Sequencer()
    a, b, c = (
        ev("page_view", 2, event_id="a"),
        ev("page_view", 1, event_id="b"),
        ev("page_view", 3, event_id="c"),
    )
    assert seq.push(a) and seq.push(b) and seq.push(c)
    assert [e.event_id for e in seq.release(a.ts)] == ["b"]
    assert [e.event_id for e in seq.release(c.ts + 1)] == ["a", "c"]
    late = ev("page_view", 2.5, event_id="late")
    assert not seq.push(late) and seq.is_late(late)
    assert seq.push(ev("page_view", 4, event_id="d"))
    assert [e.event_id for e in seq.drain()] == ["d"] and len(seq) == 0


@given(histories(hours=60, size=30), st.randoms(use_true_random=False), st.data())
@settings(max_examples=100, deadline=None)
def test_restore_mid_stream_out_of_order_continues_exactly(
    events: list[EventRecord], rnd: random.Random, data: st.DataObject
) -> None:
    """Checkpoints taken while journeys wait to be folded again lose nothing."""
    deliveries = arrival(redeliver(events, rnd), rnd, 0)
    assert restored_view(deliveries, rnd, data, SHORT) == view(run(deliveries, **SHORT)[0])


def restored_view(
    deliveries: list[EventRecord], rnd: random.Random, data: st.DataObject, knobs: dict[str, Any]
) -> dict[str, dict[Any, Any]]:
    """What readers see after a run restored from its checkpoints at up to four drawn
    moments (every third event delivered as late), on 1 or 3 partitions."""
    cuts = set(data.draw(st.lists(st.integers(0, len(deliveries)), max_size=4)))
    store: Store = {}
    out, current = Output(), engine(rnd.choice([1, 3]), **knobs)
    for i, event in enumerate(deliveries):
        if i in cuts:
            out.extend(current.take())
            current = checkpoint_round_trip(current, store)
        current.process(event) if i % 3 else current.process_late(event)
    current.advance_to(max(e.ts for e in deliveries))
    out.extend(current.take())
    return view(final_tables(out))


@given(histories(hours=60, size=40), st.randoms(use_true_random=False), st.data())
@settings(max_examples=100, deadline=None)
def test_restore_continues_exactly_beyond_the_window(
    events: list[EventRecord], rnd: random.Random, data: st.DataObject
) -> None:
    """With a window of two hours most late events are older than it (applied as far as
    order allows): a restored engine still continues exactly as one never stopped."""
    config = {**SHORT, "window": 2 * HOUR}
    deliveries = arrival(redeliver(events, rnd), rnd, 0)
    cuts = set(data.draw(st.lists(st.integers(0, len(deliveries)), max_size=4)))
    store: Store = {}
    partitions = rnd.choice([1, 2, 3])
    whole, out_whole = engine(partitions, **config), Output()
    current, out = engine(partitions, **config), Output()
    for i, event in enumerate(deliveries):
        if i in cuts:
            out.extend(current.take())
            current = checkpoint_round_trip(current, store)
        for eng in (whole, current):
            eng.process(event) if i % 3 else eng.process_late(event)
    for eng, sink in ((whole, out_whole), (current, out)):
        eng.advance_to(max(e.ts for e in deliveries))
        sink.extend(eng.take())
    assert view(final_tables(out)) == view(final_tables(out_whole))
