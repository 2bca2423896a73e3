"""The journey stage of one partition: routed commands in, in any order, journey rows out. Pure.

No Kafka, no ClickHouse, no wall clock: time is the events' own. Identity is
decided upstream (`router.IdentityRouter`, the one owner of the identity
graph), which tells each partition what to do with `commands`:

- `Route`: an event belongs to journey `key` (of rank `rank`, with `contacts`
  contacts). A redelivery (an event_id the journey holds, at any age: its
  tail, or its archive through the fingerprint index) is dropped, unless it
  is earlier than the copy applied: then the event moves to the earlier time
  (the earliest occurred_at is kept, as the events table and sorted replay
  do). Otherwise the event joins its journey's tail; if it comes after
  everything the journey holds, it is applied at once (`Phases.step`), else
  the journey is marked and folded again from its base and its sorted tail;
  an event at or before the journey's bound joins its archive and the journey
  is folded again from its first event. The engine publishes the difference:
  changed and deleted transitions, alerts raised, moved or withdrawn (closed
  ones from long ago too), a new journey row. Marked journeys are folded once
  per batch: when event time moves, when one of their deadlines is due, and
  for late events (`Route.late`) at the end of a run of them to one journey
  (the next other command, or `take`).
- `Release`: journey `loser` turned out to be `winner`'s. Its rows are
  retracted here and its state leaves as an `Absorb` for the winner's
  partition (`outbox`), its archive chunks ahead of it as `AbsorbPart`s so no
  message outgrows the broker's limit; a forward stays for absorbs still on
  their way to it.
- `Absorb`: the released journey's events join the winner's (one per
  event_id, the earliest time kept) and the winner is folded again from its
  first event: it may come before or after the winner's later events, and
  conditional rules and episodes come out as in sorted replay. The same
  released state is absorbed once.
- `Erase`: events of a journey are forgotten: it is folded again without
  them, as if they had never come (with no event left, its rows are deleted).
- `Forget`, `Contacts`, `Advance`: a visitor's state goes; a journey's
  contact count; event time moves (deadlines before it fire).

Row versions are Lamport clocks: each command carries the sender's sequence
and the engine continues from the larger of its own and that, so a row
published after a merge supersedes what the merged journey's partition
published before it, whichever partition that was.

The window (`EngineConfig.window`, the setting `dedupe_window`) bounds cost,
never the answer: events later than `clock - window` stay unpacked in the
tail (at most `MAX_TAIL` per journey), older ones are archived, and an event
that comes older than that costs a fold of its journey from the start.

With a `Store` (`store.py`; the workers' is RocksDB, `streams.disk`), only
`capacity` journeys stay in memory after each save, besides those with work
pending; the others, and the forwards and absorbed losers, are read back from
their saved records when a command, a timer or the sweep needs them, exactly
as a restore reads them, so what is published does not change.
"""

from __future__ import annotations

import gc
import heapq
from bisect import insort
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

import orjson

from journeys.schemas.errors import ConfigError
from journeys.schemas.record import DMU_ROLES, EventRecord
from journeys.schemas.rows import (
    AlertRow,
    GenerationRow,
    JourneyRow,
    Output,
    StoredEvent,
    TransitionRow,
)
from journeys.streams.engine.alerts import Alerts
from journeys.streams.engine.commands import (
    Absorb,
    AbsorbPart,
    Advance,
    Command,
    Contacts,
    Erase,
    Expect,
    Forget,
    Rebuild,
    Release,
    Route,
    partition_of,
)
from journeys.streams.engine.phases import Phases
from journeys.streams.engine.rules import Rules, load_rules, rules_from_text, rules_hash
from journeys.streams.engine.state import (
    ACCOUNT_RANK,
    CART_ABANDONED,
    DEAL_STALLED,
    FULL,
    KEEP_TAIL,
    MAX_SEGMENT,
    MAX_TAIL,
    TAIL,
    Alert,
    Entry,
    Fold,
    Holder,
    Step,
    by_time,
    fingerprint,
    trajectory_rows,
)
from journeys.streams.engine.store import Kept, Store

__all__ = ["CART_ABANDONED", "DEAL_STALLED", "EngineConfig", "PartitionEngine"]

_DMU_BITS = {role: 1 << i for i, role in enumerate(DMU_ROLES)}
# Stages of one call, in the order they publish (see `PartitionEngine._version`).
_AT_SETTLE, _AT_WAKE, _AT_MERGE, _AT_EVENT = 0, 1, 2, 3
#: A journey still active keeps up to this many tail events that left the window.
_KEEP = 8
#: A merge whose state has not come after this many windows of event time is not waited
#: for any longer (a safety net: absorbs come within moments, even in a backlog).
_GIVE_UP = 30
#: How far sequences jump when an engine is restored from its state.
RESTART_GAP = 2**32
# State keys (see `changes`): holders, their archive chunks, forwards, absorbed losers,
# expected ones, archive chunks of absorbs on their way in, the engine's meta.
_HOLDER, _FORWARD, _ABSORBED, _EXPECTED, META = b"h:", b"f:", b"x:", b"e:", b"m:engine"
#: The rules a rebuild gave the engine (TOML text; absent: the configured ones).
_RULES = b"m:rules"
#: The layout of the state `changes()` writes. 2: every journey keeps its archive (before
#: it, events that left the window were forgotten, and a re-fold from them cannot be exact).
STATE_FORMAT = 2


class StateFormatError(RuntimeError):
    """Saved state of a layout this engine cannot continue from."""


_CHUNK, _INCOMING = b"k:", b"i:"
#: The records of journeys themselves.
_HELD = (_HOLDER, _CHUNK)
#: The records a `Store` keeps: those of journeys, forwards and absorbed losers.
_STORED = (*_HELD, _FORWARD, _ABSORBED)
_SEPARATOR = "\x1f"


def _forward_of(value: bytes) -> tuple[str, int]:
    """A forward record: (the journey it went to, event time of the merge)."""
    target, at = orjson.loads(value)
    return target, at


def _at_of(value: bytes) -> int:
    """An absorbed record: the event time of the merge."""
    at: int = orjson.loads(value)
    return at


def _capped(entries: list[Entry], bound: int) -> int:
    """The bound that leaves at most `MAX_TAIL` of the sorted `entries` after it."""
    later = [e for e in entries if e[0] > bound]
    if len(later) <= MAX_TAIL:
        return bound
    bound = later[-KEEP_TAIL][0]
    if bound >= later[-1][0]:
        bound = later[-1][0] - 1 if later[0][0] < later[-1][0] else later[-1][0]
    return bound


def _part_name(key: str, number: int) -> bytes:
    """The key and number of an archive chunk in a state record's name."""
    return f"{key}{_SEPARATOR}{number}".encode()


def _restated(
    rows: list[Any], before: dict[tuple[str, str], Any], key: Any, gone: Any
) -> list[Any]:
    """A rebuild's rows of one kind (transitions or alerts), each marked `restated` when
    the previous generation published it as it is (`before`, by `key(row)`), then
    `gone(row)` of each row the previous generation published and the new one has not."""
    out: list[Any] = []
    for row in rows:
        old = before.pop(key(row), None)
        if old is not None and replace(old, version=row.version, generation=row.generation) == row:
            row = replace(row, restated=True)
        out.append(row)
    out += [gone(old) for _, old in sorted(before.items())]
    return out


@dataclass(frozen=True)
class EngineConfig:
    """Everything that shapes the engine's answers; durations in milliseconds."""

    rules: Rules
    cart_abandon_after: int = 4 * 3_600_000
    deal_stall_after: int = 14 * 86_400_000
    visitor_ttl: int = 90 * 86_400_000
    #: How far behind event time a journey's events stay unpacked in its tail (older ones
    #: are archived, and an event that comes older costs a fold of its journey from the
    #: start). Cost only: dedupe and late events are exact at any age.
    window: int = 3 * 86_400_000
    #: A loyal account's next order is due after its usual interval times this.
    reorder_factor: float = 1.5
    #: The generation of derived rows these rules make (`journeys rebuild`; rows carry it).
    generation: int = 0

    @classmethod
    def default(cls) -> EngineConfig:
        """The contract's defaults."""
        return cls(rules=load_rules())


