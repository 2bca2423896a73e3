"""Journeys in partitions: merged journeys' state travels between partitions as absorbs,
and however late an absorb comes, the tables are those of sorted replay."""

from __future__ import annotations

import random
from collections import deque

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from journeys.schemas.record import EventRecord
from journeys.schemas.rows import Output
from journeys.sinks.reference import final_tables
from journeys.streams.engine import EngineConfig, JourneyEngine, PartitionEngine, load_rules
from journeys.streams.engine.commands import (
    Absorb,
    Command,
    Expect,
    from_wire,
    partition_of,
    to_wire,
)
from tests.unit.engine.journey import ev, ms, run, view
from tests.unit.engine.test_arrival import SHORT, arrival, histories, redeliver


class SlowAbsorbs(JourneyEngine):
    """Absorbs (partition to partition) wait for a random number of calls before they are
    delivered, as on a busy topic; every command goes through its wire format."""

    def __init__(self, config: EngineConfig, partitions: int, rnd: random.Random) -> None:
        super().__init__(config, partitions)
        self.rnd = rnd
        self.held: list[tuple[int, Command]] = []

    def _deliver(self) -> None:
        commands, links = self.router.take()
        self._links += links
        queue: deque[tuple[int, Command]] = deque(commands)
        keep = []
        for item in self.held:
            if self.rnd.random() < 0.3:
                queue.append(item)
            else:
                keep.append(item)
        self.held = keep
        while queue:
            partition, command = queue.popleft()
            part = self.parts[partition]
            part.apply(from_wire(_round_trip(command)))
            self.held += part.take_outbox()

    def flush(self) -> None:
        while self.held:
            partition, command = self.held.pop(0)
            part = self.parts[partition]
            part.apply(command)
            self.held += part.take_outbox()


def _round_trip(command: Command) -> list[object]:
    body: list[object] = orjson.loads(to_wire(command))
    return body


def test_commands_survive_their_wire_format() -> None:
    eng = JourneyEngine(EngineConfig(rules=load_rules()), 3)
    eng.router.process(ev("page_view", 0, anonymous_id="v"))
    eng.router.process(ev("signup", 1, anonymous_id="v", email="jan@acme.nl"))
    commands, _ = eng.router.take()
    assert {type(c).__name__ for _, c in commands} >= {"Route", "Release", "Advance"}
    for _, command in commands:
        assert from_wire(_round_trip(command)) == command


def test_a_journey_has_one_partition_in_every_process() -> None:
    assert [partition_of(k, 4) for k in ("acme.nl", "?a:v", "erp-9")] == [
        partition_of(k, 4) for k in ("acme.nl", "?a:v", "erp-9")
    ]
    assert {partition_of(f"account-{i}", 4) for i in range(100)} == {0, 1, 2, 3}
    assert partition_of("anything", 1) == 0


@given(
    histories(hours=60),
    st.randoms(use_true_random=False),
    st.sampled_from([2, 3, 5]),
)
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_absorbs_arriving_late_give_the_sorted_tables(
    events: list[EventRecord], rnd: random.Random, partitions: int
) -> None:
    deliveries = redeliver(events, rnd)
    expected = view(run(deliveries, **SHORT)[0])
    eng = SlowAbsorbs(EngineConfig(rules=load_rules(), **SHORT), partitions, rnd)
    out = Output()
    for i, event in enumerate(arrival(deliveries, rnd, 0), start=1):
        eng.process(event)
        if i % 5 == 0:
            out.extend(eng.take())
    eng.flush()
    eng.advance_to(max(e.ts for e in deliveries))
    eng.flush()
    out.extend(eng.take())
    assert view(final_tables(out)) == expected


class Recording(JourneyEngine):
    """Absorbs go at once, as in `JourneyEngine`, and are kept, to be delivered again."""

    def __init__(self, config: EngineConfig, partitions: int) -> None:
        super().__init__(config, partitions)
        self.absorbs: list[tuple[int, Absorb]] = []

    def _deliver(self) -> None:
        commands, links = self.router.take()
        self._links += links
        queue: deque[tuple[int, Command]] = deque(commands)
        while queue:
            partition, command = queue.popleft()
            if isinstance(command, Absorb):
                self.absorbs.append((partition, command))
            part = self.parts[partition]
            part.apply(command)
            queue.extend(part.take_outbox())

    def deliver_again(self, partition: int, absorb: Absorb) -> None:
        queue: deque[tuple[int, Command]] = deque([(partition, absorb)])
        while queue:
            target, command = queue.popleft()
            part = self.parts[target]
            part.apply(command)
            queue.extend(part.take_outbox())


def test_an_absorb_sent_again_after_its_winner_merged_on_is_not_folded_in_twice() -> None:
    """A visitor's state reaches its company domain, which later merges into an ERP account.
    The visitor's partition crashes and sends the same absorb again: the domain's partition
    absorbed it already, and does not pass it on to the ERP account (which has it, inside
    the domain's state)."""
    assert [partition_of(k, 3) for k in ("?a:v", "acme.nl", "erp-2")] == [2, 0, 1]
    events = [
        ev("page_view", 0, anonymous_id="v"),
        ev("pricing_view", 1, anonymous_id="v"),
        ev("signup", 2, anonymous_id="v", email="jan@acme.nl"),
        ev("page_view", 3, email="piet@acme.nl"),
        ev("order_placed", 100, account_id="erp-2", email="jan@acme.nl"),
        ev("page_view", 200, account_id="erp-2"),  # the visitor's events left the window
    ]
    engine = Recording(EngineConfig(rules=load_rules()), 3)
    for event in events:
        engine.process(event)
    visitor = [(p, c) for p, c in engine.absorbs if c.loser == "?a:v" and c.holder is not None]
    assert [(p, c.winner) for p, c in visitor] == [(0, "acme.nl")]
    assert "acme.nl" in engine.parts[0].forwards  # the domain merged on
    engine.deliver_again(*visitor[0])
    engine.advance_to(events[-1].ts)
    tables = final_tables(engine.take())
    assert tables.journeys["erp-2"].events == len(events)
    assert view(tables) == view(run(events)[0])


def test_an_expect_read_again_after_a_restart_does_not_wait_for_an_absorbed_loser() -> None:
    """A partition absorbed `?a:v` and restarts from its changelog; the `expect` for it,
    read again from the input its saved state does not reflect, must not hold the
    partition's window back (its absorb will not come again)."""
    engine = Recording(EngineConfig(rules=load_rules()), 3)
    for event in [
        ev("page_view", 0, anonymous_id="v"),
        ev("signup", 2, anonymous_id="v", email="jan@acme.nl"),
    ]:
        engine.process(event)
    part = engine.parts[partition_of("acme.nl", 3)]
    assert not part.expected
    state = {k: v for k, v in part.changes().items() if v is not None}
    restored = PartitionEngine.restore(part.config, state, part.partition, 3)
    restored.apply(Expect(restored.seq + 1, "?a:v", "acme.nl", ms(2)))
    assert restored.expected == {}
