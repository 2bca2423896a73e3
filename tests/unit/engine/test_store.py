"""Journeys out of memory: an engine that keeps only a few journeys in memory (the rest in
its store, read back when needed) publishes exactly what one holding all of them does."""

from __future__ import annotations

import random
from collections import deque
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import event as note
from hypothesis import strategies as st

from journeys.schemas.record import EventRecord
from journeys.schemas.rows import Output
from journeys.sinks.reference import final_tables
from journeys.streams.engine import EngineConfig, JourneyEngine, load_rules
from journeys.streams.engine.commands import Absorb, Command, Expect, Forget
from journeys.streams.engine.partition import PartitionEngine
from journeys.streams.engine.router import IdentityRouter
from journeys.streams.engine.store import MemoryStore, Paged
from tests.unit.engine.journey import DAY, HOUR, ev, run, view
from tests.unit.engine.test_arrival import arrival, histories
from tests.unit.engine.test_checkpoint import Store, save_changes
from tests.unit.engine.test_exact import NARROW, SPAN, far_copies
from tests.unit.engine.test_rebuild import OTHER

RULES = load_rules()


def stream(
    deliveries: list[EventRecord],
    partitions: int,
    capacity: int,
    saves: list[int],
    restarts: set[int],
    knobs: dict[str, Any],
) -> tuple[Output, int]:
    """Deliveries through an engine keeping `capacity` journeys in memory per partition
    (0: all), every third one late, saved after every `saves[i % len(saves)]` events and
    restored from the saves at `restarts`; its output and how many journeys it read back."""
    config = EngineConfig(rules=RULES, **knobs)
    eng = JourneyEngine(config, partitions, capacity)
    out, loads = Output(), 0
    store: Store = {}
    since = 0
    for i, event in enumerate(deliveries):
        eng.process(event) if i % 3 else eng.process_late(event)
        since += 1
        if since < saves[i % len(saves)]:
            continue
        since = 0
        out.extend(eng.take())
        save_changes(eng, store)
        for part in eng.parts:
            if capacity:  # only journeys with work pending stay beyond the capacity
                pinned = len(part._pending) + len(part._dirty) + 1
                assert len(part.holders) <= capacity + pinned
        if i in restarts:
            loads += sum(part.loads for part in eng.parts)
            eng = JourneyEngine.restore(config, {k: dict(v) for k, v in store.items()}, capacity)
    eng.advance_to(max(e.ts for e in deliveries))
    out.extend(eng.take())
    return out, loads + sum(part.loads for part in eng.parts)


@given(histories(hours=SPAN, size=40), st.randoms(use_true_random=False), st.data())
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_journeys_read_back_from_the_store_publish_what_journeys_kept_in_memory_do(
    events: list[EventRecord], rnd: random.Random, data: st.DataObject
) -> None:
    """Any order, copies days apart, saves and restarts anywhere, one partition or three:
    with one or two journeys in memory the rows, their versions and their order are those
    of an engine that keeps every journey, and the tables those of sorted replay."""
    deliveries = arrival(far_copies(events, rnd), rnd, 0)
    partitions = rnd.choice([1, 3])
    saves = data.draw(st.lists(st.integers(1, 6), min_size=1, max_size=4))
    restarts = set(data.draw(st.lists(st.integers(0, len(deliveries)), max_size=2)))
    capacity = rnd.choice([1, 2])
    held, _ = stream(deliveries, partitions, 0, saves, restarts, NARROW)
    bounded, loads = stream(deliveries, partitions, capacity, saves, restarts, NARROW)
    assert bounded == held
    assert view(final_tables(bounded)) == view(run(deliveries, **NARROW)[0])
    note("journeys read back", "some" if loads else "none")


def test_a_deadline_of_a_journey_out_of_memory_fires_on_time() -> None:
    """An abandoned cart whose account left memory is raised when its deadline passes,
    exactly as for one kept in memory."""
    knobs = {"cart_abandon_after": 2 * HOUR, "deal_stall_after": 10 * DAY}
    events = [
        ev("add_to_cart", 0, account_id="cart"),
        *(ev("page_view", 0.1 * n, account_id=f"other-{n}") for n in range(1, 9)),
        ev("page_view", 5, account_id="late-comer"),
    ]
    held, _ = stream(events, 1, 0, [1], set(), knobs)
    bounded, loads = stream(events, 1, 1, [1], set(), knobs)
    assert loads >= 1
    assert bounded == held
    alerts = [a for a in bounded.alerts if a.account_id == "cart"]
    assert [a.kind for a in alerts] == ["cart_abandoned"]


