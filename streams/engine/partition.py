"""The journey stage of one partition: routed commands in, in any order, journey rows out. Pure.

No Kafka, no ClickHouse, no wall clock: time is the events' own. Identity is
decided upstream (`router.IdentityRouter`, the one owner of the identity
graph), which tells each partition what to do with `commands`:

- `Route`: an event belongs to journey `key` (of rank `rank`, with `contacts`
  contacts). A redelivery (an event_id seen within the window) is dropped,
  unless it is earlier than the copy applied: then the event moves to the
  earlier time. Otherwise the event joins its journey's tail; if it comes
  after everything the journey holds, it is applied at once (`Phases.step`),
  else the journey is marked and, once per batch (`take`, `advance_to`, or
  when one of its deadlines is due), folded again from its base and its sorted
  tail; the engine publishes the difference: changed and deleted
  transitions, alerts raised, moved or withdrawn, a new journey row.
- `Release`: journey `loser` turned out to be `winner`'s. Its rows are
  retracted here and its state leaves as an `Absorb` for the winner's
  partition (`outbox`); a forward stays for absorbs still on their way to it.
- `Absorb`: fold a released journey into its winner, retroactively, with the
  same merge late events use; every rule being order-free, it may come before
  or after the winner's later events. The same released state is absorbed once.
- `Forget`, `Contacts`, `Advance`: a visitor's state goes; a journey's
  contact count; event time moves (deadlines before it fire).

Row versions are Lamport clocks: each command carries the sender's sequence
and the engine continues from the larger of its own and that, so a row
published after a merge supersedes what the merged journey's partition
published before it, whichever partition that was.

Events older than the window (`EngineConfig.window`, the setting
`dedupe_window`) are applied as far as their order-free parts allow (counts,
roles, the trajectory's earliest steps) and are not deduplicated.
"""

from __future__ import annotations

import hashlib
import heapq
from bisect import insort
from collections.abc import Iterable
from dataclasses import dataclass, replace

import orjson

from journeys.schemas.record import DMU_ROLES, EventRecord
from journeys.schemas.rows import JourneyRow, Output, StoredEvent, TransitionRow
from journeys.streams.engine.alerts import Alerts
from journeys.streams.engine.commands import (
    Absorb,
    Advance,
    Command,
    Contacts,
    Expect,
    Forget,
    Release,
    Route,
    partition_of,
)
from journeys.streams.engine.phases import Phases
from journeys.streams.engine.rules import Rules, load_rules
from journeys.streams.engine.state import (
    ACCOUNT_RANK,
    CART_ABANDONED,
    DEAL_STALLED,
    Entry,
    Fold,
    Holder,
    Step,
    trajectory_rows,
)

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
# State keys (see `changes`): holders, forwards, absorbed losers, the engine's meta.
_HOLDER, _FORWARD, _ABSORBED, _EXPECTED, META = b"h:", b"f:", b"x:", b"e:", b"m:engine"
_SEPARATOR = "\x1f"


@dataclass(frozen=True)
class EngineConfig:
    """Everything that shapes the engine's answers; durations in milliseconds."""

    rules: Rules
    cart_abandon_after: int = 4 * 3_600_000
    deal_stall_after: int = 14 * 86_400_000
    visitor_ttl: int = 90 * 86_400_000
    #: How far behind event time an event may come and still be placed exactly, and how
    #: long event_ids are remembered for dedupe.
    window: int = 3 * 86_400_000
    #: A loyal account's next order is due after its usual interval times this.
    reorder_factor: float = 1.5

    @classmethod
    def default(cls) -> EngineConfig:
        """The contract's defaults."""
        return cls(rules=load_rules())


