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
from journeys.streams.engine.state import Holder
from tests.unit.engine.journey import HOUR, engine, ev, run, view
from tests.unit.engine.test_arrival import SHORT, arrival, histories, redeliver
from tests.unit.engine.test_properties import account_history, snapshot


def checkpoint_round_trip(eng: JourneyEngine, store: dict[str, dict[str, Any]]) -> JourneyEngine:
    """Apply the engine's changes to a byte store, then build a new engine from the store."""
    changes = eng.changes()
    for key, holder in changes.holders.items():
        if holder is None:
            store["holders"].pop(key, None)
        else:
            store["holders"][key] = holder.to_bytes()
    for alias, target in changes.aliases.items():
        if target is None:
            store["aliases"].pop(alias, None)
        else:
            store["aliases"][alias] = target
    store["redirects"].update(changes.redirects)
    store["meta"] = changes.meta
    return JourneyEngine.restore(
        eng.config,
        {k: Holder.from_bytes(v) for k, v in store["holders"].items()},
        dict(store["aliases"]),
        dict(store["redirects"]),
        dict(store["meta"]),
    )


@given(account_history(), st.data())
@settings(max_examples=100, deadline=None)
def test_restore_continues_exactly(events: list[EventRecord], data: st.DataObject) -> None:
    ordered = sorted(events, key=lambda e: (e.ts, e.event_id))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(ordered)), max_size=3)))
    whole = engine()
    whole.process_all(ordered)
    whole.advance_to(ordered[-1].ts)
    expected = whole.take()

    store: dict[str, dict[str, Any]] = {"holders": {}, "aliases": {}, "redirects": {}, "meta": {}}
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
    cuts = set(data.draw(st.lists(st.integers(0, len(deliveries)), max_size=4)))
    store: dict[str, dict[str, Any]] = {"holders": {}, "aliases": {}, "redirects": {}, "meta": {}}
    out, current = Output(), engine(**SHORT)
    for i, event in enumerate(deliveries):
        if i in cuts:
            out.extend(current.take())
            current = checkpoint_round_trip(current, store)
        current.process(event) if i % 3 else current.process_late(event)
    current.advance_to(max(e.ts for e in deliveries))
    out.extend(current.take())
    assert view(final_tables(out)) == view(run(deliveries, **SHORT)[0])


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
    store: dict[str, dict[str, Any]] = {"holders": {}, "aliases": {}, "redirects": {}, "meta": {}}
    whole, out_whole = engine(**config), Output()
    current, out = engine(**config), Output()
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
