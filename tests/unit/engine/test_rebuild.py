"""`journeys rebuild` in the engine: new rules mid-stream give what a replay with them gives.

A rebuild reaches every partition at one point of the stream. From there each
partition publishes every journey again under the new generation, then
everything after it; the new generation's rows, read as the `_current` views
read them, equal a sorted replay of all the events with the new rules. Rows
the old generation had as they are come `restated` (stored, not delivered);
what the new rules raise, move or withdraw is delivered as corrections.
"""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from journeys.schemas.record import EventRecord
from journeys.schemas.rows import Output
from journeys.sinks.reference import final_tables
from journeys.streams.engine import EngineConfig, JourneyEngine, load_rules
from journeys.streams.engine.commands import Rebuild
from journeys.streams.engine.rules import default_rules_text, rules_from_text
from tests.unit.engine.journey import engine, ev, run, view
from tests.unit.engine.test_arrival import SHORT, arrival, histories

#: Other rules: demos and pricing pages mean a decision; accounts heat up at 6 points.
OTHER = (
    default_rules_text()
    .replace(
        'types = ["checkout_started", "quote_sent", "quote_accepted", "deal_stage_changed"]',
        'types = ["checkout_started", "quote_sent", "quote_accepted", "deal_stage_changed",'
        ' "demo", "pricing_view"]',
    )
    .replace("warm = 10.0\nhot = 25.0", "warm = 3.0\nhot = 6.0")
)
SPAN = 300.0  # hours
NARROW = {**SHORT, "window": 2 * 3_600_000}


def of_generation(out: Output, generation: int) -> Output:
    """The derived rows of one generation as stored (events are not derived: every
    generation's; `restated` is not stored)."""
    return Output(
        events=out.events,
        transitions=[
            replace(t, restated=False) for t in out.transitions if t.generation == generation
        ],
        journeys=[j for j in out.journeys if j.generation == generation],
        alerts=[replace(a, restated=False) for a in out.alerts if a.generation == generation],
        links=out.links,
    )


def derived(out: Output, generation: int) -> dict[str, dict[Any, Any]]:
    """What the `_current` views of one generation show, events aside."""
    seen = view(final_tables(of_generation(out, generation)))
    return {k: v for k, v in seen.items() if k != "events"}


def test_the_other_rules_differ_from_the_defaults() -> None:
    """The test's rules move accounts and raise alerts the defaults do not."""
    events = [
        ev("page_view", 0),
        ev("demo", 1, channel="sales"),
        ev("pricing_view", 2),
        ev("pricing_view", 3),
    ]
    before, _ = run(events, **NARROW)
    after, _ = run(events, rules=rules_from_text(OTHER), **NARROW)
    assert {t[1] for t in before.transitions} == {"awareness", "consideration"}
    assert {t[1] for t in after.transitions} == {"awareness", "decision"}
    assert {a.kind for a in after.alerts.values()} - {a.kind for a in before.alerts.values()}


@given(histories(hours=SPAN, size=40), st.randoms(use_true_random=False))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_rebuilt_mid_stream_gives_a_replay_with_the_new_rules(
    events: list[EventRecord], rnd: random.Random
) -> None:
    """Any arrival, one partition or three, the rebuild anywhere in it: the new
    generation's tables are a sorted replay's with the new rules (journeys, counts,
    transitions, alerts, engagement), later events included."""
    deliveries = arrival(events, rnd, 0)
    cut = rnd.randint(0, len(deliveries))
    eng = engine(rnd.choice([1, 3]), **NARROW)
    out = Output()
    for event in deliveries[:cut]:
        eng.process(event)
    out.extend(eng.take())
    eng.rebuild(1, OTHER)
    for event in deliveries[cut:]:
        eng.process(event)
    eng.advance_to(max(e.ts for e in events))
    out.extend(eng.take())
    expected, _ = run(events, rules=rules_from_text(OTHER), generation=1, **NARROW)
    assert derived(out, 1) == {k: v for k, v in view(expected).items() if k != "events"}
    assert {g.partition for g in out.generations} == set(range(len(eng.parts)))


