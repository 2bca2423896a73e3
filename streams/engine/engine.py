"""The journey engine: events in, in any order, journey rows out. Pure.

No Kafka, no ClickHouse, no wall clock: time is the events' own. Every rule
is a function of an account's set of events (see `phases` and `alerts`), so
the order events arrive in changes nothing but when rows are published:
`journeys replay` of sorted input and a stream with late, redelivered and
out-of-order events end with the same tables.

What happens to one event:
1. A redelivery (an event_id seen within the window) is dropped, unless it is
   earlier than the copy applied: then the event moves to the earlier time.
2. Identity (`identity.Identity.decide`): the journey it belongs to; journeys
   found to be one merge, aliases are linked.
3. The event joins its journey's tail. If it comes after everything the
   journey holds, it is applied at once (`Phases.step`). Otherwise the
   journey is marked and, once per batch (`take`, `advance_to`, or when one
   of its deadlines is due), folded again from its base and its sorted tail;
   the engine publishes the difference: changed and deleted transitions,
   alerts raised, moved or withdrawn, a new journey row.
4. Event time (`clock`) advances with `process` and `advance_to`; deadlines
   before it fire: alerts, folding old tail events into the base, forgetting
   visitors.

Events older than the window (`EngineConfig.window`, the setting
`dedupe_window`) are applied as far as their order-free parts allow (counts,
roles, links, the trajectory's earliest steps) and are not deduplicated.
"""

from __future__ import annotations

import heapq
from bisect import insort
from collections.abc import Iterable
from dataclasses import dataclass, replace

from journeys.schemas.record import DMU_ROLES, EventRecord
from journeys.schemas.rows import (
    IdentityLink,
    JourneyRow,
    Output,
    StoredEvent,
    TransitionRow,
)
from journeys.streams.engine.alerts import Alerts
from journeys.streams.engine.identity import (
    ALIAS_KINDS,
    Decision,
    Identity,
    link_of,
    link_value,
)
from journeys.streams.engine.phases import Phases
from journeys.streams.engine.rules import Rules, load_rules
from journeys.streams.engine.state import (
    ACCOUNT_RANK,
    CART_ABANDONED,
    DEAL_STALLED,
    MAX_VISITOR_ALIASES,
    Entry,
    Fold,
    Holder,
    Step,
    trajectory_rows,
)

__all__ = ["CART_ABANDONED", "DEAL_STALLED", "EngineChanges", "EngineConfig", "JourneyEngine"]

_DMU_BITS = {role: 1 << i for i, role in enumerate(DMU_ROLES)}
# Stages of one call, in the order they publish (see `JourneyEngine._version`).
_AT_SETTLE, _AT_WAKE, _AT_MERGE, _AT_EVENT = 0, 1, 2, 3
#: A journey still active keeps up to this many tail events that left the window.
_KEEP = 8
#: How far row versions jump when an engine is restored from a checkpoint.
_RESTART_GAP = 2**32


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


@dataclass
class EngineChanges:
    """An incremental checkpoint: None values are deletions."""

    holders: dict[str, Holder | None]
    aliases: dict[str, str | None]
    redirects: dict[str, str]
    meta: dict[str, object]


