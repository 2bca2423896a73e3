"""The two stages of the streaming pipeline, between Kafka messages and the pure engine.

**The identity stage** owns the single-partition `ordered` topic. Messages
(see `journeys.schemas.codec`) are events forwarded by the ingest agents,
with the source partition they came from and how many there are, and control
messages: `idle` from the ingest that reads a source partition, `drain` from
the stage itself. Both travel through the same topic, so a re-read after a
crash makes the same decisions in the same places. It releases events in
event-time order to the `IdentityRouter`, whose commands go to the journey
partitions.

The watermark rule (documented in the README):
- Each source partition's progress is the latest event time it delivered.
- The watermark is the slowest *active* partition's progress less the
  allowed lateness; events before it are released to the router in
  (occurred_at, event_id) order, and every journey partition is told how far
  event time got (`Advance`): that times its alerts.
- A partition is marked idle by its ingest once it is caught up with the log
  end (as a fresh fetch from the broker reported it) and quiet for
  `idle_after` seconds (see `journeys.streams.ingest`); it stops holding the
  watermark back until it delivers again. A broker outage is not idleness:
  without fresh fetches no partition is declared idle.
- When every partition is idle, the stage drains: all buffered events are
  released and event time advances to the latest event seen, so alerts due by
  then are raised, as at the end of a replay.
- An event behind what was already released is late: routed at once, it
  corrects its journey without moving event time.
- Each event is applied once per source message: the stage keeps, per source
  partition, the highest source offset it applied (in its state), and drops
  a forwarded event at or below it. Ingest forwards again what it had
  forwarded but not committed when it stopped or lost the partition; those
  copies change nothing, however old their event time.

**A journey stage** owns one partition of the `journeys` topic: the router's
commands for the journeys placed there, and absorbs from other partitions. It
applies them to a `PartitionEngine` and hands over rows and absorbs.

Both keep their state as key-value pairs for a changelog (`state_changes`,
`restore`), with the input offset it reflects: a message at or below it is
skipped when read again.

**What the identity stage sends commits with its state.** `seal` packs a
batch's commands (per journeys partition) and identity links (per rows
partition) into numbered messages; the worker sends them in the same Kafka
transaction as the stage's changed state and the input offsets
(`journeys.streams.changelog.StageWriter`), so they become visible together
or not at all, and a batch is never routed twice. The numbers stay as a
guard: a journey stage applies a numbered message once (it keeps the last
number applied, in its state), whatever writes it outside a transaction.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import orjson

from journeys.schemas.codec import (
    PACK_BYTES,
    Control,
    Forwarded,
    decode_ordered,
    encode_row,
    pack,
    record_from_values,
    record_values,
    unpack,
)
from journeys.schemas.record import EventRecord
from journeys.schemas.rows import IdentityLink, Output
from journeys.streams.disk import RocksStore, give_back_memory
from journeys.streams.engine import EngineConfig, IdentityRouter, PartitionEngine, Sequencer
from journeys.streams.engine.commands import (
    MARK,
    Command,
    from_wire,
    mark,
    partition_of,
    to_wire,
)
from journeys.streams.erasure import SUPPRESSED, Erasure

_NEVER = -(2**62)
#: The stage's own meta key, saved last: the changelog's commit key.
STAGE_META = b"m:stage"
#: The reorder buffer is saved in pieces of about this size (`_BUFFER` + number).
_BUFFER_PIECE = 256 * 1024
_BUFFER = b"m:buffer:"
#: The outbox, a message per key (`_OUTBOX` + number): topic letter, partition, message.
_OUTBOX = b"m:outbox:"
#: Packs of the outbox leave room for their number.
_SEALED_BYTES = PACK_BYTES - 64


@dataclass(frozen=True, slots=True)
class Sealed:
    """A message of the identity stage's outbox: for partition `partition` of the
    journeys topic (`journeys`) or of the rows topic."""

    journeys: bool
    partition: int
    value: bytes


@dataclass
class StageStats:
    """Counters for logs and metrics."""

    received: int = 0
    redelivered: int = 0
    released: int = 0
    late: int = 0
    duplicates: int = 0
    drains: int = 0
    #: Events of people erased before they came out of the ordered topic (or while held).
    suppressed: int = 0


class Purge:
    """When a stage purges its store of erased values (RocksDB keeps a value deleted or
    replaced in older files until they are compacted): at the first save after an erasure
    at least `every` seconds after its last purge (a quarter of JOURNEYS_ERASE_WITHIN)."""

    def __init__(self, every: float) -> None:
        self.every = every
        self.at = float("-inf")
        #: Erasures carried out when the store was last purged.
        self.erasures = 0

    def after(self, store: RocksStore | None, erasures: int) -> None:
        """The stage saved (its store written) with `erasures` carried out so far."""
        if store is None or erasures == self.erasures:
            return
        now = time.monotonic()
        if now - self.at >= self.every:
            store.purge()
            self.at, self.erasures = now, erasures


class IdentityStage:
    """Sequencer and identity router of the identity stage."""

    def __init__(
        self,
        config: EngineConfig,
        lateness_ms: int,
        partitions: int,
        salt: bytes = b"",
        folder: Path | None = None,
        capacity: int = 0,
        purge_every: float = 6 * 3600.0,
    ) -> None:
        self._config = config
        #: Where the router's graph waits out of memory (None, or no capacity: it is all in
        #: memory), and how many entries per table stay in memory (`store.Paged`).
        self._folder = folder if capacity else None
        self._capacity = capacity
        self._store: RocksStore | None = None
        self._purge = Purge(purge_every)
        #: `forget` requests carried out.
        self.erasures = 0
        #: `forget` requests (`journeys.streams.erasure`); `salt`: the privacy salt.
        self.erasure = Erasure(salt)
        self._lateness = lateness_ms
        self.router = IdentityRouter(config, partitions)
        self.sequencer = Sequencer()
        self.offset = -1
        self.partitions = 0
        self.progress: dict[int, int] = {}
        #: Per source partition, the highest source offset applied.
        self.applied: dict[int, int] = {}
        self.idle: set[int] = set()
        self.max_ts = _NEVER
        self.stats = StageStats()
        #: A drain was asked for and has not come back through the topic yet.
        self.drain_requested = False
        self._pieces = 0
        #: Messages to journey partitions numbered so far (see `seal`).
        self.sealed = 0
        #: The last batch's messages, saved before they are sent.
        self.outbox: list[Sealed] = []
        self._outboxed = 0

    @property
    def clock(self) -> int:
        """Event time reached (the router's)."""
        return self.router.clock

    def open_store(self) -> RocksStore | None:
        """A new, empty store for the router's graph (the one before, if any, removed);
        None without a folder: the graph stays in memory."""
        self.close()
        if self._folder is not None:
            self._store = RocksStore(self._folder)
        return self._store

    def close(self) -> None:
        """Remove the stage's store, if it has one (the stage is no longer used)."""
        if self._store is not None:
            self._store.close()
            self._store = None

    def restore(self, state: dict[bytes, bytes]) -> None:
        """Continue from saved state (or start empty); with a folder, through a new store
        there (the state is the truth; a store is its cache)."""
        store = self.open_store()
        if store is not None:
            store.write(state)
            self.restore_stored()
            return
        self.router = IdentityRouter.restore(self._config, state, self.router.partitions)
        self._resume(state)

    def restore_stored(self) -> None:
        """Continue from the saved state written into the store `open_store` gave (by
        `Changelog.load_into`): the router's graph stays there, the stage's own records
        (position, reorder buffer, outbox, erased hashes) are read."""
        store = self._store
        assert store is not None
        partitions = self.router.partitions
        self.router = IdentityRouter.restore_stored(self._config, store, partitions, self._capacity)
        give_back_memory()  # what reading the state took is free: it goes back to the OS
        own = dict(store.items(b"m:"))
        own.update(store.items(SUPPRESSED))
        self._resume(own)

    def _resume(self, state: Mapping[bytes, bytes]) -> None:
        """The stage's own records: erased hashes, position, reorder buffer and outbox."""
        self.erasure.restore(state)
        meta = orjson.loads(state.get(STAGE_META, b"{}"))
        self.offset = int(meta.get("offset", -1))
        self.partitions = int(meta.get("partitions", 0))
        self.progress = {int(p): int(ts) for p, ts in meta.get("progress", {}).items()}
        self.applied = {int(p): int(o) for p, o in meta.get("applied", {}).items()}
        self.idle = {int(p) for p in meta.get("idle", [])}
        self.max_ts = int(meta.get("max_ts", _NEVER))
        released = meta.get("released")
        if released:
            self.sequencer.released = (int(released[0]), str(released[1]))
        self._pieces = int(meta.get("pieces", 0))
        for i in range(self._pieces):
            for values in orjson.loads(state[_BUFFER + str(i).encode()]):
                self.sequencer.push(record_from_values(values))
        self.sealed = int(meta.get("sealed", 0))
        self._outboxed = int(meta.get("outbox", 0))
        self.outbox = []
        for i in range(self._outboxed):
            head, value = state[_OUTBOX + str(i).encode()].split(b"\n", 1)
            letter, partition = head.split(b" ")
            self.outbox.append(Sealed(letter == b"j", int(partition), value))

    # ------------------------------------------------------------------ input

    def handle(
        self, messages: Iterable[tuple[int, bytes]]
    ) -> tuple[list[tuple[int, Command]], list[IdentityLink]]:
        """Apply a batch of (offset, value) messages; the commands and links they produced."""
        for offset, value in messages:
            if offset <= self.offset:
                continue  # already reflected in the saved state
            self.offset = offset
            for item in decode_ordered(value):
                if isinstance(item, Forwarded):
                    self._receive(item)
                else:
                    self._control(item)
        watermark = self.watermark()
        if watermark is not None:
            self._release(self.sequencer.release(watermark))
        return self.router.take()

    def _receive(self, item: Forwarded) -> None:
        partition, record = item.partition, item.record
        if item.offset <= self.applied.get(partition, -1):
            self.stats.redelivered += 1  # forwarded again after a restart or a rebalance
            return
        self.applied[partition] = item.offset
        if self.erasure.drops(record):
            self.stats.suppressed += 1
            return
        self.stats.received += 1
        self.partitions = max(self.partitions, item.partitions)
        self.idle.discard(partition)
        if record.ts > self.progress.get(partition, _NEVER):
            self.progress[partition] = record.ts
        if record.ts > self.max_ts:
            self.max_ts = record.ts
        if not self.sequencer.push(record):
            if (record.ts, record.event_id) == self.sequencer.released:
                self.stats.duplicates += 1
            else:
                self.stats.late += 1
                self.router.process_late(record)

    def _control(self, item: Control) -> None:
        if item.kind == "idle":
            self.partitions = max(self.partitions, item.partitions)
            self.idle.add(item.partition)
        elif item.kind == "drain":
            self.drain_requested = False
            if self.all_idle():  # a partition may have delivered since the drain was asked
                self._drain()
        elif item.kind == "forget":
            held, _ = self.erasure.apply(item, self.router, self.sequencer)
            self.stats.suppressed += held
            self.erasures += 1
        elif item.kind == "rebuild":
            self.router.rebuild(item.generation, item.rules)

    def all_idle(self) -> bool:
        """Whether every source partition is marked idle."""
        return self.partitions > 0 and all(p in self.idle for p in range(self.partitions))

    def watermark(self) -> int | None:
        """Release events before this event time; None while a partition is unheard of."""
        active = [p for p in range(self.partitions) if p not in self.idle]
        if not active:
            return None
        slowest = min(self.progress.get(p, _NEVER) for p in active)
        return None if slowest == _NEVER else slowest - self._lateness

    def _release(self, events: Iterable[EventRecord]) -> None:
        router = self.router
        count = 0
        for event in events:
            router.process(event)
            count += 1
        self.stats.released += count

    def _drain(self) -> None:
        self._release(self.sequencer.drain())
        if self.max_ts != _NEVER:
            self.router.advance_to(self.max_ts)
        self.stats.drains += 1

    # --------------------------------------------------------------- control

    def drain_due(self) -> bool:
        """Whether to ask for a drain now: every partition idle, and something to release.

        The drain is asked through the ordered topic (`DRAIN_JSON`), so it takes
        effect in order, and the same way when the input is read again.
        """
        if self.drain_requested or not self.all_idle():
            return False
        return bool(len(self.sequencer)) or self.router.clock < self.max_ts

    def seal(self, commands: list[tuple[int, Command]], links: list[IdentityLink]) -> list[Sealed]:
        """A batch's output as the messages to send, kept as the outbox until the next
        batch: commands packed per journeys partition, each message numbered (`MARK`),
        and links packed per rows partition (by account, like the journey stage's rows)."""
        outbox: list[Sealed] = []
        journeys = self.router.partitions
        by_partition: dict[int, list[bytes]] = {}
        for partition, command in commands:
            by_partition.setdefault(partition, []).append(to_wire(command))
        for partition, items in sorted(by_partition.items()):
            for message in pack(items, _SEALED_BYTES):
                self.sealed += 1
                numbered = b"[" + mark(self.sealed) + b"," + message[1:]
                outbox.append(Sealed(True, partition, numbered))
        rows: dict[int, list[bytes]] = {}
        for link in links:
            rows.setdefault(partition_of(link.account_id, journeys), []).append(encode_row(link))
        for partition, items in sorted(rows.items()):
            outbox += [Sealed(False, partition, message) for message in pack(items)]
        self.outbox = outbox
        return outbox

    # ------------------------------------------------------------------ state

    def state_changes(self) -> dict[bytes, bytes | None]:
        """The router's changes and the stage's position (with its reorder buffer and
        outbox)."""
        changes = self.router.changes()  # written to its store, if it has one
        self._purge.after(self._store, self.erasures)
        changes.update(self.erasure.changes())
        buffered = sorted(
            (item[3] for item in self.sequencer._heap),  # noqa: SLF001 (the stage owns it)
            key=lambda e: (e.ts, e.event_id),
        )
        pieces: list[list[bytes]] = [[]]
        size = 0
        for event in buffered:
            encoded = orjson.dumps(record_values(event))
            if size + len(encoded) > _BUFFER_PIECE and pieces[-1]:
                pieces.append([])
                size = 0
            pieces[-1].append(encoded)
            size += len(encoded) + 1
        if not pieces[-1]:
            pieces.pop()
        for i, piece in enumerate(pieces):
            changes[_BUFFER + str(i).encode()] = b"[" + b",".join(piece) + b"]"
        for i in range(len(pieces), self._pieces):
            changes[_BUFFER + str(i).encode()] = None
        self._pieces = len(pieces)
        for i, sealed in enumerate(self.outbox):
            head = b"%s %d\n" % (b"j" if sealed.journeys else b"r", sealed.partition)
            changes[_OUTBOX + str(i).encode()] = head + sealed.value
        for i in range(len(self.outbox), self._outboxed):
            changes[_OUTBOX + str(i).encode()] = None
        self._outboxed = len(self.outbox)
        meta = {
            "offset": self.offset,
            "partitions": self.partitions,
            "progress": {str(p): ts for p, ts in self.progress.items()},
            "applied": {str(p): offset for p, offset in self.applied.items()},
            "idle": sorted(self.idle),
            "max_ts": self.max_ts,
            "released": list(self.sequencer.released),
            "pieces": self._pieces,
            "sealed": self.sealed,
            "outbox": self._outboxed,
        }
        changes[STAGE_META] = orjson.dumps(meta)
        return changes


class JourneyStage:
    """The engine of one journey partition and the input offset its state reflects."""

    def __init__(
        self,
        config: EngineConfig,
        partition: int,
        partitions: int,
        folder: Path | None = None,
        capacity: int = 0,
        purge_every: float = 6 * 3600.0,
    ) -> None:
        self._config = config
        self.partition = partition
        #: Where the partition's journeys out of memory wait (None, or no capacity: every
        #: journey stays in memory), and how many stay in memory.
        self._folder = folder if capacity else None
        self._capacity = capacity
        self._store: RocksStore | None = None
        self._purge = Purge(purge_every)
        self.engine = PartitionEngine(config, partition, partitions)
        self.offset = -1
        self.commands = 0
        #: The number of the last identity stage message applied (see `IdentityStage.seal`).
        self.marked = 0
        #: Identity stage messages read again and skipped.
        self.resent = 0

    def open_store(self) -> RocksStore | None:
        """A new, empty store for the partition's state (the one before, if any, removed);
        None without a folder: every journey stays in memory."""
        self.close()
        if self._folder is not None:
            self._store = RocksStore(self._folder)
        return self._store

    def restore(self, state: dict[bytes, bytes]) -> None:
        """Continue from saved state (or start empty); with a folder, through a new store
        there (the state is the truth; a store is its cache)."""
        store = self.open_store()
        if store is not None:
            store.write(state)
            self.restore_stored()
            return
        engine = self.engine
        self.engine = PartitionEngine.restore(
            self._config, state, engine.partition, engine.partitions
        )
        self._resume(state.get(STAGE_META))

    def restore_stored(self) -> None:
        """Continue from the saved state written into the store `open_store` gave (by
        `Changelog.load_into`)."""
        store = self._store
        assert store is not None
        engine = self.engine
        self.engine = PartitionEngine.restore_stored(
            self._config, store, engine.partition, engine.partitions, self._capacity
        )
        give_back_memory()  # what reading the state took is free: it goes back to the OS
        self._resume(store.get(STAGE_META))

    def _resume(self, meta_record: bytes | None) -> None:
        """The input offset and identity stage message the saved state reflects."""
        meta = orjson.loads(meta_record or b"{}")
        self.offset = int(meta.get("offset", -1))
        self.marked = int(meta.get("marked", 0))

    def handle(
        self, messages: Iterable[tuple[int, bytes]]
    ) -> tuple[Output, list[tuple[int, Command]]]:
        """Apply a batch of (offset, value) messages; the rows and absorbs they produced."""
        engine = self.engine
        for offset, value in messages:
            if offset <= self.offset:
                continue  # already reflected in the saved state
            self.offset = offset
            bodies = unpack(value)
            if bodies and bodies[0][0] == MARK:
                number = bodies[0][1]
                if number <= self.marked:
                    self.resent += 1  # sent again by an identity stage restored from its save
                    continue
                self.marked = number
                bodies = bodies[1:]
            for body in bodies:
                engine.apply(from_wire(body))
                self.commands += 1
        return engine.take(), engine.take_outbox()

    def close(self) -> None:
        """Remove the partition's store, if it has one (the stage is no longer used)."""
        if self._store is not None:
            self._store.close()
            self._store = None

    def state_changes(self) -> dict[bytes, bytes | None]:
        """The engine's changes and the input offset they reflect."""
        engine = self.engine
        changes = engine.changes()
        changes[STAGE_META] = orjson.dumps({"offset": self.offset, "marked": self.marked})
        self._purge.after(self._store, engine.erasures)
        return changes
