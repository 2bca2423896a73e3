"""An engine restored from its checkpoint continues exactly where the original was."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from journeys.schemas.rows import Output
from journeys.sinks.reference import final_tables
from journeys.streams.engine import JourneyEngine, Sequencer
from journeys.streams.engine.state import Holder
from tests.unit.engine.journey import engine, ev
from tests.unit.engine.test_properties import account_history, snapshot


def checkpoint_round_trip(eng: JourneyEngine, store: dict[str, dict]) -> JourneyEngine:  # type: ignore[type-arg]
    """Apply the engine's changes to a byte store, then build a new engine from the store."""
    changes = eng.changes()
    for key, holder in changes.holders.items():
        if holder is None:
            store["holders"].pop(key, None)
        else:
            store["holders"][key] = holder.to_bytes()
    for alias, key in changes.aliases.items():
        if key is None:
            store["aliases"].pop(alias, None)
        else:
            store["aliases"][alias] = key
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
def test_restore_continues_exactly(events, data) -> None:  # type: ignore[no-untyped-def]
    ordered = sorted(events, key=lambda e: (e.ts, e.event_id))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(ordered)), max_size=3)))
    whole = engine()
    whole.process_all(ordered)
    whole.advance_to(ordered[-1].ts)
    expected = whole.take()

    store: dict[str, dict] = {"holders": {}, "aliases": {}, "redirects": {}, "meta": {}}  # type: ignore[type-arg]
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
    a, b, c = ev("page_view", 2, event_id="a"), ev("page_view", 1, event_id="b"), ev("page_view", 3, event_id="c")
    assert seq.push(a) and seq.push(b) and seq.push(c)
    assert [e.event_id for e in seq.release(a.ts)] == ["b"]
    assert [e.event_id for e in seq.release(c.ts + 1)] == ["a", "c"]
    late = ev("page_view", 2.5, event_id="late")
    assert not seq.push(late) and seq.is_late(late)
    assert seq.push(ev("page_view", 4, event_id="d"))
    assert [e.event_id for e in seq.drain()] == ["d"] and len(seq) == 0