@given(histories(hours=SPAN, size=40))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_only_what_the_new_rules_change_is_delivered(events: list[EventRecord]) -> None:
    """Alert receivers get what the new rules raise, move or withdraw, nothing restated:
    the alerts not `restated` are exactly the difference of the two replays."""
    until = max(e.ts for e in events)
    old, _ = run(events, until, **NARROW)
    new, _ = run(events, until, rules=rules_from_text(OTHER), generation=1, **NARROW)
    eng = engine(**NARROW)
    eng.process_all(sorted(events, key=lambda e: (e.ts, e.event_id)))
    eng.advance_to(until)
    eng.take()
    eng.rebuild(1, OTHER)
    out = eng.take()

    def shown(a: Any) -> tuple[Any, ...]:
        return (a.kind, a.account_id, a.raised_at, a.details, a.resolved_at)

    delivered = {a.alert_id: a for a in out.alerts if not a.restated}
    was = {k: shown(a) for k, a in old.alerts.items() if not a.withdrawn}
    now = {k: shown(a) for k, a in new.alerts.items() if not a.withdrawn}
    assert {k for k, a in delivered.items() if a.withdrawn} == was.keys() - now.keys()
    changed = {k for k in now if was.get(k) != now[k]}
    assert {k for k, a in delivered.items() if not a.withdrawn} == changed
    assert all(a.generation == 1 for a in out.alerts)
    moved = {(t.account_id, t.to_phase) for t in out.transitions if not t.restated}
    differ = {
        k
        for k in old.transitions.keys() | new.transitions.keys()
        if k not in old.transitions
        or k not in new.transitions
        or replace(old.transitions[k], version=0)
        != replace(new.transitions[k], version=0, generation=0)
    }
    assert moved == differ


def test_a_rebuild_read_again_changes_nothing() -> None:
    """The same rebuild applied twice (a request read again after a restart) is done once;
    an older generation is ignored too."""
    eng = engine(**NARROW)
    eng.process_all([ev("page_view", 0), ev("demo", 1, channel="sales")])
    eng.take()
    eng.rebuild(2, OTHER)
    first = eng.take()
    assert {(t.to_phase, t.deleted) for t in first.transitions} == {
        ("awareness", False),
        ("decision", False),
        ("consideration", True),
    }
    part = eng.parts[0]
    part.apply(Rebuild(part.seq + 1, 2, OTHER))
    part.apply(Rebuild(part.seq + 1, 1, default_rules_text()))
    again = eng.take()
    assert not again.transitions and not again.alerts and not again.generations


def test_rules_that_do_not_compile_are_not_applied() -> None:
    """A rebuild whose rules do not compile leaves the partition as it was, reporting
    nothing (the command checks the rules before it sends them)."""
    eng = engine(**NARROW)
    eng.process(ev("page_view", 0))
    eng.take()
    eng.rebuild(1, 'phases = ["a"]\n[[rule]]\nphase = "nowhere"\ntypes = ["x"]\n')
    out = eng.take()
    assert not out.generations and not out.transitions
    assert eng.parts[0].config.generation == 0


def test_restored_state_keeps_the_rebuilt_rules_and_generation() -> None:
    """A worker restarted with the configured (old) rules continues with the rules and
    generation its state was rebuilt to, and derives what a replay with them does."""
    first = [ev("page_view", 0), ev("demo", 1, channel="sales")]
    later = [ev("pricing_view", 30), ev("pricing_view", 31), ev("pricing_view", 32)]
    config = EngineConfig(rules=load_rules(), **NARROW)
    eng = JourneyEngine(config, 2)
    eng.process_all(first)
    eng.rebuild(1, OTHER)
    out = eng.take()
    state = eng.changes()
    restored = JourneyEngine.restore(config, state)  # type: ignore[arg-type]
    assert all(p.config.generation == 1 for p in restored.parts)
    assert all(p.config.rules.engagement.hot == 6.0 for p in restored.parts)
    restored.process_all(later)
    restored.advance_to(later[-1].ts)
    out.extend(restored.take())
    expected, _ = run(first + later, rules=rules_from_text(OTHER), generation=1, **NARROW)
    assert derived(out, 1) == {k: v for k, v in view(expected).items() if k != "events"}


@given(histories(hours=SPAN, size=40), st.randoms(use_true_random=False))
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_a_rebuild_read_again_after_a_crash_publishes_the_same_generation(
    events: list[EventRecord], rnd: random.Random
) -> None:
    """A worker killed before the rebuild's transaction committed: its successor restores
    the last committed state and reads the rebuild again; the new generation is the one
    an uninterrupted run publishes."""
    deliveries = arrival(events, rnd, 0)
    config = EngineConfig(rules=load_rules(), **NARROW)
    partitions = rnd.choice([1, 2])
    first = JourneyEngine(config, partitions)
    first.process_all(deliveries)
    first.take()
    state = {
        part: {k: v for k, v in records.items() if v is not None}
        for part, records in first.changes().items()
    }
    first.rebuild(1, OTHER)
    whole = first.take()
    again = JourneyEngine.restore(config, state)
    again.rebuild(1, OTHER)
    retried = again.take()
    assert derived(retried, 1) == derived(whole, 1)
    assert {g.partition for g in retried.generations} == set(range(partitions))