class PartitionEngine:
    """The journeys of one partition: transitions and alerts in event time.

    `apply(command)` carries out one command; `take()` hands over everything
    produced since the last call, with a journey row of every account that
    changed; `outbox` holds the absorbs this partition sends to others, as
    (partition, command) pairs. `changes()` and `restore()` are its state as
    key-value pairs, for a changelog.
    """

    def __init__(self, config: EngineConfig | None = None, partition: int = 0, partitions: int = 1):
        self.config = config or EngineConfig.default()
        self.partition = partition
        self.partitions = partitions
        rules = self.config.rules
        self._phase_names = rules.phases
        self._alerts = Alerts(
            rules,
            self.config.cart_abandon_after,
            self.config.deal_stall_after,
            self.config.reorder_factor,
        )
        self._logic = Phases(rules, self._alerts)
        self.holders: dict[str, Holder] = {}
        #: Journeys released from here -> the journey they went to, and when (for absorbs
        #: still on their way). Kept for good: however far event time runs ahead of an
        #: absorb (a backlog moves it days in seconds), the absorb still finds its way.
        self.forwards: dict[str, tuple[str, int]] = {}
        #: Losers absorbed here, with a digest of the state absorbed -> event time of the
        #: merge (the same state absorbed again is a redelivery).
        self.absorbed: dict[str, int] = {}
        #: Losers whose state is on its way here -> (winner, event time of the merge).
        self.expected: dict[str, tuple[str, int]] = {}
        #: Losers whose absorb arrived since this engine started.
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
        #: event_id -> time of every event in a tail (the dedupe window).
        self._ids: dict[str, int] = {}
        self._pending: dict[str, Holder] = {}
        #: Journeys with a tail, and when event time next looks for tails to fold.
        self._tailed: dict[str, Holder] = {}
        self._next_sweep = 0
        self._dirty: dict[str, Holder] = {}
        self._changed: list[str] = []
        self._kinds = self._logic.by_name
        self._step = self._logic.step
        self._out = Output()
        #: State keys changed since the last `changes()`.
        self._touched: set[str] = set()
        self._touched_links: set[bytes] = set()

    @property
    def seq(self) -> int:
        """The engine's Lamport sequence."""
        return self._seq

    # ------------------------------------------------------------------ input

    def apply(self, command: Command) -> None:
        """Carry out one command (see the module docstring)."""
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
            h = self.holders.get(command.key)
            if h is not None and h.contacts != command.contacts:
                h.contacts = command.contacts
                self._dirty[h.key] = h
                self._touched.add(h.key)
        elif isinstance(command, Forget):
            h = self.holders.get(command.key)
            if h is not None:
                self._forget(h)

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
                self._settle(_AT_EVENT)
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

        Nothing is computed here: what is published, and with which versions, depends
        only on the commands that fed the engine, not on when it was taken.
        """
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
        h = self.holders.get(key)
        if h is None:
            h = self.holders[key] = Holder(key, rank, ts)
            h.contacts = contacts
            self._touched.add(key)
            self.forwards.pop(key, None)
            return h
        if rank > h.rank:
            h.rank = rank
            self._mark(h)
        if contacts != h.contacts:
            h.contacts = contacts
            self._dirty[key] = h
            self._touched.add(key)
        return h

    # ------------------------------------------------------------------ events

    def _ingest(self, event: EventRecord, late: bool, command: Route) -> None:
        """Dedupe, and add one event to its journey (applied at once if in order)."""
        event_id, ts = event.event_id, event.ts
        ids = self._ids
        known = ids.get(event_id)
        if known is not None and ts >= known:
            self.duplicates += 1
            h = self.holders.get(command.key)
            if h is not None:
                self._holder(command.key, command.rank, command.contacts, ts)
            return
        h = self._holder(command.key, command.rank, command.contacts, ts)
        kinds = self._kinds.get(event.channel)
        kind = kinds.get(event.type) if kinds is not None else None
        if kind is None:
            kind = self._logic.kind(event.channel, event.type)
        key = h.key
        account = key if h.rank >= ACCOUNT_RANK else None
        events = self._out.events
        events.append(StoredEvent(event, account, late))
        if known is not None:
            self.duplicates += 1
            if not self._move_earlier(h, (ts, event_id, kind.code, event.segment), known):
                events.pop()
            return
        # Order-free aggregates.
        h.events += 1
        if ts < h.first_seen:
            h.first_seen = ts
        if event.dmu_role:
            h.dmu |= _DMU_BITS[event.dmu_role]
        self._dirty[key] = h
        self._touched.add(key)
        segment = event.segment
        entry = (ts, event_id, kind.code, segment)
        if ts <= h.bound:  # older than the window: as far as order allows
            self._logic.insert_old(self._own_base(h), entry)
            self._mark(h)
            return
        ids[event_id] = ts
        tail = h.tail
        cur = h.cur
        if tail:
            last = tail[-1]
            in_order = ts > last[0] or (ts == last[0] and event_id > last[1])
        else:
            self._tailed[key] = h
            in_order = True
        if not in_order or h.pending or (cur.fired is not None and ts <= cur.fired):
            insort(tail, entry)
            self._mark(h)
            return
        # In order: extend the current fold.
        tail.append(entry)
        if cur is h.base:
            cur = h.cur = cur.copy()
        if account is None:
            self._step(cur, ts, event_id, kind, segment, None)
            return
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
        for i, old in enumerate(tail):
            if old[1] == event_id and old[0] == known:
                del tail[i]
                break
        else:
            return False
        self._ids[event_id] = ts
        if ts < h.first_seen:
            h.first_seen = ts
        if ts <= h.bound:
            self._logic.insert_old(self._own_base(h), entry)
        else:
            insort(tail, entry)
            self._tailed[h.key] = h
        self._mark(h)
        self._dirty[h.key] = h
        self._touched.add(h.key)
        return True

    @staticmethod
    def _own_base(h: Holder) -> Fold:
        """The base, no longer shared with `cur`, to change it."""
        if h.cur is h.base:
            h.base = h.base.copy()
        return h.base

    def _mark(self, h: Holder) -> None:
        """The journey is folded again when event time next moves."""
        if not h.pending:
            h.pending = True
            self._pending[h.key] = h

    # ------------------------------------------------------------------ folding

    def _settle(self, stage: int) -> None:
        """Fold every marked journey again and publish the differences."""
        pending, self._pending = self._pending, {}
        for key in sorted(pending):
            holder = pending[key]
            if holder.pending and self.holders.get(key) is holder:
                self._refold(holder, stage)

    def _refold(self, h: Holder, stage: int) -> None:
        old = h.cur
        account = h.key if h.rank >= ACCOUNT_RANK else None
        new = self._logic.fold(h.base.copy(), h.tail, account, self._until)
        h.cur = new
        h.pending = False
        self._pending.pop(h.key, None)
        if account is not None:
            version = self._version(stage)
            self._emit_trajectory(h, old.traj, new.traj, version)
            for aid, alert, withdrawn in self._alerts.diff(old.alerts, new.alerts):
                self._out.alerts.append(self._alerts.row(aid, alert, h.key, version, withdrawn))
        self._dirty[h.key] = h
        self._touched.add(h.key)
        self._schedule(h)

    def _roll(self, h: Holder, bound: int) -> None:
        """Fold tail events at or before `bound` into the base: they leave the window."""
        if bound <= h.bound:
            return
        tail = h.tail
        n = 0
        while n < len(tail) and tail[n][0] <= bound:
            n += 1
        account = h.key if h.rank >= ACCOUNT_RANK else None
        cur = h.cur
        if n == len(tail) and not h.pending and (cur.fired is None or cur.fired <= bound):
            h.base = cur  # nothing happened after the bound: the current fold is the base
        elif n:
            self._logic.fold(self._own_base(h), tail[:n], account, bound + 1)
        elif account is not None and h.base is not cur:
            self._alerts.fire(h.base, bound + 1, None)
        ids = self._ids
        for entry in tail[:n]:
            if ids.get(entry[1]) == entry[0]:
                del ids[entry[1]]
        h.tail = tail[n:]
        if not h.tail:
            self._tailed.pop(h.key, None)
        h.bound = bound
        Alerts.prune(h.base, bound)
        Alerts.prune(h.cur, bound)
        if self.holders.get(h.key) is h:  # not a journey on its way in (see `_merge`)
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
            h = self.holders.get(key)
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
        for h in list(self._tailed.values()):
            tail = h.tail
            if tail[-1][0] <= horizon or (tail[0][0] <= horizon and len(tail) > _KEEP):
                self._roll(h, horizon)
        self._next_sweep = self._until + self._slack

    def _forget(self, h: Holder) -> None:
        """A visitor the router forgot (not seen for `visitor_ttl`): its state goes."""
        del self.holders[h.key]
        self._pending.pop(h.key, None)
        self._tailed.pop(h.key, None)
        self._dirty.pop(h.key, None)
        self._touched.add(h.key)
        for ts, event_id, *_ in h.tail:
            if self._ids.get(event_id) == ts:
                del self._ids[event_id]

    # ------------------------------------------------------------------ merges

    def _release(self, command: Release) -> None:
        """Journey `loser` is `winner`'s: retract its rows, send its state to the winner."""
        loser = self.holders.get(command.loser)
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
            self._send(empty)  # the winner's partition waits for nothing more
            return
        if loser.rank >= ACCOUNT_RANK:
            self._retract(loser)
        del self.holders[loser.key]
        self._pending.pop(loser.key, None)
        self._tailed.pop(loser.key, None)
        self._dirty.pop(loser.key, None)
        self._touched.add(loser.key)
        ids = self._ids
        for ts, event_id, *_ in loser.tail:
            if ids.get(event_id) == ts:
                del ids[event_id]
        self.forwards[loser.key] = (command.winner, command.at)
        self._touched_links.add(_FORWARD + loser.key.encode())
        # One more than this engine's sequence: the winner's rows supersede the retraction.
        self._send(
            Absorb(
                self._seq + 1, command.loser, command.winner, command.rank, command.at, loser,
                expects,
            )
        )  # fmt: skip

    def _send(self, command: Absorb) -> None:
        partition = partition_of(command.winner, self.partitions)
        if partition == self.partition:
            self.apply(command)
        else:
            self.outbox.append((partition, command))

    def _absorb(self, command: Absorb) -> None:
        """Fold a released journey into its winner (once per released state)."""
        key = command.winner
        loser = command.holder
        seen = None
        if loser is not None:
            # A redelivery carries the same state (a partition that crashed after sending it
            # releases the same journey again); a journey released anew with other events is
            # not one: it is folded in too. Checked before following the winner: a state
            # absorbed here left with the winner, and must not reach it a second time.
            digest = hashlib.blake2b(loser.to_bytes(), digest_size=8).hexdigest()
            seen = f"{command.loser}{_SEPARATOR}{digest}"
            if seen in self.absorbed:
                self._expected(command.loser)
                winner = self.holders.get(key)
                if winner is not None:
                    self._reassert(winner)
                return
        forward = self.forwards.get(key)
        if forward is not None and key not in self.holders:
            # The winner merged on meanwhile: the state follows it.
            self._expected(command.loser)
            self._send(replace(command, winner=forward[0], seq=self._seq + 1))
            return
        self._expected(command.loser)
        for k, at in command.expects:
            self._expect(k, key, at)
        if loser is None or seen is None:
            return
        winner = self.holders.get(key)
        if winner is None:
            winner = self.holders[key] = Holder(key, command.rank, loser.first_seen)
        elif command.rank > winner.rank:
            winner.rank = command.rank
        self.absorbed[seen] = command.at
        self._touched_links.add(_ABSORBED + seen.encode())
        if not loser.pending:  # as read from its bytes, `cur` is the base: fold the tail
            account = loser.key if loser.rank >= ACCOUNT_RANK else None
            loser.cur = self._logic.fold(loser.base.copy(), loser.tail, account, self._until)
        self._merge(loser, winner)
        # Like a late event: the correction is published at once, not when time next moves.
        self._settle(_AT_EVENT)

    def _expect(self, loser: str, winner: str, at: int) -> None:
        """`loser`'s state is on its way to `winner`: its window is kept back till then."""
        if loser not in self._arrived:  # else its absorb overtook this (a rare race)
            self.expected[loser] = (winner, at)
            self._touched_links.add(_EXPECTED + loser.encode())

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
        """`loser` turns out to be `winner`'s journey: fold it in, retroactively."""
        bound = max(loser.bound, winner.bound)
        self._roll(loser, bound)
        self._roll(winner, bound)
        winner.base = self._logic.merge(winner.base, loser.base)
        if loser.tail:
            winner.tail = self._merge_tails(winner, loser)
            self._tailed[winner.key] = winner
        winner.first_seen = min(winner.first_seen, loser.first_seen)
        winner.events += loser.events
        winner.dmu |= loser.dmu
        self._dirty[winner.key] = winner
        self._touched.add(winner.key)
        self._mark(winner)

    def _merge_tails(self, winner: Holder, loser: Holder) -> list[Entry]:
        merged: list[Entry] = []
        seen: dict[str, int] = {}
        for entry in heapq.merge(winner.tail, loser.tail):
            if entry[1] in seen:  # one event applied to both (identity learnt in between)
                winner.events -= 1
                continue
            seen[entry[1]] = entry[0]
            merged.append(entry)
        self._ids.update(seen)
        return merged

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
        )

    # ------------------------------------------------------------ checkpoints

    def changes(self) -> dict[bytes, bytes | None]:
        """State changed since the last call, as key-value pairs (None: delete the key).

        Holders (`h:`), forwards (`f:`), absorbed losers (`x:`) and the engine's meta;
        `restore` rebuilds the engine from all of them.
        """
        out: dict[bytes, bytes | None] = {}
        holders = self.holders
        for key in self._touched:
            h = holders.get(key)
            out[_HOLDER + key.encode()] = None if h is None else h.to_bytes()
        for name in self._touched_links:
            key = name[2:].decode()
            if name.startswith(_FORWARD):
                forward = self.forwards.get(key)
                out[name] = None if forward is None else orjson.dumps(forward)
            elif name.startswith(_EXPECTED):
                expected = self.expected.get(key)
                out[name] = None if expected is None else orjson.dumps(expected)
            else:
                at = self.absorbed.get(key)
                out[name] = None if at is None else orjson.dumps(at)
        out[META] = orjson.dumps(self.meta())
        self._touched = set()
        self._touched_links = set()
        return out

    def meta(self) -> dict[str, object]:
        """The engine's own counters and clock."""
        return {
            "clock": self.clock, "until": self._until, "seq": self._seq, "late": self.late,
            "duplicates": self.duplicates, "sweep": self._next_sweep,
        }  # fmt: skip

    @classmethod
    def restore(
        cls,
        config: EngineConfig,
        state: dict[bytes, bytes],
        partition: int = 0,
        partitions: int = 1,
    ) -> PartitionEngine:
        """An engine continuing from its state (`changes()` applied in order); current folds
        and timers are rebuilt. Sequences jump by `RESTART_GAP`, so rows published after the
        state was saved, by the run that stopped, are superseded by what this one publishes."""
        engine = cls(config, partition, partitions)
        meta: dict[str, int] = {}
        holders = engine.holders
        for name, value in state.items():
            prefix, key = name[:2], name[2:].decode()
            if prefix == _HOLDER:
                holders[key] = Holder.from_bytes(value, key)
            elif prefix == _FORWARD:
                target, at = orjson.loads(value)
                engine.forwards[key] = (target, at)
            elif prefix == _EXPECTED:
                winner, at = orjson.loads(value)
                engine.expected[key] = (winner, at)
            elif prefix == _ABSORBED:
                engine.absorbed[key] = orjson.loads(value)
                # Its absorb arrived: an `expect` read again after a restart waits for nothing.
                engine._arrived.add(key.split(_SEPARATOR, 1)[0])
            elif name == META:
                meta = orjson.loads(value)
        engine.clock = int(meta.get("clock", 0))
        engine._until = int(meta.get("until", engine.clock))
        engine._seq = int(meta.get("seq", 0)) + RESTART_GAP
        engine.late = int(meta.get("late", 0))
        engine.duplicates = int(meta.get("duplicates", 0))
        engine._next_sweep = int(meta.get("sweep", 0))
        for key, holder in holders.items():
            if holder.pending:  # its published state was stored; folded when time moves
                engine._pending[key] = holder
            else:
                account = key if holder.rank >= ACCOUNT_RANK else None
                holder.cur = engine._logic.fold(
                    holder.base.copy(), holder.tail, account, engine._until
                )
            holder.wake = None
            for ts, event_id, *_ in holder.tail:
                engine._ids[event_id] = ts
            if holder.tail:
                engine._tailed[key] = holder
            engine._schedule(holder)
        return engine
