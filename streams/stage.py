"""The journey stage: ordered input in, engine output and checkpoints out.

The Faust agent that owns the single-partition `ordered` topic hands each
batch of messages to a `JourneyStage`. Messages (see `journeys.schemas.codec`)
are events forwarded by the ingest agents, with the source partition they
came from and how many there are, and control messages: `idle` from the
ingest that reads a source partition, `drain` from the stage itself. Both
travel through the same topic, so a re-read after a crash makes the same
decisions in the same places.

The watermark rule (documented in the README):
- Each source partition's progress is the latest event time it delivered.
- The watermark is the slowest *active* partition's progress less the
  allowed lateness; events before it are released to the engine in
  (occurred_at, event_id) order.
- A partition is marked idle by its ingest once it is caught up with the log
  end (as a fresh fetch from the broker reported it) and quiet for
  `idle_after` seconds (see `journeys.streams.ingest`); it stops holding the
  watermark back until it delivers again. A broker outage is not idleness:
  without fresh fetches no partition is declared idle.
- When every partition is idle, the stage drains: all buffered events are
  released and event time advances to the latest event seen, so alerts due by
  then are raised, as at the end of a replay.
- An event behind what was already released is late: stored and counted, it
  moves no journey.
- Each event is applied once per source message: the stage keeps, per source
  partition, the highest source offset it applied (in its checkpoint), and
  drops a forwarded event at or below it. Ingest forwards again what it had
  forwarded but not committed when it stopped or lost the partition; those
  copies change nothing, however old their event time.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from journeys.schemas.codec import (
    Control,
    Forwarded,
    decode_ordered,
    record_from_values,
    record_values,
)
from journeys.schemas.record import EventRecord
from journeys.schemas.rows import Output
from journeys.streams.checkpoint import CheckpointStore
from journeys.streams.engine import EngineConfig, JourneyEngine, Sequencer

_NEVER = -(2**62)


@dataclass
class StageStats:
    """Counters for logs and metrics."""

    received: int = 0
    redelivered: int = 0
    released: int = 0
    late: int = 0
    duplicates: int = 0
    drains: int = 0


class JourneyStage:
    """Sequencer, engine and checkpoint of the journey stage."""

    def __init__(self, config: EngineConfig, lateness_ms: int, store: CheckpointStore) -> None:
        self._config = config
        self._lateness = lateness_ms
        self._store = store
        self.engine = JourneyEngine(config)
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

    def open(self) -> None:
        """Load the last checkpoint (or start empty)."""
        loaded = self._store.open()
        self.engine = JourneyEngine.restore(
            self._config, loaded.holders, loaded.aliases, loaded.redirects, loaded.engine_meta
        )
        meta = loaded.stage_meta
        self.offset = int(meta.get("offset", -1))
        self.partitions = int(meta.get("partitions", 0))
        self.progress = {int(p): int(ts) for p, ts in meta.get("progress", {}).items()}
        self.applied = {int(p): int(o) for p, o in meta.get("applied", {}).items()}
        self.idle = {int(p) for p in meta.get("idle", [])}
        self.max_ts = int(meta.get("max_ts", _NEVER))
        released = meta.get("released")
        if released:
            self.sequencer.released = (int(released[0]), str(released[1]))
        for values in meta.get("buffer", []):
            self.sequencer.push(record_from_values(values))

    def close(self) -> None:
        """Release the checkpoint directory."""
        self._store.close()

    # ------------------------------------------------------------------ input

    def handle(self, messages: Iterable[tuple[int, bytes]]) -> Output:
        """Apply a batch of (offset, value) messages; return the rows it produced."""
        for offset, value in messages:
            if offset <= self.offset:
                continue  # already reflected in the checkpoint
            self.offset = offset
            for item in decode_ordered(value):
                if isinstance(item, Forwarded):
                    self._receive(item)
                else:
                    self._control(item)
        watermark = self.watermark()
        if watermark is not None:
            self._release(self.sequencer.release(watermark))
        return self.engine.take()

    def _receive(self, item: Forwarded) -> None:
        partition, record = item.partition, item.record
        if item.offset <= self.applied.get(partition, -1):
            self.stats.redelivered += 1  # forwarded again after a restart or a rebalance
            return
        self.applied[partition] = item.offset
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
                self.engine.process_late(record)

    def _control(self, item: Control) -> None:
        if item.kind == "idle":
            self.partitions = max(self.partitions, item.partitions)
            self.idle.add(item.partition)
        elif item.kind == "drain":
            self.drain_requested = False
            if self.all_idle():  # a partition may have delivered since the drain was asked
                self._drain()

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
        engine = self.engine
        count = 0
        for event in events:
            engine.process(event)
            count += 1
        self.stats.released += count

    def _drain(self) -> None:
        self._release(self.sequencer.drain())
        if self.max_ts != _NEVER:
            self.engine.advance_to(self.max_ts)
        self.stats.drains += 1

    # --------------------------------------------------------------- control

    def drain_due(self) -> bool:
        """Whether to ask for a drain now: every partition idle, and something to release.

        The drain is asked through the ordered topic (`DRAIN_JSON`), so it takes
        effect in order, and the same way when the input is read again.
        """
        if self.drain_requested or not self.all_idle():
            return False
        return bool(len(self.sequencer)) or self.engine.clock < self.max_ts

    # ------------------------------------------------------------ checkpoint

    def checkpoint(self) -> None:
        """Save engine changes and the stage's position in one write."""
        buffered = sorted(
            (item[3] for item in self.sequencer._heap),  # noqa: SLF001 (the stage owns it)
            key=lambda e: (e.ts, e.event_id),
        )
        meta = {
            "offset": self.offset,
            "partitions": self.partitions,
            "progress": {str(p): ts for p, ts in self.progress.items()},
            "applied": {str(p): offset for p, offset in self.applied.items()},
            "idle": sorted(self.idle),
            "max_ts": self.max_ts,
            "released": list(self.sequencer.released),
            "buffer": [record_values(e) for e in buffered],
        }
        self._store.save(self.engine.changes(), meta)