class JourneyEngine:
    """Stitches events into per-account journeys, transitions and alerts.

    `process` applies an event and advances event time to it; `process_late`
    applies one without moving event time (it came after its time was
    passed). `advance_to(ts)` says nothing more is expected before `ts`, so
    alerts due by then are raised. `take()` hands over everything produced
    since the last call, with a journey row of every account that changed.
    """

    def __init__(self, config: EngineConfig | None = None) -> None:
        self.config = config or EngineConfig.default()
        rules = self.config.rules
        self._phase_names = rules.phases
        self._alerts = Alerts(
            rules,
            self.config.cart_abandon_after,
            self.config.deal_stall_after,
            self.config.reorder_factor,
        )
        self._logic = Phases(rules, self._alerts)
        self.identity = Identity()
        self.holders: dict[str, Holder] = {}
        #: Event time: the latest event time processed or advanced to.
        self.clock = 0
        #: Deadlines before this have fired (the clock, or just past it after `advance_to`).
        self._until = 0
        self.late = 0
        self.duplicates = 0
        #: Calls that fed or advanced the engine: what row versions are made of.
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
        #: What changed since the last `changes()`, for incremental checkpoints.
        self._touched: set[str] = set()

    @property
    def aliases(self) -> dict[str, str]:
        """alias key ("a:…", "c:…", "e:…") -> journey key."""
        return self.identity.aliases

    @property
    def redirects(self) -> dict[str, str]:
        """account key merged away -> the account it merged into."""
        return self.identity.redirects

    # ------------------------------------------------------------------ input

    def process(self, event: EventRecord) -> None:
        """Apply one event and advance event time to it (events before it may still come)."""
        self._seq += 1
        ts = event.ts
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
            self._ingest(event, False)
        elif ts < self.clock:
            self.late += 1
            self._ingest(event, True)
            if self._pending:
                self._settle(_AT_EVENT)
        else:
            self._ingest(event, False)

    def process_all(self, events: Iterable[EventRecord]) -> None:
        """Apply many events."""
        for event in events:
            self.process(event)

    def process_late(self, event: EventRecord) -> None:
        """Apply an event that came after event time passed it; event time stays.

        Its journey's corrections are published at once.
        """
        self._seq += 1
        self.late += 1
        self._ingest(event, True)
        if self._pending:
            self._settle(_AT_EVENT)

    def process_late_batch(self, events: Iterable[EventRecord]) -> None:
        """`process_late` for many events, each journey folded again once at the end."""
        for event in events:
            self._seq += 1
            self.late += 1
            self._ingest(event, True)
        if self._pending:
            self._settle(_AT_EVENT)

    def advance_to(self, ts: int) -> None:
        """Event time reached `ts` with nothing more before it: raise what is due by then."""
        self._seq += 1
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
        only on the calls that fed the engine, not on when it was taken (a journey merged
        by an event in order is folded again when event time next moves; a late event's
        journey at once).
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

    # ------------------------------------------------------------------ events

    def _ingest(self, event: EventRecord, late: bool) -> None:
        """Dedupe, resolve, and add one event to its journey (applied at once if in order)."""
        event_id, ts = event.event_id, event.ts
        ids = self._ids
        known = ids.get(event_id)
        if known is not None and ts >= known:
            self.duplicates += 1
            return
        holders = self.holders
        key = None if late else self.identity.known(event, holders)
        if key is None:
            h = self._resolve(event)
        else:
            h = holders[key]
            # Earlier than the journey's latest event: it may link an alias earlier.
            latest = h.tail[-1][0] if h.tail else h.cur.seen
            if latest is not None and ts < latest:
                h = self._resolve(event)
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
        self._touched.add(h.key)

    # ------------------------------------------------------------------ timers

    def _next_wake(self, h: Holder) -> int | None:
        if h.rank >= ACCOUNT_RANK:
            return self._alerts.next_deadline(h.cur)
        return h.last_seen + self.config.visitor_ttl

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
            if h.rank < ACCOUNT_RANK and h.last_seen + self.config.visitor_ttl < until:
                self._forget(h)
                continue
            self._schedule(h)

    def _sweep(self) -> None:
        """Fold tail events that left the window into their bases (every `_slack` of time).

        A journey whose whole tail left the window takes its current fold as base, at no
        cost. One still active keeps its old events until its tail is longer than
        `_KEEP`: folding them in means applying them again, so it is done in batches.
        """
        horizon = self._until - 1 - self._window
        for h in list(self._tailed.values()):
            tail = h.tail
            if tail[-1][0] <= horizon or (tail[0][0] <= horizon and len(tail) > _KEEP):
                self._roll(h, horizon)
        self._next_sweep = self._until + self._slack

    def _forget(self, h: Holder) -> None:
        """A visitor not seen for `visitor_ttl`: its state and aliases go."""
        del self.holders[h.key]
        self._pending.pop(h.key, None)
        self._tailed.pop(h.key, None)
        self._dirty.pop(h.key, None)
        self._touched.add(h.key)
        identity = self.identity
        for alias in h.aliases or ():
            if identity.aliases.get(alias) == h.key:
                del identity.aliases[alias]
                identity.linked.pop(alias, None)
                identity.touched_aliases.add(alias)
        for ts, event_id, *_ in h.tail:
            if self._ids.get(event_id) == ts:
                del self._ids[event_id]

    # ------------------------------------------------------------------ identity

    def _resolve(self, event: EventRecord) -> Holder:
        return self._carry_out(self.identity.decide(event, self.holders), event)

    def _carry_out(self, d: Decision, event: EventRecord) -> Holder:
        holders = self.holders
        winner = holders.get(d.winner)
        if winner is None:
            winner = holders[d.winner] = Holder(d.winner, d.rank, event.ts)
            self._touched.add(d.winner)
            if d.rank < ACCOUNT_RANK:
                winner.aliases = []
                self._schedule(winner)  # forgotten after visitor_ttl without events
        elif d.upgrade and winner.rank < d.rank:
            winner.rank = d.rank
            self._mark(winner)
        for key in d.losers:
            loser = holders.get(key)
            if loser is not None and loser is not winner:
                self._merge(loser, winner, d.at)
        if d.redirect is not None:
            self._redirect(d.redirect, winner.key, d.at)
        for alias in d.link:
            self._link(alias, winner, d.at, new=True)
        for alias, previous in d.relink:
            self._relink(alias, holders.get(previous), winner, d.at)
        for alias in d.earlier:
            self.identity.linked[alias] = d.at
            self.identity.touched_aliases.add(alias)
            self._out.links.append(IdentityLink(ALIAS_KINDS[alias[0]], alias[2:], winner.key, d.at))
        return winner

    def _link(self, alias: str, holder: Holder, ts: int, new: bool) -> None:
        identity = self.identity
        identity.aliases[alias] = holder.key
        identity.touched_aliases.add(alias)
        if new and alias[0] == "c":
            holder.contacts += 1
            self._touched.add(holder.key)
        if holder.rank >= ACCOUNT_RANK:
            identity.linked[alias] = ts
            self._out.links.append(IdentityLink(ALIAS_KINDS[alias[0]], alias[2:], holder.key, ts))
        elif holder.aliases is not None and len(holder.aliases) < MAX_VISITOR_ALIASES:
            holder.aliases.append(alias)

    def _relink(self, alias: str, previous: Holder | None, winner: Holder, ts: int) -> None:
        """An alias linked to another account later in event time than this event: it moves."""
        if previous is not None and alias[0] == "c":
            previous.contacts -= 1
            self._dirty[previous.key] = previous
            self._touched.add(previous.key)
        self._link(alias, winner, ts, new=True)

    def _redirect(self, key: str, target: str, ts: int) -> None:
        self.identity.redirects[key] = target
        self.identity.touched_redirects.add(key)
        self._out.links.append(IdentityLink("account", key, target, ts))

    def _merge(self, loser: Holder, winner: Holder, ts: int) -> None:
        """`loser` turns out to be `winner`'s journey: fold it in, retroactively."""
        bound = max(loser.bound, winner.bound)
        self._roll(loser, bound)
        self._roll(winner, bound)
        if loser.rank >= ACCOUNT_RANK:
            self._retract(loser, winner)
        winner.base = self._logic.merge(winner.base, loser.base)
        if loser.tail:
            winner.tail = self._merge_tails(winner, loser)
            self._tailed[winner.key] = winner
        winner.first_seen = min(winner.first_seen, loser.first_seen)
        winner.events += loser.events
        winner.contacts += loser.contacts
        winner.dmu |= loser.dmu
        del self.holders[loser.key]
        self._pending.pop(loser.key, None)
        self._tailed.pop(loser.key, None)
        self._dirty.pop(loser.key, None)
        self._touched.add(loser.key)
        if loser.rank >= ACCOUNT_RANK:
            self._redirect(loser.key, winner.key, ts)
        for alias in loser.aliases or ():
            if self.identity.aliases.get(alias) == loser.key:
                self._link(alias, winner, ts, new=False)
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
        return merged

    def _retract(self, loser: Holder, winner: Holder) -> None:
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
        )

    # ------------------------------------------------------------ checkpoints

    def changes(self) -> EngineChanges:
        """What changed since the last call: holders, aliases and redirects to write or delete."""
        identity = self.identity
        aliases: dict[str, str | None] = {}
        for alias in identity.touched_aliases:
            key = identity.aliases.get(alias)
            at = identity.linked.get(alias)
            aliases[alias] = None if key is None else link_value(alias, key, at)
        changes = EngineChanges(
            holders={k: self.holders.get(k) for k in self._touched},
            aliases=aliases,
            redirects={k: identity.redirects[k] for k in identity.touched_redirects},
            meta=self.meta(),
        )
        self._touched = set()
        identity.touched_aliases, identity.touched_redirects = set(), set()
        return changes

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
        holders: dict[str, Holder],
        aliases: dict[str, str],
        redirects: dict[str, str],
        meta: dict[str, object],
    ) -> JourneyEngine:
        """An engine continuing from a checkpoint; current folds and timers are rebuilt."""
        engine = cls(config)
        identity = engine.identity
        for alias, value in aliases.items():
            key, at = link_of(alias, value)
            identity.aliases[alias] = key
            if at is not None:
                identity.linked[alias] = at
        identity.redirects = dict(redirects)
        engine.holders = holders
        engine.clock = int(meta.get("clock", 0))  # type: ignore[call-overload]
        engine._until = int(meta.get("until", engine.clock))  # type: ignore[call-overload]
        # Rows published after the checkpoint by the run that stopped are superseded by
        # what this one publishes, whatever order it is fed the same input in.
        engine._seq = int(meta.get("seq", 0)) + _RESTART_GAP  # type: ignore[call-overload]
        engine.late = int(meta.get("late", 0))  # type: ignore[call-overload]
        engine.duplicates = int(meta.get("duplicates", 0))  # type: ignore[call-overload]
        engine._next_sweep = int(meta.get("sweep", 0))  # type: ignore[call-overload]
        for key, holder in holders.items():
            holder.key = key
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