def test_a_partition_restored_into_a_store_keeps_only_its_capacity_in_memory() -> None:
    """A restore with a store reads every journey once and keeps `capacity` of them (and
    those with work pending); the others are read back, whole, when their events come."""
    config = EngineConfig(rules=RULES)
    whole = PartitionEngine(config)
    eng = JourneyEngine(config)
    eng.parts = [whole]
    eng.process_all(ev("page_view", n / 10, account_id=f"acct-{n}") for n in range(50))
    eng.take()
    state = {k: v for k, v in whole.changes().items() if v is not None}
    store = MemoryStore()
    restored = PartitionEngine.restore(config, state, store=store, capacity=5)
    assert len(restored.holders) == 5
    assert len(list(store.keys(b"h:"))) == 50
    eng.parts = [restored]
    eng.process(ev("page_view", 6, account_id="acct-42"))
    assert restored.holders["acct-42"].events == 2
    assert restored.loads == 1


@given(histories(hours=SPAN, size=30), st.randoms(use_true_random=False))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_a_rebuild_reads_every_journey_back_and_publishes_what_one_in_memory_does(
    events: list[EventRecord], rnd: random.Random
) -> None:
    """A rebuild folds every journey, those out of memory too: the same rows."""
    deliveries = arrival(events, rnd, 0)
    outs, partitions = [], rnd.choice([1, 2])
    for capacity in (0, 1):
        eng = JourneyEngine(EngineConfig(rules=RULES, **NARROW), partitions, capacity)
        out = Output()
        for event in deliveries:
            eng.process(event)
            out.extend(eng.take())
            eng.changes()
        eng.rebuild(1, OTHER)
        out.extend(eng.take())
        eng.changes()
        outs.append(out)
    assert outs[0] == outs[1]


class Recording(JourneyEngine):
    """Absorbs go at once, as in `JourneyEngine`, and those that carry a journey are kept."""

    def __init__(self, config: EngineConfig, partitions: int, capacity: int) -> None:
        super().__init__(config, partitions, capacity)
        self.absorbs: list[tuple[int, Absorb]] = []

    def _apply(self, commands: list[tuple[int, Command]]) -> None:
        queue: deque[tuple[int, Command]] = deque(commands)
        while queue:
            partition, command = queue.popleft()
            if isinstance(command, Absorb) and command.holder is not None:
                self.absorbs.append((partition, command))
            part = self.parts[partition]
            part.apply(command)
            queue.extend(part.take_outbox())


def test_forwards_and_absorbed_losers_leave_memory_once_saved_and_are_still_known() -> None:
    """With a store, the forward and absorbed record every identified visitor leaves stay
    in memory only until saved; an absorb sent again is still recognised (not folded in
    twice), and an `expect` of an absorbed loser still waits for nothing."""
    eng = Recording(EngineConfig(rules=RULES), 2, 1)
    for n in range(40):
        eng.process(ev("page_view", n / 10, anonymous_id=f"v{n}"))
        eng.process(ev("signup", n / 10 + 0.01, anonymous_id=f"v{n}", email=f"u@co{n}.nl"))
    eng.take()
    eng.changes()
    for part in eng.parts:
        assert (part.forwards.recent, part.absorbed.recent, part._arrived) == ({}, {}, set())
    stored = [key for part in eng.parts for key in part.store.keys(b"x:")]  # type: ignore[union-attr]
    assert len(stored) == 40
    partition, absorb = next((p, c) for p, c in eng.absorbs if c.parts == 0)
    part = eng.parts[partition]
    part.apply(Expect(part.seq + 1, absorb.loser, absorb.winner, absorb.at))
    assert part.expected == {}
    events = part._get(absorb.winner).events  # type: ignore[union-attr]
    part.apply(absorb)  # sent again
    assert part._get(absorb.winner).events == events  # type: ignore[union-attr]
    assert part.absorbed.recent == {}


#: Identifiers an erasure in `test_a_router_keeping_its_graph_in_a_store_...` may name.
PEOPLE = [
    {("email", "jan@acme.nl"), ("contact_id", "ca"), ("anonymous_id", "va")},
    {("email", "piet@beta.nl"), ("anonymous_id", "vb")},
    {("email", "kees@gmail.com")},
    {("contact_id", "cx"), ("account_id", "erp-b")},
    {("account_id", "acme.nl")},  # a domain account, merged into erp-a or not
    {("account_id", "erp-a")},
]