def _due_before(deadline: int | None, until: int) -> bool:
    """Whether a deadline falls before `until` (folding up to it would fire it)."""
    return deadline is not None and deadline < until


class PartitionEngine:
    """The journeys of one partition: transitions and alerts in event time.

    `apply(command)` carries out one command; `take()` hands over everything
    produced since the last call, with a journey row of every account that
    changed; `outbox` holds the absorbs this partition sends to others, as
    (partition, command) pairs. `changes()` and `restore()` are its state as
    key-value pairs, for a changelog.
    """

    def __init__(
        self,
        config: EngineConfig | None = None,
        partition: int = 0,
        partitions: int = 1,
        store: Store | None = None,
        capacity: int = 0,
    ):
        self.config = config or EngineConfig.default()
        self.partition = partition
        self.partitions = partitions
        self._use(self.config)
        #: The TOML text of the rules a rebuild gave (None: the configured ones).
        self.rules_text: str | None = None
        self._rules_touched = False
        #: The journeys in memory, by key: all of them, or (with a `store`) the ones used
        #: last and every one with work pending; the others are read back when needed.
        self.holders: dict[str, Holder] = {}
        #: Where every journey's saved records are kept (None: all stay in memory).
        self.store = store
        #: With a store, how many journeys stay in memory after `changes()` (at least).
        self.capacity = max(capacity, 1)
        #: Journeys out of memory whose deadline is scheduled -> that deadline.
        self._parked: dict[str, int] = {}
        #: Journeys out of memory with a tail -> (first, last tail time, tail length), for
        #: the sweep (see `_sweep`).
        self._cold_tails: dict[str, tuple[int, int, int]] = {}
        #: Journeys read back from the store since this engine started.
        self.loads = 0
        #: Journeys forgotten or erased since this engine started (a store on disk is
        #: purged of what they replaced, see `JourneyStage.state_changes`).
        self.erasures = 0
        #: Journeys released from here -> the journey they went to, and when (for absorbs
        #: still on their way). Kept for good: however far event time runs ahead of an
        #: absorb (a backlog moves it days in seconds), the absorb still finds its way.
        #: With a store, in memory only until saved (one per visitor identified).
        self.forwards = Kept(_FORWARD, _forward_of, store)
        #: Losers absorbed here, with a digest of the state absorbed -> event time of the
        #: merge (the same state absorbed again is a redelivery). With a store, like forwards.
        self.absorbed = Kept(_ABSORBED, _at_of, store)
        #: Losers whose state is on its way here -> (winner, event time of the merge).
        self.expected: dict[str, tuple[str, int]] = {}
        #: Losers whose absorb arrived since this engine started. With a store, those with
        #: an absorbed record leave it once it is saved (see `_arrival`).
        self._arrived: set[str] = set()
        #: Absorbs for other partitions: (partition, command).
        self.outbox: list[tuple[int, Command]] = []
        #: Event time: the latest event time processed or advanced to.
        self.clock = 0
        #: Deadlines before this have fired (the clock, or just past it after `advance_to`).
        self._until = 0
        self.late = 0
        self.duplicates = 0
        #: The Lamport sequence row versions are made of.
        self._seq = 0
        self._window = self.config.window
        #: Tail events are folded into the base in batches, once the oldest is this much
        #: older than the window.
        self._slack = max(self._window // 4, 1)
        self._wakes: list[tuple[int, str]] = []
        #: event_id -> time of every event in the tail of a journey in memory (the dedupe
        #: window; a journey read back brings its own, see `_load`).
        self._ids: dict[str, int] = {}
        #: event_id -> fingerprint of tail events whose fingerprint was computed already.
        self._fps: dict[str, int] = {}
        self._pending: dict[str, Holder] = {}
        #: Journeys with a tail, and when event time next looks for tails to fold.
        self._tailed: dict[str, Holder] = {}
        self._next_sweep = 0
        self._dirty: dict[str, Holder] = {}
        self._changed: list[str] = []
        self._out = Output()
        #: State keys changed since the last `changes()`.
        self._touched: set[str] = set()
        self._touched_links: set[bytes] = set()
        #: Archive chunk records still stored for holders that went: key -> how many.
        self._gone: dict[str, int] = {}
        #: Archive chunks of absorbs on their way in: loser -> chunk number -> chunk.
        self._incoming: dict[str, dict[int, bytes]] = {}
        #: The journey a run of late events marked, folded when the run ends.
        self._run: str | None = None

    def _use(self, config: EngineConfig) -> None:
        """Derive with `config` (its rules and generation) from now on."""
        self.config = config
        rules = config.rules
        self._phase_names = rules.phases
        self._alerts = Alerts(
            rules,
            config.cart_abandon_after,
            config.deal_stall_after,
            config.reorder_factor,
            config.generation,
        )
        self._logic = Phases(rules, self._alerts)
        self._kinds = self._logic.by_name
        self._step = self._logic.step
        self._generation = config.generation

    @property
    def seq(self) -> int:
        """The engine's Lamport sequence."""
        return self._seq

    # ------------------------------------------------------------------ input

    def apply(self, command: Command) -> None:
        """Carry out one command (see the module docstring)."""
        if self._run is not None and not (
            isinstance(command, Route) and command.late and command.key == self._run
        ):
            self._settle_run()
        seq = command.seq
        self._seq = self._seq + 1 if seq <= self._seq else seq
        if isinstance(command, Route):
            self._route(command)
        elif isinstance(command, Advance):
            self._advance(command.ts)
        elif isinstance(command, Release):
            self._release(command)
        elif isinstance(command, Absorb):
            self._absorb(command)
        elif isinstance(command, Expect):
            self._expect(command.loser, command.winner, command.at)
        elif isinstance(command, Contacts):
            h = self._get(command.key)
            if h is not None and h.contacts != command.contacts:
                h.contacts = command.contacts
                self._dirty[h.key] = h
                self._touched.add(h.key)
        elif isinstance(command, Forget):
            links = len(self._touched_links)
            h = self._get(command.key)
            if h is not None:
                self._forget(h)
            self._forget_links(command.key)
            if h is not None or len(self._touched_links) != links:
                self.erasures += 1  # records went: a store is purged of their old values
        elif isinstance(command, AbsorbPart):
            self._part(command)
        elif isinstance(command, Erase):
            self._erase(command)
        elif isinstance(command, Rebuild):
            self._rebuild(command)

    def apply_all(self, commands: Iterable[Command]) -> None:
        """Carry out many commands."""
        for command in commands:
            self.apply(command)

    def _route(self, command: Route) -> None:
        event = command.event
        ts = event.ts
        if command.late:
            self.late += 1
            self._ingest(event, True, command)
            if self._pending:
                self._run = command.key
            return
        if ts > self.clock:
            self.clock = ts
            if ts > self._until:
                self._until = ts
                if self._pending:
                    self._settle(_AT_SETTLE)
                if self._wakes and self._wakes[0][0] < ts:
                    self._wake()
                if ts >= self._next_sweep:
                    self._sweep()
        self._ingest(event, False, command)

    def advance_to(self, ts: int) -> None:
        """Event time reached `ts` with nothing more before it: raise what is due by then."""
        self._seq += 1
        self._advance(ts)

    def _advance(self, ts: int) -> None:
        self.clock = max(self.clock, ts)
        self._until = max(self._until, ts + 1)
        if self._pending:
            self._settle(_AT_SETTLE)
        if self._wakes and self._wakes[0][0] < self._until:
            self._wake()
        if self._until >= self._next_sweep:
            self._sweep()

    def take(self) -> Output:
        """Everything produced since the last call, journey rows included.

        Only a run of late events still open is folded here, with the versions it gets
        when the next command ends the run: what is published, and with which versions,
        depends only on the commands that fed the engine, not on when it was taken.
        """
        if self._run is not None:
            self._settle_run()
        out = self._out
        for holder in self._dirty.values():
            if (
                holder.rank >= ACCOUNT_RANK
                and holder.cur.traj
                and self.holders.get(holder.key) is holder
            ):
                out.journeys.append(self._journey_row(holder))
        self._dirty = {}
        self._out = Output()
        return out

    def take_outbox(self) -> list[tuple[int, Command]]:
        """The absorbs to send to other partitions since the last call."""
        out, self.outbox = self.outbox, []
        return out

    def _holder(self, key: str, rank: int, contacts: int, ts: int) -> Holder:
        """Journey `key` as the router sees it: created, or its rank and contacts updated."""
        h = self._get(key)
        if h is None:
            h = self.holders[key] = Holder(key, rank, ts)
            h.contacts = contacts
            self._touched.add(key)
            self._unforward(key)
            return h
        if rank > h.rank:
            if h.rank < ACCOUNT_RANK <= rank:  # a visitor turns into an account
                self._became_account(h)
            else:
                self._mark(h)
            h.rank = rank
        if contacts != h.contacts:
            h.contacts = contacts
            self._dirty[key] = h
            self._touched.add(key)
        return h

    # ------------------------------------------------------------------ events

    def _ingest(self, event: EventRecord, late: bool, command: Route) -> None:
        """Dedupe, and add one event to its journey (applied at once if in order)."""
        event_id, ts = event.event_id, event.ts
        h = self.holders.get(command.key)  # first: a journey read back brings its tail's ids
        if h is None and self.store is not None:
            h = self._get(command.key)
        ids = self._ids
        known = ids.get(event_id)
        archived = fp = None
        if known is None and h is not None and h.archive.count:
            fp = fingerprint(event_id)
            known = archived = h.index().get(fp)
        if known is not None and ts >= known:
            self.duplicates += 1
            if h is not None:
                self._holder(command.key, command.rank, command.contacts, ts)
            return
        if h is None or command.rank > h.rank or command.contacts != h.contacts:
            h = self._holder(command.key, command.rank, command.contacts, ts)
        kinds = self._kinds.get(event.channel)
        kind = kinds.get(event.type) if kinds is not None else None
        if kind is None:
            kind = self._logic.kind(event.channel, event.type)
        key = h.key
        account = key if h.rank >= ACCOUNT_RANK else None
        events = self._out.events
        events.append(StoredEvent(event, account, late))
        segment = event.segment
        if segment is not None and len(segment) > MAX_SEGMENT:
            segment = segment[:MAX_SEGMENT]
        role = _DMU_BITS[event.dmu_role] if event.dmu_role else 0
        entry = (ts, event_id, kind.code, segment, role)
        if known is not None:
            self.duplicates += 1
            if archived is not None:
                moved = self._move_archived(h, entry)
            else:
                moved = self._move_earlier(h, entry, known)
            if not moved:
                events.pop()
            return
        # Aggregates that are functions of the set of events.
        h.events += 1
        if ts < h.first_seen:
            h.first_seen = ts
        h.dmu |= role
        self._dirty[key] = h
        self._touched.add(key)
        if ts <= h.bound:  # older than the journey's tail: folded again from its start
            self._mark(h, True)
            h.archive_add([entry])
            return
        ids[event_id] = ts
        if fp is not None:  # kept for when the event is archived
            self._fps[event_id] = fp
        tail = h.tail
        cur = h.cur
        if tail:
            last = tail[-1]
            in_order = ts > last[0] or (ts == last[0] and event_id > last[1])
        else:
            self._tailed[key] = h
            in_order = True
        if not in_order or h.pending or (cur.fired is not None and ts <= cur.fired):
            insort(tail, entry, key=by_time)
            self._mark(h)
            if len(tail) > MAX_TAIL:
                self._cap(h)
            return
        # In order: extend the current fold.
        tail.append(entry)
        if cur is h.base:
            cur = h.cur = cur.copy()
        if account is None:
            self._step(cur, ts, event_id, kind, segment, None)
        else:
            changed = self._changed
            if h.wake is not None and h.wake < ts:
                self._alerts.fire(cur, ts, changed)
            made = self._step(cur, ts, event_id, kind, segment, changed)
            if ts < self._until and (kind.episodes or changed):  # a deadline it set may be past
                self._alerts.fire(cur, self._until, changed)
            if made is not None:
                traj = cur.traj
                previous = traj[-2][0] if len(traj) > 1 else -1
                self._out.transitions.append(
                    self._transition(account, previous, made, self._version(_AT_EVENT), False)
                )
            if changed:
                self._emit_alerts(h, cur, changed, self._version(_AT_EVENT))
                self._schedule(h)
            elif kind.episodes:
                self._schedule(h)
        if len(tail) > MAX_TAIL:
            self._cap(h)

    def _cap(self, h: Holder) -> None:
        """A tail longer than `MAX_TAIL`: all but about `KEEP_TAIL` events are archived."""
        tail = h.tail
        last = tail[-1][0]
        bound = tail[-KEEP_TAIL][0]
        if bound >= last:  # keep the latest moment's events, unless that is all of them
            bound = last - 1 if tail[0][0] < last else last
        self._roll(h, bound)

    def _version(self, stage: int) -> int:
        """The version of rows published now: it grows with every call and, within one, with
        the stage (timers, merges, the event, folding again), the same however calls are
        batched between `take()`s, so input read again after a restart publishes the same."""
        return self._seq * 4 + stage

    def _emit_alerts(self, h: Holder, f: Fold, changed: list[str], version: int) -> None:
        alerts = f.alerts or {}
        for aid in dict.fromkeys(changed):
            self._out.alerts.append(self._alerts.row(aid, alerts[aid], h.key, version))
        changed.clear()

    def _move_earlier(self, h: Holder, entry: Entry, known: int) -> bool:
        """An earlier delivery of an event in `h`'s tail: move it there. False if not found."""
        ts, event_id = entry[0], entry[1]
        tail = h.tail
        i = next((i for i, e in enumerate(tail) if e[1] == event_id and e[0] == known), -1)
        if i < 0:
            return False
        if ts <= h.bound:
            self._mark(h, True)
            del tail[i]
            del self._ids[event_id]
            h.archive_add([entry])
            if not tail:
                self._tailed.pop(h.key, None)
        else:
            del tail[i]
            self._ids[event_id] = ts
            insort(tail, entry, key=by_time)
            self._mark(h)
        if ts < h.first_seen:
            h.first_seen = ts
        self._dirty[h.key] = h
        self._touched.add(h.key)
        return True

    def _move_archived(self, h: Holder, entry: Entry) -> bool:
        """An earlier delivery of an archived event: it moves there, the journey is folded
        again. False if the archive does not hold it (a fingerprint shared by two ids)."""
        self._mark(h, True)
        if not h.archive.move(entry[1], entry):
            return False
        h.idx = None  # the index is built again with the moved time
        if entry[0] < h.first_seen:
            h.first_seen = entry[0]
        self._dirty[h.key] = h
        self._touched.add(h.key)
        return True

    @staticmethod
    def _own_base(h: Holder) -> Fold:
        """The base, no longer shared with `cur`, to change it."""
        if h.cur is h.base:
            h.base = h.base.copy()
        return h.base

    def _became_account(self, h: Holder) -> None:
        """A visitor's journey is an account's now: nothing of it was published, and its
        base (if any) was folded without alerts, so it is folded again from its start."""
        if h.archive.count:
            self._mark(h, True)
        else:
            self._mark(h)
        if h.pending != FULL or h.was is None:
            h.was = ({}, [])

    def _mark(self, h: Holder, full: bool = False) -> None:
        """The journey is folded again when event time next moves (from its first event if
        `full`: call it before the archive changes, so what was published is known)."""
        if full and h.pending != FULL:
            h.was = self._published(h)
            h.pending = FULL
        elif not h.pending:
            h.pending = TAIL
        self._pending[h.key] = h

    def _published(self, h: Holder) -> tuple[dict[str, Alert], list[Step]]:
        """Every alert and the trajectory published for the journey: its current fold's
        (what was published last), and the closed alerts the base forgot (`Alerts.prune`),
        from its archive."""
        if h.rank < ACCOUNT_RANK:
            return {}, []
        alerts = self._closed(h)
        alerts.update(h.cur.alerts or {})
        return alerts, list(h.cur.traj)

    def _closed(self, h: Holder) -> dict[str, Alert]:
        """The closed alerts the journey's base forgot (folded from the archive if they are
        not known since its state was read)."""
        if h.closed is None:
            if not h.archive.count:
                return {}
            entries = sorted(h.archive.entries(), key=by_time)
            base = self._logic.fold(Fold(), entries, h.key, h.bound + 1)
            h.closed = {}
            Alerts.prune(base, h.bound, h.closed)
        return dict(h.closed)

    def _archived_alerts(self, h: Holder) -> dict[str, Alert]:
        """The alerts of a journey's archive, closed ones included."""
        return {**self._closed(h), **(h.base.alerts or {})}

    # ------------------------------------------------------------------ folding

    def _settle(self, stage: int) -> None:
        """Fold every marked journey again and publish the differences."""
        pending, self._pending = self._pending, {}
        for key in sorted(pending):
            holder = pending[key]
            if holder.pending and self.holders.get(key) is holder:
                self._refold(holder, stage)

    def _settle_run(self) -> None:
        """Fold the journey a run of late events marked, with the last event's version."""
        key, self._run = self._run, None
        h = self.holders.get(key) if key is not None else None
        if h is not None and h.pending:
            self._refold(h, _AT_EVENT)

    def _refold(self, h: Holder, stage: int) -> None:
        account = h.key if h.rank >= ACCOUNT_RANK else None
        if h.pending == FULL:
            old_alerts, old_traj = h.was if h.was is not None else self._published(h)
            h.was = None
            entries = sorted(h.archive.entries(), key=by_time)
            base = self._logic.fold(Fold(), entries, account, h.bound + 1)
            new_alerts = dict(base.alerts or {})
            h.closed = {}
            Alerts.prune(base, h.bound, h.closed)
            h.base = base
            new = self._logic.fold(base.copy(), h.tail, account, self._until)
            new_alerts.update(new.alerts or {})
        else:
            old_alerts, old_traj = h.was if h.was is not None else (h.cur.alerts or {}, h.cur.traj)
            h.was = None
            new = self._logic.fold(h.base.copy(), h.tail, account, self._until)
            new_alerts = new.alerts or {}
        if account is not None and h.cur.traj and not new.traj:  # (an erasure) no row left
            version = self._version(stage)
            self._out.journeys.append(replace(self._journey_row(h), version=version, deleted=True))
        h.cur = new
        h.pending = 0
        self._pending.pop(h.key, None)
        foreign, h.foreign = h.foreign, None
        if account is not None:
            version = self._version(stage)
            self._emit_trajectory(h, old_traj, new.traj, version)
            changes = self._alerts.diff(old_alerts, new_alerts)
            for aid in sorted(foreign or ()):  # the same, but under the merged journey's key
                if aid in new_alerts and old_alerts.get(aid) == new_alerts[aid]:
                    changes.append((aid, new_alerts[aid], False))
            for aid, alert, withdrawn in changes:
                self._out.alerts.append(self._alerts.row(aid, alert, h.key, version, withdrawn))
        self._dirty[h.key] = h
        self._touched.add(h.key)
        self._schedule(h)

    def _roll(self, h: Holder, bound: int) -> None:
        """Fold tail events at or before `bound` into the base and archive them."""
        if bound <= h.bound:
            return
        tail = h.tail
        n = len(tail)
        if n and tail[-1][0] > bound:  # (else the whole tail goes, the common case)
            n = 0
            while tail[n][0] <= bound:
                n += 1
        account = h.key if h.rank >= ACCOUNT_RANK else None
        cur = h.cur
        if h.pending == FULL:
            pass  # the base is folded again from the archive anyway
        elif n == len(tail) and not h.pending and (cur.fired is None or cur.fired <= bound):
            h.base = cur  # nothing happened after the bound: the current fold is the base
        elif n:
            self._logic.fold(self._own_base(h), tail[:n], account, bound + 1)
        elif account is not None and h.base is not cur:
            self._alerts.fire(h.base, bound + 1, None)
        ids = self._ids
        for entry in tail[:n]:
            if ids.get(entry[1]) == entry[0]:
                del ids[entry[1]]
        h.archive_add(tail[:n], self._fps)
        h.tail = tail[n:]
        if not h.tail:
            self._tailed.pop(h.key, None)
        h.bound = bound
        Alerts.prune(h.base, bound, h.closed)
        if h.pending != FULL:  # else `cur` is what was published: `was` keeps it
            Alerts.prune(h.cur, bound, h.closed)
        if self.holders.get(h.key) is h:
            self._touched.add(h.key)

    # ------------------------------------------------------------------ timers

    def _next_wake(self, h: Holder) -> int | None:
        # A visitor has no deadline here: the router forgets it (see `Forget`).
        return self._alerts.next_deadline(h.cur) if h.rank >= ACCOUNT_RANK else None

    def _schedule(self, h: Holder) -> None:
        """Keep one timer entry per journey at its earliest deadline (later ones found lazily)."""
        wake = self._next_wake(h)
        if wake is not None and (h.wake is None or wake < h.wake):
            h.wake = wake
            heapq.heappush(self._wakes, (wake, h.key))

    def _wake(self) -> None:
        """Run every journey's deadlines before the clock."""
        until = self._until
        wakes = self._wakes
        while wakes and wakes[0][0] < until:
            deadline, key = heapq.heappop(wakes)
            h = self._get(key)
            if h is None or h.wake != deadline:
                continue
            h.wake = None
            if h.pending:
                self._refold(h, _AT_WAKE)
            elif h.rank >= ACCOUNT_RANK:
                due = self._alerts.next_deadline(h.cur)
                if due is not None and due < until:
                    changed = self._changed
                    if h.cur is h.base:
                        h.cur = h.base.copy()
                    self._alerts.fire(h.cur, until, changed)
                    self._touched.add(key)
                    if changed:
                        self._emit_alerts(h, h.cur, changed, self._version(_AT_WAKE))
                        self._dirty[key] = h
            self._schedule(h)

    def _sweep(self) -> None:
        """Fold tail events that left the window into their bases (every `_slack` of time).

        A journey whose whole tail left the window takes its current fold as base, at no
        cost. One still active keeps its old events until its tail is longer than
        `_KEEP`: folding them in means applying them again, so it is done in batches.
        """
        horizon = self._until - 1 - self._window
        if self.expected:  # a merge on its way must find the winner's tail as it was then
            for loser, (_, at) in list(self.expected.items()):
                if at < horizon - _GIVE_UP * self._window:  # lost for good: wait no longer
                    self._expected(loser)
            waiting = [at for _, at in self.expected.values()]
            horizon = min([horizon, *(at - 1 - self._window for at in waiting)])
        for key, (first, last, n) in list(self._cold_tails.items()):
            if last <= horizon or (first <= horizon and n > _KEEP):
                self._get(key)  # back in memory (and in `_tailed`) to be rolled below
        due = [
            h
            for h in self._tailed.values()
            if h.tail[-1][0] <= horizon or (h.tail[0][0] <= horizon and len(h.tail) > _KEEP)
        ]
        for h in due:  # (rolling one journey changes no other's tail)
            self._roll(h, horizon)
        self._next_sweep = self._until + self._slack

    def _forget(self, h: Holder) -> None:
        """A visitor the router forgot (not seen for `visitor_ttl`): its state goes."""
        self._drop(h)

    def _forget_links(self, key: str) -> None:
        """What this partition keeps under a forgotten key besides its journey: the forward
        it left when merged away, the absorbs of it expected, received or in parts."""
        self._unforward(key)
        if self.expected.pop(key, None) is not None:
            self._touched_links.add(_EXPECTED + key.encode())
        names = self.absorbed.prefixed(key + _SEPARATOR)
        for name in names:
            self.absorbed.pop(name)
            self._touched_links.add(_ABSORBED + name.encode())
        if names:  # its absorb arrived all the same (see `_arrival`)
            self._arrived.add(key)
        self._take_parts(key)

    def _unforward(self, key: str) -> None:
        """Journey `key` is here again (or forgotten): the forward it left goes, its record
        too (else a restored engine, or one whose forwards are in a store, would follow it)."""
        if self.forwards.pop(key, None) is not None:
            self._touched_links.add(_FORWARD + key.encode())

    def _drop(self, h: Holder) -> None:
        """A journey's state goes (its records, archive chunks included, are deleted)."""
        key = h.key
        del self.holders[key]
        self._pending.pop(key, None)
        self._tailed.pop(key, None)
        self._cold_tails.pop(key, None)
        self._parked.pop(key, None)
        self._dirty.pop(key, None)
        self._touched.add(key)
        self._gone[key] = max(self._gone.get(key, 0), h.archive.saved)
        if self._run == key:
            self._run = None
        for ts, event_id, *_ in h.tail:
            self._fps.pop(event_id, None)
            if self._ids.get(event_id) == ts:
                del self._ids[event_id]

    # ------------------------------------------------------------------ erasure

    def _erase(self, command: Erase) -> None:
        """Forget events of a journey: it becomes what it would be had they never come."""
        self.erasures += 1
        h = self._get(command.key)
        if h is None:
            forward = self.forwards.get(command.key)
            if forward is not None:  # the journey merged on: the erasure follows it
                self._send(replace(command, key=forward[0], seq=self._seq + 1), forward[0])
            return
        gone = set(command.event_ids)
        history = h.history()
        kept = [e for e in history if e[1] not in gone]
        if len(kept) == len(history):
            return
        if not kept:  # nothing left: the journey never was
            if h.rank >= ACCOUNT_RANK:
                self._withdraw(h)
            self._drop(h)
            return
        self._mark(h, True)
        self._set_history(h, kept, h.bound)
        self._dirty[h.key] = h
        self._touched.add(h.key)
        self._settle(_AT_EVENT)

    def _withdraw(self, h: Holder) -> None:
        """Delete every row a journey published: transitions, journey row, alerts."""
        version = self._version(_AT_EVENT)
        alerts, traj = h.was if h.pending == FULL and h.was is not None else self._published(h)
        for previous, step in trajectory_rows(traj).values():
            self._out.transitions.append(self._transition(h.key, previous, step, version, True))
        if traj and h.cur.traj:
            self._out.journeys.append(replace(self._journey_row(h), version=version, deleted=True))
        for aid, alert in alerts.items():
            self._out.alerts.append(self._alerts.row(aid, alert, h.key, version, True))

    def _set_history(self, h: Holder, entries: list[Entry], bound: int) -> None:
        """Journey `h` holds exactly `entries` now (archive up to `bound`, tail after it,
        the tail capped at `MAX_TAIL`); it must be marked to be folded again in full."""
        ids = self._ids
        for ts, event_id, *_ in h.tail:
            if ids.get(event_id) == ts:
                del ids[event_id]
        entries.sort(key=by_time)
        h.set_history(entries, _capped(entries, bound))
        for ts, event_id, *_ in h.tail:
            ids[event_id] = ts
        if h.tail:
            self._tailed[h.key] = h
        else:
            self._tailed.pop(h.key, None)

    # ------------------------------------------------------------------ rebuild

    def _rebuild(self, command: Rebuild) -> None:
        """Derive every journey again with new rules, as a new generation.

        Every account's rows are published again under the new generation (its journey
        row, every transition, every alert, closed ones too), then a `GenerationRow`
        says this partition holds the generation. Transitions and alerts the previous
        generation had as they are come `restated` (stored, not published again); what
        the new rules withdraw comes as a deletion or a withdrawal, so alert receivers
        get the corrections and nothing else. A generation not above the current one is
        a request read again: ignored. Rules that do not compile (checked before they
        are sent) are ignored too, and the partition reports nothing.
        """
        if command.generation <= self._generation:
            return
        try:
            rules = rules_from_text(command.rules, f"generation {command.generation}")
        except ConfigError:
            return
        transitions: dict[tuple[str, str], TransitionRow] = {}
        alerts: dict[tuple[str, str], AlertRow] = {}
        self._load_all()  # every journey is folded again: all in memory until saved
        for h in self.holders.values():
            if h.rank >= ACCOUNT_RANK:
                self._published_rows(h, transitions, alerts)
        self._use(replace(self.config, rules=rules, generation=command.generation))
        self.rules_text = command.rules
        self._rules_touched = True
        for key, h in self.holders.items():
            h.closed = None
            h.foreign = None
            h.was = ({}, [])  # the new generation has nothing yet
            h.pending = FULL
            self._pending[key] = h
            self._touched.add(key)
        out = self._out
        first_transition, first_alert = len(out.transitions), len(out.alerts)
        self._settle(_AT_EVENT)
        version, generation = self._version(_AT_EVENT), self._generation
        out.transitions[first_transition:] = _restated(
            out.transitions[first_transition:],
            transitions,
            lambda t: (t.account_id, t.to_phase),
            lambda t: replace(t, version=version, deleted=True, generation=generation),
        )
        out.alerts[first_alert:] = _restated(
            out.alerts[first_alert:],
            alerts,
            lambda a: (a.account_id, a.alert_id),
            lambda a: replace(a, version=version, withdrawn=True, generation=generation),
        )
        digest = rules_hash(command.rules)
        out.generations.append(
            GenerationRow(
                command.generation, self.partition, self.partitions, digest, command.rules
            )
        )

    def _published_rows(
        self,
        h: Holder,
        transitions: dict[tuple[str, str], TransitionRow],
        alert_rows: dict[tuple[str, str], AlertRow],
    ) -> None:
        """The transitions (by account and phase) and alerts (by account and id) journey `h`
        has published, added to `transitions` and `alert_rows`."""
        if h.was is not None:
            alerts, traj = h.was
            if h.pending != FULL:
                alerts = {**self._closed(h), **alerts}
        else:
            alerts, traj = self._published(h)
        names = self._phase_names
        for phase, (previous, step) in trajectory_rows(traj).items():
            transitions[h.key, names[phase]] = self._transition(h.key, previous, step, 0, False)
        for aid, alert in alerts.items():
            alert_rows[h.key, aid] = self._alerts.row(aid, alert, h.key, 0)

    # ------------------------------------------------------------------ merges

    def _release(self, command: Release) -> None:
        """Journey `loser` is `winner`'s: retract its rows, send its state to the winner."""
        loser = self._get(command.loser)
        expects = tuple(
            (k, at) for k, (winner, at) in sorted(self.expected.items()) if winner == command.loser
        )
        for k, _ in expects:  # they follow the loser to its winner
            self._expected(k)
        if loser is None:  # released already (a redelivered command), or forgotten
            empty = Absorb(
                self._seq + 1,
                command.loser,
                command.winner,
                command.rank,
                command.at,
                None,
                expects,
            )
            self._send(empty, command.winner)  # the winner's partition waits for nothing more
            return
        if loser.rank >= ACCOUNT_RANK:
            self._retract(loser)
        self._drop(loser)
        self.forwards[loser.key] = (command.winner, command.at)
        self._touched_links.add(_FORWARD + loser.key.encode())
        # One more than this engine's sequence: the winner's rows supersede the retraction.
        self._send(
            Absorb(
                self._seq + 1, command.loser, command.winner, command.rank, command.at, loser,
                expects,
            ),
            command.winner,
        )  # fmt: skip

    def _send(self, command: Command, key: str) -> None:
        """Carry out a command for journey `key` here, or send it to its partition: an
        absorb's archive chunks go ahead of it, one `AbsorbPart` each."""
        partition = partition_of(key, self.partitions)
        if partition == self.partition:
            self.apply(command)
            return
        if isinstance(command, Absorb) and command.holder is not None:
            holder = command.holder
            chunks = holder.archive.chunks
            for n, chunk in enumerate(chunks):
                part = AbsorbPart(command.seq, command.loser, command.winner, n, chunk)
                self.outbox.append((partition, part))
            # What travels: the small record (`to_bytes`), as the wire carries it.
            small = Holder.from_bytes(holder.to_bytes(), holder.key)
            command = replace(command, holder=small, parts=len(chunks))
        self.outbox.append((partition, command))

    def _part(self, command: AbsorbPart) -> None:
        """An archive chunk of an absorb on its way: kept until the absorb comes."""
        self._incoming.setdefault(command.loser, {})[command.number] = command.chunk
        self._touched_links.add(_INCOMING + _part_name(command.loser, command.number))

    def _take_parts(self, loser: str) -> dict[int, bytes]:
        parts = self._incoming.pop(loser, {})
        for n in parts:
            self._touched_links.add(_INCOMING + _part_name(loser, n))
        return parts

    def _absorb(self, command: Absorb) -> None:
        """Fold a released journey into its winner (once per released state)."""
        key = command.winner
        loser = command.holder
        seen = None
        if loser is not None:
            if command.parts:  # a copy: the command may be applied again (a redelivery)
                loser = Holder.from_bytes(loser.to_bytes(), loser.key)
                loser.load_chunks(self._take_parts(command.loser))
                # Whole from here on: a winner that merged on gets the chunks too.
                command = replace(command, holder=loser, parts=0)
            # A redelivery carries the same state (a partition that crashed after sending it
            # releases the same journey again); a journey released anew with other events is
            # not one: it is folded in too. Checked before following the winner: a state
            # absorbed here left with the winner, and must not reach it a second time.
            seen = f"{command.loser}{_SEPARATOR}{loser.digest()}"
            if seen in self.absorbed:
                self._expected(command.loser)
                winner = self._get(key)
                if winner is not None:
                    self._reassert(winner)
                return
        forward = self.forwards.get(key)
        if forward is not None and self._get(key) is None:
            # The winner merged on meanwhile: the state follows it.
            self._expected(command.loser)
            self._send(replace(command, winner=forward[0], seq=self._seq + 1), forward[0])
            return
        self._expected(command.loser)
        for k, at in command.expects:
            self._expect(k, key, at)
        if loser is None or seen is None:
            return
        winner = self._get(key)
        if winner is None:
            winner = self.holders[key] = Holder(key, command.rank, loser.first_seen)
            self._unforward(key)
        # Marked before its rank changes, so what it published is known. Only a loser
        # with events at or before the winner's bound makes it fold from its start.
        full = bool(loser.archive.count) or bool(loser.tail and loser.tail[0][0] <= winner.bound)
        if winner.rank < ACCOUNT_RANK <= command.rank:
            self._became_account(winner)
        self._mark(winner, full)
        if command.rank > winner.rank:
            winner.rank = command.rank
        self.absorbed[seen] = command.at
        self._touched_links.add(_ABSORBED + seen.encode())
        if full or not self._merge_tails(loser, winner):
            self._merge(loser, winner)
        # Like a late event: the correction is published at once, not when time next moves.
        self._settle(_AT_EVENT)

    def _expect(self, loser: str, winner: str, at: int) -> None:
        """`loser`'s state is on its way to `winner`: its window is kept back till then."""
        if not self._arrival(loser):  # else its absorb overtook this (a rare race)
            self.expected[loser] = (winner, at)
            self._touched_links.add(_EXPECTED + loser.encode())

    def _arrival(self, loser: str) -> bool:
        """Whether `loser`'s absorb arrived here since this engine started, or before (its
        absorbed records say so: with a store they are not in `_arrived`)."""
        if loser in self._arrived:
            return True
        return self.store is not None and bool(self.absorbed.prefixed(loser + _SEPARATOR))

    def _expected(self, loser: str) -> None:
        """`loser`'s state arrived (or moved on)."""
        self._arrived.add(loser)
        if self.expected.pop(loser, None) is not None:
            self._touched_links.add(_EXPECTED + loser.encode())

    def _reassert(self, h: Holder) -> None:
        """Publish a journey's alerts again, with this call's version: a release sent again
        withdrew them (under the same ids) with a newer version than they had."""
        if h.rank < ACCOUNT_RANK or not h.cur.alerts:
            return
        version = self._version(_AT_EVENT)
        for aid, alert in h.cur.alerts.items():
            self._out.alerts.append(self._alerts.row(aid, alert, h.key, version))

    def _merge(self, loser: Holder, winner: Holder) -> None:
        """`loser` turns out to be `winner`'s journey: their events join (one per event_id,
        the earliest time kept) and the winner is folded again from its first event (it
        is marked `FULL` already)."""
        if winner.rank >= ACCOUNT_RANK and loser.rank >= ACCOUNT_RANK and loser.archive.count:
            # The loser's alerts its retraction left (those of its base) now are the
            # winner's: a merged history without them withdraws them.
            alerts, traj = winner.was or ({}, [])
            taken = self._archived_alerts(loser)
            winner.was = ({**taken, **alerts}, traj)
            winner.foreign = (winner.foreign or set()) | (taken.keys() - alerts.keys())
        if self._merge_into(loser, winner):
            return
        best: dict[str, Entry] = {}
        for entry in (*winner.history(), *loser.history()):
            other = best.get(entry[1])
            if other is None or by_time(entry) < by_time(other):
                best[entry[1]] = entry
        first_seen = min(winner.first_seen, loser.first_seen)
        self._set_history(winner, list(best.values()), max(winner.bound, loser.bound))
        if not best:
            winner.first_seen = first_seen
        self._dirty[winner.key] = winner
        self._touched.add(winner.key)

    def _merge_into(self, loser: Holder, winner: Holder) -> bool:
        """`_merge` keeping the winner's archive (events join it, none leaves): False
        (nothing done) if one of the loser's events is an earlier copy of one archived."""
        later: dict[str, Entry] = {e[1]: e for e in winner.tail}
        for entry in (*loser.history(),):
            archived = winner.archived(entry[1])
            if archived is not None:
                if entry[0] < archived:
                    return False
                continue
            other = later.get(entry[1])
            if other is None or by_time(entry) < by_time(other):
                later[entry[1]] = entry
        entries = sorted(later.values(), key=by_time)
        bound = _capped(entries, max(winner.bound, loser.bound))
        ids = self._ids
        for ts, event_id, *_ in winner.tail:
            if ids.get(event_id) == ts:
                del ids[event_id]
        n = 0
        while n < len(entries) and entries[n][0] <= bound:
            n += 1
        winner.archive_add(entries[:n])
        winner.tail = tail = entries[n:]
        winner.bound = bound
        winner.closed = None
        for ts, event_id, *_ in tail:
            ids[event_id] = ts
        if tail:
            self._tailed[winner.key] = winner
        else:
            self._tailed.pop(winner.key, None)
        winner.events = winner.archive.count + len(tail)
        for entry in entries:
            winner.dmu |= entry[4]
        winner.first_seen = min(winner.first_seen, loser.first_seen)
        if entries and entries[0][0] < winner.first_seen:
            winner.first_seen = entries[0][0]
        self._dirty[winner.key] = winner
        self._touched.add(winner.key)
        return True

    def _merge_tails(self, loser: Holder, winner: Holder) -> bool:
        """`_merge` for a loser whose events are all later than the winner's bound: the
        tails merge and the winner is folded again from its base. False (nothing done) if
        one of them is an earlier copy of an event the winner archived."""
        kept: list[Entry] = []
        for entry in loser.tail:
            archived = winner.archived(entry[1])
            if archived is None:
                kept.append(entry)
            elif entry[0] < archived:
                self._mark(winner, True)
                return False
        best: dict[str, Entry] = {}
        for entry in (*winner.tail, *kept):
            other = best.get(entry[1])
            if other is None or by_time(entry) < by_time(other):
                best[entry[1]] = entry
        ids = self._ids
        for ts, event_id, *_ in winner.tail:
            if ids.get(event_id) == ts:
                del ids[event_id]
        tail = winner.tail = sorted(best.values(), key=by_time)
        for ts, event_id, *_ in tail:
            ids[event_id] = ts
        winner.events = winner.archive.count + len(tail)
        for entry in kept:
            winner.dmu |= entry[4]
            if entry[0] < winner.first_seen:
                winner.first_seen = entry[0]
        if tail:
            self._tailed[winner.key] = winner
        self._dirty[winner.key] = winner
        self._touched.add(winner.key)
        if len(tail) > MAX_TAIL:
            self._cap(winner)
        return True

    def _retract(self, loser: Holder) -> None:
        """Rows of an account merged away are deleted; its alerts from the window withdrawn."""
        version = self._version(_AT_MERGE)
        cur = loser.cur
        for previous, step in trajectory_rows(cur.traj).values():
            self._out.transitions.append(self._transition(loser.key, previous, step, version, True))
        if cur.traj:
            self._out.journeys.append(
                replace(self._journey_row(loser), version=version, deleted=True)
            )
        kept = loser.base.alerts or {}
        for aid, alert in (cur.alerts or {}).items():
            if aid not in kept:
                self._out.alerts.append(self._alerts.row(aid, alert, loser.key, version, True))

    # ------------------------------------------------------------------- rows

    def _transition(
        self, account: str, previous: int, step: Step, version: int, deleted: bool
    ) -> TransitionRow:
        phase, ts, event_id, type_, channel = step
        names = self._phase_names
        return TransitionRow(
            account_id=account,
            from_phase=names[previous] if previous >= 0 else None,
            to_phase=names[phase],
            transitioned_at=ts,
            event_id=event_id,
            event_type=type_,
            channel=channel,
            version=version,
            deleted=deleted,
            generation=self._generation,
        )

    def _emit_trajectory(self, h: Holder, old: list[Step], new: list[Step], version: int) -> None:
        before = trajectory_rows(old)
        after = trajectory_rows(new)
        out = self._out.transitions
        for phase, (previous, step) in after.items():
            if before.get(phase) != (previous, step):
                out.append(self._transition(h.key, previous, step, version, False))
        for phase, (previous, step) in before.items():
            if phase not in after:
                out.append(self._transition(h.key, previous, step, version, True))

    def _journey_row(self, h: Holder) -> JourneyRow:
        cur = h.cur
        rules = self.config.rules.engagement
        last = cur.traj[-1]
        return JourneyRow(
            account_id=h.key,
            phase=self._phase_names[last[0]],
            phase_since=last[1],
            first_seen=h.first_seen,
            last_seen=h.last_seen,
            last_activity=cur.act,
            events=h.events,
            contacts=h.contacts,
            dmu_roles=tuple(r for r, bit in _DMU_BITS.items() if h.dmu & bit),
            segment=cur.segment,
            version=self._version(_AT_SETTLE),
            engagement=self._logic.engagement(cur),
            engagement_at=cur.act if rules.enabled else None,
            engagement_half_life_ms=rules.half_life,
            engagement_warm=rules.warm,
            engagement_hot=rules.hot,
            generation=self._generation,
        )

    # ------------------------------------------------------------ checkpoints

    def changes(self) -> dict[bytes, bytes | None]:
        """State changed since the last call, as key-value pairs (None: delete the key).

        Holders as bounded records: the small part (`h:` key) and each archive chunk
        (`k:` key, separator, number; only the chunks that changed: an active journey
        rewrites its last one); forwards (`f:`), absorbed losers (`x:`), expected ones
        (`e:`), archive chunks of absorbs on their way in (`i:`) and the engine's meta.
        No value is larger than about 256 KiB (see `state.MAX_TAIL`, `CHUNK_EVENTS`).
        `restore` rebuilds the engine from all of them.
        """
        out: dict[bytes, bytes | None] = {}
        holders = self.holders
        gone = self._gone
        for key in self._touched:
            h = holders.get(key)
            stored = gone.pop(key, 0)
            if h is None:
                out[_HOLDER + key.encode()] = None
                for n in range(stored):
                    out[_CHUNK + _part_name(key, n)] = None
                continue
            archive = h.archive
            archive.saved = max(archive.saved, stored)
            out[_HOLDER + key.encode()] = h.to_bytes()
            for n, chunk in archive.changed():
                out[_CHUNK + _part_name(key, n)] = chunk
        for key, stored in gone.items():  # gone without a touch (not expected; kept safe)
            for n in range(stored):
                out[_CHUNK + _part_name(key, n)] = None
        self._gone = {}
        for name in self._touched_links:
            key = name[2:].decode()
            if name.startswith(_INCOMING):
                loser, _, number = key.rpartition(_SEPARATOR)
                out[name] = self._incoming.get(loser, {}).get(int(number))
            elif name.startswith(_FORWARD):
                forward = self.forwards.get(key)
                out[name] = None if forward is None else orjson.dumps(forward)
            elif name.startswith(_EXPECTED):
                expected = self.expected.get(key)
                out[name] = None if expected is None else orjson.dumps(expected)
            else:
                at = self.absorbed.get(key)
                out[name] = None if at is None else orjson.dumps(at)
                if at is not None and self.store is not None:  # its record says it now
                    self._arrived.discard(key.split(_SEPARATOR, 1)[0])
        if self._rules_touched:
            out[_RULES] = None if self.rules_text is None else self.rules_text.encode()
            self._rules_touched = False
        out[META] = orjson.dumps(self.meta())
        touched, self._touched = self._touched, set()
        self._touched_links = set()
        if self.store is not None:
            self.store.write({k: v for k, v in out.items() if k[:2] in _STORED})
            self.forwards.saved()
            self.absorbed.saved()
            self._evict(touched)
        return out

    def meta(self) -> dict[str, object]:
        """The engine's own counters and clock."""
        return {
            "clock": self.clock, "until": self._until, "seq": self._seq, "late": self.late,
            "duplicates": self.duplicates, "sweep": self._next_sweep,
            "format": STATE_FORMAT, "generation": self._generation,
        }  # fmt: skip

    @classmethod
    def restore(
        cls,
        config: EngineConfig,
        state: dict[bytes, bytes],
        partition: int = 0,
        partitions: int = 1,
        store: Store | None = None,
        capacity: int = 0,
    ) -> PartitionEngine:
        """An engine continuing from its state (`changes()` applied in order); current folds
        and timers are rebuilt. Sequences jump by `RESTART_GAP`, so rows published after the
        state was saved, by the run that stopped, are superseded by what this one publishes.
        A state a rebuild gave other rules (`journeys rebuild`) continues with those rules
        and their generation, whatever `config` names.

        The garbage collector pauses meanwhile: restoring makes millions of objects and
        frees none, so its passes over them are a third of the time (`bench_state.py`).

        With a `store` (empty: a cache of this state, never the truth), the journeys' records
        go there and at most `capacity` journeys stay in memory, besides those with work
        pending: each is read, its timers and tail noted, and let go. Forwards and absorbed
        losers go there too, and stay out of memory."""
        if store is not None:
            store.write(state)
            return cls.restore_stored(config, store, partition, partitions, capacity)
        collecting = gc.isenabled()
        gc.disable()
        try:
            return cls._restore(config, state, partition, partitions)
        finally:
            if collecting:
                gc.enable()

    @classmethod
    def restore_stored(
        cls,
        config: EngineConfig,
        store: Store,
        partition: int = 0,
        partitions: int = 1,
        capacity: int = 0,
    ) -> PartitionEngine:
        """`restore` from a state written into `store` (a new one, filled from the
        changelog a save at a time, see `Changelog.load_into`): each journey is read from it
        in turn, its timers and tail noted, and let go beyond `capacity`; forwards and
        absorbed losers stay there. The state is never whole in memory."""
        collecting = gc.isenabled()
        gc.disable()
        try:
            return cls._restore_stored(config, store, partition, partitions, capacity)
        finally:
            if collecting:
                gc.enable()

    @classmethod
    def _restore_stored(
        cls, config: EngineConfig, store: Store, partition: int, partitions: int, capacity: int
    ) -> PartitionEngine:
        text = store.get(_RULES)
        meta = orjson.loads(store.get(META) or b"{}")
        config = cls._rules_of(config, text, meta)
        engine = cls(config, partition, partitions, store, capacity)
        if config.generation and text is not None:
            engine.rules_text = text.decode()
        for name, value in store.items(_EXPECTED):
            winner, at = orjson.loads(value)
            engine.expected[name[2:].decode()] = (winner, at)
        for name, value in store.items(_INCOMING):
            owner, _, number = name[2:].decode().rpartition(_SEPARATOR)
            engine._incoming.setdefault(owner, {})[int(number)] = value
        engine._resume(meta, next(store.keys(_HOLDER), None) is not None)
        holders = engine.holders
        for name, value in store.items(_HOLDER):
            key = name[2:].decode()
            holder = holders[key] = Holder.from_bytes(value, key)
            engine._restored(holder)  # (its fold needs its archive's chunks no more than a save)
            if len(holders) > engine.capacity and not holder.pending:
                engine._park(holder)  # its chunks stay in the store until it is read back
                continue
            count = holder.archive.expected
            if count:
                found = {n: store.get(_CHUNK + _part_name(key, n)) for n in range(count)}
                holder.load_chunks({n: chunk for n, chunk in found.items() if chunk is not None})
        return engine

    @staticmethod
    def _rules_of(config: EngineConfig, text: bytes | None, meta: dict[str, Any]) -> EngineConfig:
        """The configuration a restored state continues with: a rebuild's rules (and
        generation) if it was given some, else `config`."""
        generation = int(meta.get("generation", 0))
        if text is None or not generation:
            return config
        rules = rules_from_text(text.decode(), f"generation {generation}")
        return replace(config, rules=rules, generation=generation)

    def _resume(self, meta: dict[str, Any], holders: bool) -> None:
        """The counters and clock of a restored state (refused if its layout is too old)."""
        if holders and int(meta.get("format", 1)) < STATE_FORMAT:
            raise StateFormatError(
                f"the state of journey partition {self.partition} was saved by an older version "
                "that kept no archive of events older than the dedupe window, so it cannot be "
                "continued exactly: start the workers on a new JOURNEYS_TOPIC_PREFIX and rebuild "
                "the tables with `journeys replay` of the raw input"
            )
        self.clock = int(meta.get("clock", 0))
        self._until = int(meta.get("until", self.clock))
        self._seq = int(meta.get("seq", 0)) + RESTART_GAP
        self.late = int(meta.get("late", 0))
        self.duplicates = int(meta.get("duplicates", 0))
        self._next_sweep = int(meta.get("sweep", 0))

    def _restored(self, holder: Holder) -> None:
        """A journey read from the restored state (chunks loaded): folded, its tail's ids
        in the dedupe window, its timer scheduled."""
        self._revive(holder, self._until)
        holder.wake = None
        ids = self._ids
        for ts, event_id, *_ in holder.tail:
            ids[event_id] = ts
        self._schedule(holder)

    @classmethod
    def _restore(
        cls, config: EngineConfig, state: dict[bytes, bytes], partition: int, partitions: int
    ) -> PartitionEngine:
        text = state.get(_RULES)
        meta: dict[str, Any] = orjson.loads(state.get(META, b"{}"))
        config = cls._rules_of(config, text, meta)
        engine = cls(config, partition, partitions)
        if config.generation and text is not None:
            engine.rules_text = text.decode()
        holders = engine.holders
        records: dict[str, bytes] = {}
        chunks: dict[str, dict[int, bytes]] = {}
        forwards, absorbed = engine.forwards.recent, engine.absorbed.recent
        for name, value in state.items():
            prefix, key = name[:2], name[2:].decode()
            if prefix == _HOLDER:
                records[key] = value
            elif prefix == _CHUNK or prefix == _INCOMING:
                owner, _, number = key.rpartition(_SEPARATOR)
                into = chunks if prefix == _CHUNK else engine._incoming
                into.setdefault(owner, {})[int(number)] = value
            elif prefix == _FORWARD:
                target, at = orjson.loads(value)
                forwards[key] = (target, at)
            elif prefix == _EXPECTED:
                winner, at = orjson.loads(value)
                engine.expected[key] = (winner, at)
            elif prefix == _ABSORBED:
                absorbed[key] = orjson.loads(value)
                # Its absorb arrived: an `expect` read again after a restart waits for nothing.
                engine._arrived.add(key.split(_SEPARATOR, 1)[0])
        engine._resume(meta, bool(records))
        for key, value in records.items():
            holder = holders[key] = Holder.from_bytes(value, key)
            holder.load_chunks(chunks.get(key, {}))
            engine._restored(holder)
        return engine

    # ------------------------------------------------------------ journeys out of memory

    def _revive(self, h: Holder, until: int) -> None:
        """A journey read from its records: its current fold rebuilt (deadlines before
        `until` fired, as they were when it was saved), its pending work and tail noted."""
        key = h.key
        if h.pending:  # its published state was stored; folded when time moves
            self._pending[key] = h
        elif h.rank < ACCOUNT_RANK:
            if h.tail:
                h.cur = self._logic.fold(h.base.copy(), h.tail, None, until)
        elif h.tail or _due_before(self._alerts.next_deadline(h.base), until):
            h.cur = self._logic.fold(h.base.copy(), h.tail, key, until)
        # else nothing to fold and nothing due: `cur` stays `base` (shared until changed)
        if h.tail:
            self._tailed[key] = h

    def _get(self, key: str) -> Holder | None:
        """Journey `key`, read back from the store if it is out of memory; None if none."""
        h = self.holders.get(key)
        if h is None and self.store is not None and key not in self._touched:
            h = self._load(key)  # (touched and not in memory: it went since the last save)
        return h

    def _load(self, key: str) -> Holder | None:
        """Journey `key` read back from its records, as it was when it left memory.

        Its deadlines fired up to the clock when it left, and none came due since (the timer
        it left in `_wakes` reads it back when one does): its current fold is its base
        folded over its tail up to the clock, or up to that deadline when it is the timer
        that reads it."""
        store = self.store
        assert store is not None
        name = key.encode()
        data = store.get(_HOLDER + name)
        if data is None:
            return None
        h = Holder.from_bytes(data, key)
        count = h.archive.expected
        if count:
            chunks = {n: store.get(_CHUNK + _part_name(key, n)) for n in range(count)}
            h.load_chunks({n: chunk for n, chunk in chunks.items() if chunk is not None})
        wake = self._parked.pop(key, None)
        self._cold_tails.pop(key, None)
        self._revive(h, self._until if wake is None else min(self._until, wake))
        h.wake = wake
        ids = self._ids
        for entry in h.tail:
            ids.setdefault(entry[1], entry[0])
        self.holders[key] = h
        self.loads += 1
        return h

    def _load_all(self) -> None:
        """Every journey in memory (a rebuild folds them all)."""
        if self.store is None:
            return
        holders = self.holders
        for name in self.store.keys(_HOLDER):
            key = name[len(_HOLDER) :].decode()
            if key not in holders and key not in self._touched:
                self._load(key)

    def _park(self, h: Holder) -> None:
        """Let a saved journey with no work pending go from memory (its records stay in the
        store): what the engine needs of it meanwhile (its timer, its tail's times) stays."""
        key = h.key
        del self.holders[key]
        if h.wake is not None:
            self._parked[key] = h.wake
        tail = h.tail
        if tail:
            del self._tailed[key]
            self._cold_tails[key] = (tail[0][0], tail[-1][0], len(tail))
            ids, fps = self._ids, self._fps
            for entry in tail:
                fps.pop(entry[1], None)
                if ids.get(entry[1]) == entry[0]:
                    del ids[entry[1]]

    def _evict(self, touched: set[str]) -> None:
        """After a save: journeys used in it count as used last; beyond `capacity`, those
        used longest ago with no work pending leave memory."""
        live = self.holders
        for key in touched:
            h = live.pop(key, None)
            if h is not None:
                live[key] = h
        excess = len(live) - self.capacity
        if excess <= 0:
            return
        pending, dirty, run = self._pending, self._dirty, self._run
        victims: list[Holder] = []
        for key, h in live.items():
            if len(victims) >= excess:
                break
            if h.pending or h.was is not None or key in pending or key in dirty or key == run:
                continue
            victims.append(h)
        for h in victims:
            self._park(h)
