"""The journey engine in one process: the identity router and its journey partitions.

`JourneyEngine` is what `journeys replay`, the tests and the benchmarks
drive: events in, in any order, rows out. It is the streaming pipeline's
engine without Kafka: one `IdentityRouter` and `partitions` `PartitionEngine`s,
the router's commands handed over in the order they were made, as a topic
would, and each absorb a partition sends delivered at once. Every rule
being order-free, the tables are the same for any number of partitions and
any order of arrival; `journeys replay` and the streaming workers run the
same code.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, MutableMapping

from journeys.schemas.record import EventRecord
from journeys.schemas.rows import IdentityLink, Output
from journeys.streams.engine.commands import Command, Erase, partition_of
from journeys.streams.engine.identity import Identity
from journeys.streams.engine.partition import (
    CART_ABANDONED,
    DEAL_STALLED,
    EngineConfig,
    PartitionEngine,
)
from journeys.streams.engine.router import IdentityRouter
from journeys.streams.engine.state import Holder
from journeys.streams.engine.store import MemoryStore

__all__ = ["CART_ABANDONED", "DEAL_STALLED", "EngineConfig", "JourneyEngine"]

#: A checkpoint of a whole engine: the router's state ("router") and each partition's.
State = dict[str, dict[bytes, bytes | None]]


class JourneyEngine:
    """Stitches events into per-account journeys, transitions and alerts.

    `process` applies an event and advances event time to it; `process_late`
    applies one without moving event time (it came after its time was
    passed). `advance_to(ts)` says nothing more is expected before `ts`, so
    alerts due by then are raised. `take()` hands over everything produced
    since the last call, with a journey row of every account that changed.
    """

    def __init__(
        self, config: EngineConfig | None = None, partitions: int = 1, capacity: int = 0
    ) -> None:
        self.config = config or EngineConfig.default()
        #: With a capacity, the router and each partition keep their state in a
        #: `MemoryStore` and at most that many entries (per table) or journeys in memory
        #: after `changes()` (as the workers do on disk).
        self.capacity = capacity
        self.router = IdentityRouter(self.config, partitions, *self._store())
        self.parts = [
            PartitionEngine(self.config, p, partitions, *self._store()) for p in range(partitions)
        ]
        self._links: list[IdentityLink] = []

    @property
    def identity(self) -> Identity:
        """The identity graph (the router's)."""
        return self.router.identity

    @property
    def aliases(self) -> MutableMapping[str, str]:
        """alias key ("a:…", "c:…", "e:…") -> journey key."""
        return self.router.identity.aliases

    @property
    def redirects(self) -> MutableMapping[str, str]:
        """account key merged away -> the account it merged into."""
        return self.router.identity.redirects

    def _store(self) -> tuple[MemoryStore | None, int]:
        """A partition's store and capacity (none: every journey stays in memory)."""
        return (MemoryStore(), self.capacity) if self.capacity else (None, 0)

    @property
    def holders(self) -> dict[str, Holder]:
        """Every journey in memory of every partition, by key (all of them without a
        capacity)."""
        if len(self.parts) == 1:
            return self.parts[0].holders
        return {k: h for part in self.parts for k, h in part.holders.items()}

    @property
    def clock(self) -> int:
        """Event time: the latest event time processed or advanced to."""
        return self.router.clock

    @property
    def late(self) -> int:
        return sum(part.late for part in self.parts)

    @property
    def duplicates(self) -> int:
        return sum(part.duplicates for part in self.parts)

    def process(self, event: EventRecord) -> None:
        """Apply one event and advance event time to it (events before it may still come)."""
        self.router.process(event)
        self._deliver()

    def process_all(self, events: Iterable[EventRecord]) -> None:
        """Apply many events."""
        router = self.router
        for event in events:
            router.process(event)
        self._deliver()

    def process_late(self, event: EventRecord) -> None:
        """Apply an event that came after event time passed it; event time stays."""
        self.router.process_late(event)
        self._deliver()

    def process_late_batch(self, events: Iterable[EventRecord]) -> None:
        """`process_late` for many events."""
        for event in events:
            self.router.process_late(event)
        self._deliver()

    def advance_to(self, ts: int) -> None:
        """Event time reached `ts` with nothing more before it: raise what is due by then."""
        self.router.advance_to(ts)
        self._deliver()

    def erase(self, key: str, event_ids: Iterable[str]) -> None:
        """Forget events of journey `key` in its partition: it becomes what it would be had
        they never come (the identity graph is the router's part of an erasure)."""
        self._deliver()
        partitions = len(self.parts)
        partition = partition_of(key, partitions)
        seq = max(self.router.seq, max(part.seq for part in self.parts)) + 1
        self._apply([(partition, Erase(seq, key, tuple(event_ids)))])

    def rebuild(self, generation: int, rules: str) -> None:
        """Derive every journey again with `rules` (a rules file's TOML text) as generation
        `generation`, and everything after it too (`journeys rebuild`)."""
        self._deliver()
        self.router.rebuild(generation, rules)
        self._deliver()

    def take(self) -> Output:
        """Everything produced since the last call, journey rows included."""
        self._deliver()
        out = Output()
        for part in self.parts:
            out.extend(part.take())
        out.links.extend(self._links)
        self._links = []
        return out

    def _deliver(self) -> None:
        """Hand the router's commands, then the absorbs they cause, to the partitions."""
        commands, links = self.router.take()
        self._links += links
        self._apply(commands)

    def _apply(self, commands: list[tuple[int, Command]]) -> None:
        parts = self.parts
        for partition, command in commands:
            part = parts[partition]
            part.apply(command)
            if part.outbox:  # absorbs go at once, as on a topic with no backlog
                queue: deque[tuple[int, Command]] = deque(part.take_outbox())
                while queue:
                    partition, command = queue.popleft()
                    part = parts[partition]
                    part.apply(command)
                    queue.extend(part.take_outbox())

    # ------------------------------------------------------------ checkpoints

    def changes(self) -> State:
        """The router's and every partition's state changed since the last call."""
        self._deliver()
        state: State = {"router": self.router.changes()}
        for part in self.parts:
            state[str(part.partition)] = part.changes()
        return state

    @classmethod
    def restore(
        cls, config: EngineConfig, state: dict[str, dict[bytes, bytes]], capacity: int = 0
    ) -> JourneyEngine:
        """An engine continuing from a checkpoint (`changes()` applied in order)."""
        partitions = len(state) - 1
        engine = cls(config, partitions, capacity)
        store, kept = engine._store()
        if store is None:
            engine.router = IdentityRouter.restore(config, state["router"], partitions)
        else:
            store.write(state["router"])
            engine.router = IdentityRouter.restore_stored(config, store, partitions, kept)
        engine.parts = [
            PartitionEngine.restore(config, state[str(p)], p, partitions, *engine._store())
            for p in range(partitions)
        ]
        return engine
