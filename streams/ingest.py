"""Ingest: raw input to forwarded events and dead letters, and when a partition is idle.

Pure functions and state for the ingest agents of `journeys.streams.app`:

- `split` validates a batch of raw messages. Valid events become forwarded
  messages for the ordered topic; everything else (bad JSON, a broken
  contract, an event over `EVENT_BYTES`, even a validator bug) becomes a dead
  letter with its reason. Nothing is dropped silently: only the privacy gate
  (`journeys.schemas.privacy`: consent denied, a forgotten person) withholds
  valid events, counted in `Split.withheld` by reason.
- `IdleWatch` decides when a source partition this worker reads is idle. A
  partition is idle only when all three hold: its messages were forwarded up
  to the log end that a *fresh* fetch from the broker reported (caught up),
  nothing arrived from it for `idle_after` seconds (quiet), and that fetch is
  at most `fresh_within` seconds old. During a broker outage fetches stop,
  so no partition is declared idle because it went silent; a partition with
  a backlog is never idle, whatever the clock says.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from journeys.schemas.codec import check_event_size, forwarded_json
from journeys.schemas.errors import InvalidEvent
from journeys.schemas.event import parse_event
from journeys.schemas.privacy import PrivacyGate
from journeys.schemas.rows import DeadLetterRow

log = logging.getLogger(__name__)


@dataclass
class Split:
    """One batch of input, validated: what to forward, what to dead-letter."""

    forward: list[bytes] = field(default_factory=list)
    dead_letters: list[DeadLetterRow] = field(default_factory=list)
    #: Per source partition, the offset after the last message of the batch.
    next_offsets: dict[int, int] = field(default_factory=dict)
    #: Valid events the privacy gate withheld (dropped or anonymised), by reason.
    withheld: dict[str, int] = field(default_factory=dict)


def split(
    messages: Iterable[tuple[str, int, int, bytes]],
    partitions: int,
    received_at: int,
    gate: PrivacyGate | None = None,
) -> Split:
    """Validate (topic, partition, offset, value) messages of the events topic; valid
    events pass the privacy `gate` when one is given."""
    out = Split()
    for topic, partition, offset, raw in messages:
        out.next_offsets[partition] = max(out.next_offsets.get(partition, 0), offset + 1)
        try:
            check_event_size(raw)
            record = parse_event(raw)
        except InvalidEvent as exc:
            reason = str(exc)
        except Exception as exc:  # a validator bug must not lose the input either
            log.exception("validation failed unexpectedly at %s:%s:%s", topic, partition, offset)
            reason = f"validation failed unexpectedly: {type(exc).__name__}: {exc}"
        else:
            if gate is not None:
                verdict = gate.screen(record)
                if verdict.reason is not None:
                    out.withheld[verdict.reason] = out.withheld.get(verdict.reason, 0) + 1
                if verdict.record is None:
                    continue
                record = verdict.record
            out.forward.append(forwarded_json(record, partition, partitions, offset))
            continue
        if gate is not None and gate.payload_suppressed(raw):
            out.withheld["suppressed"] = out.withheld.get("suppressed", 0) + 1
            continue
        source = f"{topic}:{partition}:{offset}"
        out.dead_letters.append(DeadLetterRow.of(raw, reason, source, received_at))
    return out


@dataclass(frozen=True)
class Fetched:
    """What the consumer last heard from the broker about a partition."""

    #: The log end offset (the offset the next message will get); None if unknown.
    highwater: int | None
    #: When (seconds, same clock as the watch's `now`) that was heard; None if never.
    at: float | None
    #: The group's committed offset for the partition (None if unknown).
    committed: int | None = None


class IdleWatch:
    """Which of this worker's source partitions are idle (see the module docstring)."""

    def __init__(self, idle_after: float, fresh_within: float | None = None) -> None:
        self.idle_after = idle_after
        self.fresh_within = fresh_within if fresh_within is not None else max(5.0, idle_after)
        self._active: dict[int, float] = {}
        self._forwarded: dict[int, int] = {}
        self._announced: set[int] = set()
        self._assigned_at = 0.0

    def assigned(self, partitions: Iterable[int], now: float) -> None:
        """The partitions this worker reads now; new ones start a full quiet period."""
        wanted = set(partitions)
        if wanted != set(self._active):
            self._assigned_at = now
        for partition in list(self._active):
            if partition not in wanted:
                del self._active[partition]
                self._forwarded.pop(partition, None)
                self._announced.discard(partition)
        for partition in wanted:
            self._active.setdefault(partition, now)

    def delivered(self, next_offsets: Mapping[int, int], now: float) -> None:
        """Messages up to these offsets (exclusive) were forwarded and acknowledged by Kafka."""
        for partition, offset in next_offsets.items():
            self._forwarded[partition] = max(self._forwarded.get(partition, 0), offset)
            self._active[partition] = now
            self._announced.discard(partition)

    def due(self, now: float, fetched: Mapping[int, Fetched]) -> list[int]:
        """Partitions to announce as idle now (each once per quiet period)."""
        out = []
        for partition, active_at in sorted(self._active.items()):
            if partition in self._announced or now - active_at < self.idle_after:
                continue
            state = fetched.get(partition)
            if state is None or state.highwater is None or state.at is None:
                continue
            if now - state.at > self.fresh_within:
                continue  # the broker has not answered lately: silence proves nothing
            done = max(self._forwarded.get(partition, 0), state.committed or 0)
            if done >= state.highwater:
                out.append(partition)
        return out

    def announced(self, partitions: Iterable[int]) -> None:
        """The idle messages for these partitions were delivered."""
        self._announced.update(partitions)

    def stale(self, now: float, fetched: Mapping[int, Fetched]) -> bool:
        """Whether this worker's partitions went without news from the broker for longer
        than `fresh_within` (counted from the last assignment when none came yet)."""
        if not self._active:
            return False
        times = [self._assigned_at]
        times += [state.at for p in self._active if (state := fetched.get(p)) and state.at]
        return now - max(times) > self.fresh_within