def routers(partitions: int, capacity: int, state: dict[bytes, bytes] | None) -> IdentityRouter:
    """A router holding its graph in memory (capacity 0) or in a store, new or restored."""
    config = EngineConfig(rules=RULES, **NARROW, visitor_ttl=30 * HOUR)
    if not capacity:
        return (
            IdentityRouter(config, partitions)
            if state is None
            else IdentityRouter.restore(config, state, partitions)
        )
    store = MemoryStore()
    if state is None:
        return IdentityRouter(config, partitions, store, capacity)
    store.write(state)
    return IdentityRouter.restore_stored(config, store, partitions, capacity)


@given(histories(hours=SPAN, size=40), st.randoms(use_true_random=False), st.data())
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_a_router_keeping_its_graph_in_a_store_routes_as_one_holding_it_whole(
    events: list[EventRecord], rnd: random.Random, data: st.DataObject
) -> None:
    """Any order, copies days apart, visitors forgotten, saves, restarts and an erasure
    anywhere: a router keeping one or two entries per table in memory (the rest in its
    store) sends the same commands and links, erases the same, and saves the same state
    as one holding its whole graph in memory."""
    deliveries = arrival(far_copies(events, rnd), rnd, 0)
    partitions = rnd.choice([1, 3])
    capacity = rnd.choice([1, 2])
    saves = data.draw(st.lists(st.integers(1, 6), min_size=1, max_size=4))
    restarts = set(data.draw(st.lists(st.integers(0, len(deliveries)), max_size=2)))
    erase_at = data.draw(st.integers(0, len(deliveries)))
    person = rnd.choice(PEOPLE)
    pair = [routers(partitions, 0, None), routers(partitions, capacity, None)]
    state: dict[bytes, bytes] = {}
    since = forgets = 0
    for i, event in enumerate(deliveries):
        for router in pair:
            router.process(event) if i % 3 else router.process_late(event)
        if i == erase_at:
            erased = [r.erase(lambda kind, value: (kind, value) in person) for r in pair]
            assert erased[0] == erased[1]
        since += 1
        if since < saves[i % len(saves)]:
            continue
        since = 0
        held, paged = (r.take() for r in pair)
        assert paged == held
        forgets += sum(isinstance(c, Forget) for _, c in held[0])
        changes = [r.changes() for r in pair]
        assert changes[1] == changes[0]
        for key, value in changes[0].items():
            state.pop(key, None) if value is None else state.__setitem__(key, value)
        tables = pair[1]._tables  # noqa: SLF001
        assert all(len(table.recent) <= capacity for table in tables)
        if i in restarts:
            pair = [routers(partitions, 0, dict(state)), routers(partitions, capacity, state)]
    for router in pair:
        router.advance_to(max(e.ts for e in deliveries) + 40 * HOUR)
    held, paged = (r.take() for r in pair)
    assert paged == held
    forgets += sum(isinstance(c, Forget) for _, c in held[0])
    assert pair[1].changes() == pair[0].changes()
    assert sorted(pair[1].shadows) == sorted(pair[0].shadows)
    note("journeys forgotten", "some" if forgets else "none")


def test_a_paged_map_reads_back_what_left_memory_and_iterates_each_key_once() -> None:
    """Entries beyond the capacity leave memory at a save and are read back from the store;
    iterating yields every key once, in memory or not, even when entries are read while
    iterating (an erasure follows redirects while it scans them)."""
    store = MemoryStore()
    table = Paged(b"r:", lambda _, data: data.decode(), store, 2)
    assert not table
    for n in range(5):
        table[f"k{n}"] = f"v{n}"
    store.write({f"r:k{n}".encode(): f"v{n}".encode() for n in range(5)})
    table.saved()
    assert len(table.recent) == 2
    assert table["k0"] == "v0" and "k9" not in table
    del table["k1"]
    table["k5"] = "v5"
    seen = []
    for key in table:
        seen.append(key)
        for other in ("k2", "k3", "k4"):
            table.get(other)
    assert sorted(seen) == ["k0", "k2", "k3", "k4", "k5"]
    assert dict(table.items()) == {"k0": "v0", "k2": "v2", "k3": "v3", "k4": "v4", "k5": "v5"}
    assert table
    for key in ("k0", "k2", "k3", "k4", "k5"):
        del table[key]
    assert not table and len(table) == 0  # deleted in memory, still in the store
