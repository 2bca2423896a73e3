"""The journey stage: ordered input in, engine output and checkpoints out.

The Faust agent that owns the single-partition `ordered` topic hands each
batch of messages to a `JourneyStage`. Messages are either events forwarded
by the ingest agents (with the source partition they came from and how many
source partitions there are) or control messages the stage itself produced
through the same topic (so that a re-read after a crash makes the same
decisions in the same places).

The watermark rule (documented in the README):
- Each source partition's progress is the latest event time it delivered.
- The watermark is the slowest *active* partition's progress less the
  allowed lateness; events before it are released to the engine in
  (occurred_at, event_id) order.
- A partition that has delivered nothing for `idle_timeout` of wall-clock
  time is marked idle (a control message) and stops holding the watermark
  back until it delivers again.
- When every partition is idle, the stage drains: all buffered events are
  released and event time advances to the latest event seen, so alerts due by
  then are raised, as at the end of a replay.
- An event behind what was already released is late: stored and counted, it
  moves no journey.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from journeys.schemas.record import EventRecord
from journeys.schemas.rows import Output
from journeys.streams.checkpoint import CheckpointStore
from journeys.streams.engine import EngineConfig, JourneyEngine, Sequencer

_NEVER = -(2**62)


def envelope(record: EventRecord, partition: int, partitions: int) -> bytes:
    """The message an ingest agent forwards for one valid event."""
    return orjson.dumps(
        {
            "p": partition,
            "n": partitions,
            "e": [
                record.event_id, record.channel, record.type, record.ts, record.anonymous_id,
                record.contact_id, record.email, record.account_id, record.dmu_role,
                record.segment, record.properties, record.context,
            ],
        }
    )


def pack(messages: list[bytes]) -> bytes:
    """Several JSON values in one message: a JSON array of them."""
    return b"[" + b",".join(messages) + b"]"


def idle_message(partition: int) -> bytes:
    """Control message: a source partition has gone quiet."""
    return orjson.dumps({"c": "idle", "p": partition})


DRAIN_MESSAGE = orjson.dumps({"c": "drain"})


@dataclass
class StageStats:
    """Counters for logs and metrics."""

    received: int = 0
    released: int = 0
    late: int = 0
    duplicates: int = 0
    drains: int = 0
    heard: dict[int, float] = field(default_factory=dict)


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
        self.idle: set[int] = set()
        self.max_ts = _NEVER
        self.stats = StageStats()

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
        self.idle = {int(p) for p in meta.get("idle", [])}
        self.max_ts = int(meta.get("max_ts", _NEVER))
        released = meta.get("released")
        if released:
            self.sequencer.released = (int(released[0]), str(released[1]))
        for values in meta.get("buffer", []):
            self.sequencer.push(EventRecord(*values))

    def close(self) -> None:
        """Release the checkpoint directory."""
        self._store.close()

    # ------------------------------------------------------------------ input

    def handle(self, messages: Iterable[tuple[int, bytes]]) -> Output:
        """Apply a batch of (offset, value) messages; return the rows it produced."""
        now = time.monotonic()
        for offset, value in messages:
            if offset <= self.offset:
                continue  # already reflected in the checkpoint
            self.offset = offset
            body = orjson.loads(value)
            if isinstance(body, list):  # a packed batch of forwarded events
                for item in body:
                    self._receive(item, now)
                continue
            control = body.get("c")
            if control == "idle":
                self.idle.add(int(body["p"]))
            elif control == "drain":
                self._drain()
            else:
                self._receive(body, now)
        watermark = self.watermark()
        if watermark is not None:
            self._release(self.sequencer.release(watermark))
        return self.engine.take()

    def _receive(self, body: dict[str, Any], now: float) -> None:
        partition, record = int(body["p"]), EventRecord(*body["e"])
        self.stats.received += 1
        self.stats.heard[partition] = now
        self.partitions = max(self.partitions, int(body["n"]))
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

    def control_messages(self, idle_after: float) -> list[bytes]:
        """Control messages due now: partitions gone quiet, and a drain when all are.

        Sent through the ordered topic, so they take effect in order and the same
        way when the input is read again after a restart.
        """
        now = time.monotonic()
        messages = []
        quiet = set(self.idle)
        for partition in range(self.partitions):
            heard = self.stats.heard.get(partition)
            if partition not in self.idle and (heard is None or now - heard > idle_after):
                if heard is None:
                    self.stats.heard[partition] = now  # give it a full period from now
                    continue
                messages.append(idle_message(partition))
                quiet.add(partition)
        everyone_quiet = self.partitions > 0 and len(quiet) >= self.partitions
        if everyone_quiet and (len(self.sequencer) or self.engine.clock < self.max_ts):
            messages.append(DRAIN_MESSAGE)
        return messages

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
            "idle": sorted(self.idle),
            "max_ts": self.max_ts,
            "released": list(self.sequencer.released),
            "buffer": [
                [e.event_id, e.channel, e.type, e.ts, e.anonymous_id, e.contact_id, e.email,
                 e.account_id, e.dmu_role, e.segment, e.properties, e.context]
                for e in buffered
            ],
        }
        self._store.save(self.engine.changes(), meta)
