"""The journey engine: events in event-time order in, journey rows out. Pure.

No Kafka, no ClickHouse, no clock: time is the events' own. The Faust worker
and `journeys replay` feed the same engine the same ordered events and get
the same rows.

What happens to one event, in order:
1. Timers due strictly before its time fire (alerts, visitor eviction).
2. A duplicate event_id seen within the dedupe window is dropped.
3. Identity: the event's own account (account_id, else the email's company,
   else its free-mail address) and the journeys its aliases (anonymous_id,
   contact_id, email) already belong to are found. Lower-ranked journeys merge
   into the highest (an anonymous visitor into the account it turns out to
   be, a domain account into the ERP account its contact belongs to); two
   different accounts of the same rank never merge. New aliases are linked.
4. The event is applied: counts, DMU roles, phase rules, cart and deal state.
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Iterable
from dataclasses import dataclass, replace

import orjson

from journeys.schemas.identity import FREE_MAIL_DOMAINS
from journeys.schemas.record import DMU_ROLES, EventRecord, format_ms
from journeys.schemas.rows import (
    AlertRow,
    IdentityLink,
    JourneyRow,
    Output,
    StoredEvent,
    TransitionRow,
)
from journeys.streams.engine.rules import (
    CART_ACTIVITY,
    CART_CHECKOUT,
    CART_END,
    CART_START,
    DEAL_CLOSE,
    DEAL_OPEN,
    NEUTRAL,
    SUPPLIER,
    Rules,
    load_rules,
)
from journeys.streams.engine.state import (
    ACCOUNT_RANK,
    MAX_VISITOR_ALIASES,
    RANK_ACCOUNT,
    RANK_ANONYMOUS,
    RANK_CONTACT,
    RANK_DOMAIN,
    RANK_FREE_MAIL,
    Holder,
    Step,
    merge_trajectories,
    trajectory_rows,
)

CART_ABANDONED = "cart_abandoned"
DEAL_STALLED = "deal_stalled"
_EVICT = "evict"
_DMU_BITS = {role: 1 << i for i, role in enumerate(DMU_ROLES)}
_ALIAS_KINDS = {"a": "anonymous_id", "c": "contact_id", "e": "email"}


@dataclass(frozen=True)
class EngineConfig:
    """Everything that shapes the engine's answers; durations in milliseconds."""

    rules: Rules
    cart_abandon_after: int = 4 * 3_600_000
    deal_stall_after: int = 14 * 86_400_000
    visitor_ttl: int = 90 * 86_400_000

    @classmethod
    def default(cls) -> EngineConfig:
        """The contract's defaults."""
        return cls(rules=load_rules())


def _alert_id(kind: str, account: str, since: int) -> str:
    digest = hashlib.blake2b(f"{kind}\x1f{account}\x1f{since}".encode(), digest_size=12)
    return "al_" + digest.hexdigest()


class JourneyEngine:
    """Stitches events into per-account journeys, transitions and alerts.

    Feed events in (occurred_at, event_id) order with `process`; call
    `advance_to(ts)` at the end of input so alerts due by then are raised;
    `take()` hands over everything produced since the last call, with a
    journey snapshot of every account that changed.
    """

    def __init__(self, config: EngineConfig | None = None) -> None:
        self.config = config or EngineConfig.default()
        self._rules = self.config.rules
        self._classes = self._rules.classes
        self._phases = self._rules.phases
        self.holders: dict[str, Holder] = {}
        #: alias key ("a:…", "c:…", "e:…") -> holder key
        self.aliases: dict[str, str] = {}
        #: account key merged away -> the account it merged into
        self.redirects: dict[str, str] = {}
        self.clock = 0
        self.late = 0
        self.duplicates = 0
        self._timers: list[tuple[int, str, str]] = []
        #: event_ids applied at the current clock millisecond: in (ts, event_id) order a
        #: duplicate delivery is always adjacent to the original, so this is all it takes.
        self._seen: set[str] = set()
        self._dirty: dict[str, Holder] = {}
        self._out = Output()
        #: What changed since the last `changes()`, for incremental checkpoints.
        self._touched: set[str] = set()
        self._touched_aliases: set[str] = set()
        self._touched_redirects: set[str] = set()

    # ------------------------------------------------------------------ input

    def process(self, event: EventRecord) -> None:
        """Apply one event; events must come in (ts, event_id) order."""
        ts = event.ts
        if ts > self.clock:
            if self._timers and self._timers[0][0] < ts:
                self._fire(ts, inclusive=False)
            self.clock = ts
            self._seen.clear()
        elif ts < self.clock:
            self.process_late(event)
            return
        if event.event_id in self._seen:
            self.duplicates += 1
            return
        self._seen.add(event.event_id)
        holder = self._resolve(event)
        self._apply(holder, event)
        self._out.events.append(
            StoredEvent(event, holder.key if holder.rank >= ACCOUNT_RANK else None)
        )

    def process_all(self, events: Iterable[EventRecord]) -> None:
        """Apply many events in order."""
        for event in events:
            self.process(event)

    def process_late(self, event: EventRecord) -> None:
        """Store an event that came after its time was settled; it moves nothing."""
        self.late += 1
        holder_key = self._lookup(event)
        holder = self.holders.get(holder_key) if holder_key else None
        account = holder.key if holder is not None and holder.rank >= ACCOUNT_RANK else None
        self._out.events.append(StoredEvent(event, account, late=True))

    def advance_to(self, ts: int) -> None:
        """Event time reached `ts` with nothing more before it: raise what is due by then."""
        if self._timers and self._timers[0][0] <= ts:
            self._fire(ts, inclusive=True)
        self.clock = max(self.clock, ts)

    def take(self) -> Output:
        """Everything produced since the last call, journey snapshots included."""
        out = self._out
        for holder in self._dirty.values():
            if holder.rank >= ACCOUNT_RANK and holder.traj and self.holders.get(holder.key) is holder:
                out.journeys.append(self._journey_row(holder))
        self._dirty = {}
        self._out = Output()
        return out

    # --------------------------------------------------------------- identity

    def _find(self, key: str) -> str:
        redirects = self.redirects
        if key not in redirects:
            return key
        root = key
        while root in redirects:
            root = redirects[root]
        while key != root:  # path compression
            following = redirects[key]
            redirects[key] = root
            key = following
        return root

    def _own(self, event: EventRecord) -> tuple[str, int]:
        if event.account_id:
            return event.account_id, RANK_ACCOUNT
        if event.email:
            domain = event.email.rpartition("@")[2]
            if domain in FREE_MAIL_DOMAINS:
                return event.email, RANK_FREE_MAIL
            return domain, RANK_DOMAIN
        if event.contact_id:
            return "?c:" + event.contact_id, RANK_CONTACT
        return "?a:" + (event.anonymous_id or ""), RANK_ANONYMOUS

    def _alias_keys(self, event: EventRecord) -> list[str]:
        keys = []
        if event.contact_id:
            keys.append("c:" + event.contact_id)
        if event.email:
            keys.append("e:" + event.email)
        if event.anonymous_id:
            keys.append("a:" + event.anonymous_id)
        return keys

    def _lookup(self, event: EventRecord) -> str | None:
        """The holder an event belongs to now, without learning anything (late events)."""
        own, rank = self._own(event)
        own = self._find(own)
        best = self.holders.get(own)
        for alias in self._alias_keys(event):
            key = self.aliases.get(alias)
            holder = self.holders.get(self._find(key)) if key else None
            if holder is not None and (best is None or holder.rank > best.rank):
                best = holder
        return best.key if best is not None else None

    def _resolve(self, event: EventRecord) -> Holder:
        holders = self.holders
        own_key, own_rank = self._own(event)
        if own_key in self.redirects:
            own_key = self._find(own_key)
        own = holders.get(own_key)
        if own is not None and own.rank >= own_rank:
            # The common case: a known account whose aliases in this event all point to it.
            aliases = self.aliases
            if (
                (event.contact_id is None or aliases.get("c:" + event.contact_id) == own_key)
                and (event.email is None or aliases.get("e:" + event.email) == own_key)
                and (event.anonymous_id is None or aliases.get("a:" + event.anonymous_id) == own_key)
            ):
                return own
        if own is not None and own.rank < own_rank:
            own.rank = own_rank  # an explicit account id names a known domain, say
        alias_keys = self._alias_keys(event)
        found: list[Holder] = []
        for alias in alias_keys:
            key = self.aliases.get(alias)
            if key is None:
                continue
            holder = holders.get(self._find(key))
            if holder is None:
                del self.aliases[alias]  # its visitor was forgotten
                self._touched_aliases.add(alias)
            elif holder is not own and holder not in found:
                found.append(holder)

        winner = own
        win_rank = own_rank if own is None else own.rank
        for holder in found:
            if holder.rank > win_rank:
                winner, win_rank = holder, holder.rank
        if winner is None:
            winner = holders[own_key] = Holder(own_key, own_rank, event.ts)
            self._touched.add(own_key)
            if own_rank < ACCOUNT_RANK:
                winner.aliases = []
                self._schedule(winner, _EVICT, event.ts + self.config.visitor_ttl)
        losers = [
            h for h in found + ([own] if own is not None else [])
            if h is not winner and (h.rank < win_rank or h.rank < ACCOUNT_RANK)
        ]
        for loser in losers:
            self._merge(loser, winner, event.ts)

        for alias in alias_keys:
            if alias not in self.aliases:
                self._link(alias, winner, event.ts)
        return winner

    def _link(self, alias: str, holder: Holder, ts: int, new: bool = True) -> None:
        self.aliases[alias] = holder.key
        self._touched_aliases.add(alias)
        if new and alias[0] == "c":
            holder.contacts += 1
        if holder.rank >= ACCOUNT_RANK:
            self._out.links.append(IdentityLink(_ALIAS_KINDS[alias[0]], alias[2:], holder.key, ts))
        elif holder.aliases is not None and len(holder.aliases) < MAX_VISITOR_ALIASES:
            holder.aliases.append(alias)

    def _merge(self, loser: Holder, winner: Holder, ts: int) -> None:
        """`loser` turns out to be `winner`'s journey: fold it in, retroactively."""
        old_traj = winner.traj
        if loser.traj:
            winner.traj = merge_trajectories(winner.traj, loser.traj) if winner.traj else list(loser.traj)
        winner.first_seen = min(winner.first_seen, loser.first_seen)
        winner.last_seen = max(winner.last_seen, loser.last_seen)
        if loser.last_activity is not None:
            winner.last_activity = max(winner.last_activity or 0, loser.last_activity)
        winner.events += loser.events
        winner.contacts += loser.contacts
        winner.dmu |= loser.dmu
        winner.segment = winner.segment or loser.segment
        winner.version = max(winner.version, loser.version) + 1
        if loser.cart_start is not None and (
            winner.cart_start is None or loser.cart_last > winner.cart_last
        ):
            winner.cart_start = min(loser.cart_start, winner.cart_start or loser.cart_start)
            winner.cart_last, winner.cart_armed = loser.cart_last, loser.cart_armed
            winner.cart_alerted = winner.cart_alerted or loser.cart_alerted
        if loser.deal_open is not None:
            winner.deal_open = min(loser.deal_open, winner.deal_open or loser.deal_open)
            winner.stall_alerted = winner.stall_alerted or loser.stall_alerted
        if loser.open_alerts:
            winner.open_alerts = {**loser.open_alerts, **(winner.open_alerts or {})}

        del self.holders[loser.key]
        self._dirty.pop(loser.key, None)
        self._touched.add(loser.key)
        self._touched.add(winner.key)
        if loser.rank >= ACCOUNT_RANK:
            self.redirects[loser.key] = winner.key
            self._touched_redirects.add(loser.key)
            self._out.links.append(IdentityLink("account", loser.key, winner.key, ts))
            self._retract(loser)
        for alias in loser.aliases or ():
            if self.aliases.get(alias) == loser.key:
                self._link(alias, winner, ts, new=False)
        if winner.rank >= ACCOUNT_RANK:
            self._emit_diff(winner, old_traj)
            self._rearm(winner)
        self._dirty[winner.key] = winner

    def _retract(self, loser: Holder) -> None:
        """Rows of an account merged away are marked deleted."""
        version = loser.version + 1
        for prev, step in trajectory_rows(loser.traj).values():
            self._out.transitions.append(self._transition(loser.key, prev, step, version, True))
        if loser.traj:
            row = self._journey_row(loser)
            self._out.journeys.append(replace(row, version=version, deleted=True))

    # ------------------------------------------------------------------ apply

    def _apply(self, holder: Holder, event: EventRecord) -> None:
        ts = event.ts
        holder.events += 1
        holder.version += 1
        if ts > holder.last_seen:
            holder.last_seen = ts
        cls = self._classes[event.channel].get(event.type, NEUTRAL)
        flags = cls.flags
        active = not flags & SUPPLIER
        if active:
            holder.last_activity = ts
        if event.dmu_role:
            holder.dmu |= _DMU_BITS[event.dmu_role]
        if event.segment:
            holder.segment = event.segment
        if holder.sched_evict is not None:
            self._schedule(holder, _EVICT, ts + self.config.visitor_ttl)

        current = holder.traj[-1][0] if holder.traj else -1
        target = self._rules.first_activity_phase if active else -1
        for phase, after in cls.moves:
            if after <= current:
                if phase > target:
                    target = phase
                break
        if target > current:
            step: Step = (target, ts, event.event_id, event.type, event.channel)
            holder.traj.append(step)
            if holder.rank >= ACCOUNT_RANK:
                self._out.transitions.append(
                    self._transition(holder.key, current, step, holder.version, False)
                )
        if flags or (active and holder.open_alerts):
            self._cart_and_deal(holder, flags, active, ts)
        self._dirty[holder.key] = holder
        self._touched.add(holder.key)

    def _cart_and_deal(self, holder: Holder, flags: int, active: bool, ts: int) -> None:
        if flags & CART_END:
            if holder.cart_start is not None:
                self._resolve_alert(holder, CART_ABANDONED, ts)
            holder.cart_start, holder.cart_armed, holder.cart_alerted = None, False, False
        elif flags & CART_CHECKOUT:
            holder.cart_armed = False
        if flags & CART_ACTIVITY:
            if holder.cart_start is None and flags & CART_START:
                holder.cart_start, holder.cart_alerted = ts, False
            if holder.cart_start is not None:
                holder.cart_last = ts
                holder.cart_armed = not holder.cart_alerted
        if flags & DEAL_CLOSE:
            holder.deal_open, holder.stall_alerted = None, False
            self._resolve_alert(holder, DEAL_STALLED, ts)
        elif flags & DEAL_OPEN and holder.deal_open is None:
            holder.deal_open = ts
        if active and holder.stall_alerted:
            holder.stall_alerted = False
            self._resolve_alert(holder, DEAL_STALLED, ts)
        if holder.rank >= ACCOUNT_RANK:
            self._rearm(holder)

    # ----------------------------------------------------------------- timers

    def _cart_deadline(self, holder: Holder) -> int | None:
        if holder.cart_armed and not holder.cart_alerted and holder.cart_start is not None:
            return holder.cart_last + self.config.cart_abandon_after
        return None

    def _stall_base(self, holder: Holder) -> int | None:
        if holder.deal_open is None or holder.stall_alerted:
            return None
        return max(holder.deal_open, holder.last_activity or 0)

    def _stall_deadline(self, holder: Holder) -> int | None:
        base = self._stall_base(holder)
        return None if base is None else base + self.config.deal_stall_after

    def _rearm(self, holder: Holder) -> None:
        cart = self._cart_deadline(holder)
        if cart is not None and (holder.sched_cart is None or cart < holder.sched_cart):
            self._schedule(holder, CART_ABANDONED, cart)
        stall = self._stall_deadline(holder)
        if stall is not None and (holder.sched_stall is None or stall < holder.sched_stall):
            self._schedule(holder, DEAL_STALLED, stall)

    def _schedule(self, holder: Holder, kind: str, deadline: int) -> None:
        """Keep one heap entry per holder and kind; later deadlines are found when it pops."""
        if kind == CART_ABANDONED:
            holder.sched_cart = deadline
        elif kind == DEAL_STALLED:
            holder.sched_stall = deadline
        else:
            if holder.sched_evict is not None and holder.sched_evict <= deadline:
                return
            holder.sched_evict = deadline
        heapq.heappush(self._timers, (deadline, holder.key, kind))

    def _fire(self, ts: int, inclusive: bool) -> None:
        timers = self._timers
        while timers and (timers[0][0] <= ts if inclusive else timers[0][0] < ts):
            deadline, key, kind = heapq.heappop(timers)
            holder = self.holders.get(key)
            if holder is None:
                continue
            self._touched.add(key)
            if kind == _EVICT:
                self._fire_evict(holder, deadline)
                continue
            scheduled = holder.sched_cart if kind == CART_ABANDONED else holder.sched_stall
            if scheduled != deadline:
                continue  # superseded by an earlier entry for the same timer
            due = self._cart_deadline(holder) if kind == CART_ABANDONED else self._stall_deadline(holder)
            if due is None:
                self._clear_sched(holder, kind)
            elif due > deadline:
                self._schedule(holder, kind, due)
            else:
                self._clear_sched(holder, kind)
                self._raise(holder, kind, deadline)

    def _clear_sched(self, holder: Holder, kind: str) -> None:
        if kind == CART_ABANDONED:
            holder.sched_cart = None
        else:
            holder.sched_stall = None

    def _fire_evict(self, holder: Holder, deadline: int) -> None:
        if holder.sched_evict != deadline:
            return
        due = holder.last_seen + self.config.visitor_ttl
        if due > deadline:
            holder.sched_evict = None
            self._schedule(holder, _EVICT, due)
            return
        del self.holders[holder.key]
        for alias in holder.aliases or ():
            if self.aliases.get(alias) == holder.key:
                del self.aliases[alias]
                self._touched_aliases.add(alias)

    # ----------------------------------------------------------------- alerts

    def _raise(self, holder: Holder, kind: str, at: int) -> None:
        if kind == CART_ABANDONED:
            since = holder.cart_start or 0
            holder.cart_alerted, holder.cart_armed = True, False
            details = {
                "cart_started_at": format_ms(since),
                "last_cart_activity_at": format_ms(holder.cart_last),
                "threshold_ms": self.config.cart_abandon_after,
            }
        else:
            if holder.phase not in self._rules.stall_phases:
                return
            since = self._stall_base(holder) or 0
            holder.stall_alerted = True
            details = {
                "phase": self._phases[holder.phase],
                "open_since": format_ms(holder.deal_open or since),
                "last_activity_at": format_ms(holder.last_activity) if holder.last_activity else None,
                "threshold_ms": self.config.deal_stall_after,
            }
        alert_id = _alert_id(kind, holder.key, since)
        text = orjson.dumps(details).decode()
        if holder.open_alerts is None:
            holder.open_alerts = {}
        holder.open_alerts[kind] = (alert_id, at, text)
        self._out.alerts.append(AlertRow(alert_id, kind, holder.key, at, text, version=1))

    def _resolve_alert(self, holder: Holder, kind: str, ts: int) -> None:
        if not holder.open_alerts or kind not in holder.open_alerts:
            return
        alert_id, raised_at, text = holder.open_alerts.pop(kind)
        if not holder.open_alerts:
            holder.open_alerts = None
        self._out.alerts.append(
            AlertRow(alert_id, kind, holder.key, raised_at, text, version=2, resolved_at=ts)
        )

    # ------------------------------------------------------------------- rows

    def _transition(
        self, account: str, previous: int, step: Step, version: int, deleted: bool
    ) -> TransitionRow:
        phase, ts, event_id, type_, channel = step
        return TransitionRow(
            account_id=account,
            from_phase=self._phases[previous] if previous >= 0 else None,
            to_phase=self._phases[phase],
            transitioned_at=ts,
            event_id=event_id,
            event_type=type_,
            channel=channel,
            version=version,
            deleted=deleted,
        )

    def _emit_diff(self, holder: Holder, old: list[Step]) -> None:
        before = trajectory_rows(old)
        after = trajectory_rows(holder.traj)
        for phase, (previous, step) in after.items():
            if before.get(phase) != (previous, step):
                self._out.transitions.append(
                    self._transition(holder.key, previous, step, holder.version, False)
                )
        for phase, (previous, step) in before.items():
            if phase not in after:
                self._out.transitions.append(
                    self._transition(holder.key, previous, step, holder.version, True)
                )

    def _journey_row(self, holder: Holder) -> JourneyRow:
        last = holder.traj[-1]
        return JourneyRow(
            account_id=holder.key,
            phase=self._phases[last[0]],
            phase_since=last[1],
            first_seen=holder.first_seen,
            last_seen=holder.last_seen,
            last_activity=holder.last_activity,
            events=holder.events,
            contacts=holder.contacts,
            dmu_roles=tuple(r for r, bit in _DMU_BITS.items() if holder.dmu & bit),
            segment=holder.segment,
            version=holder.version,
        )

    # ------------------------------------------------------------ checkpoints

    def changes(self) -> EngineChanges:
        """What changed since the last call: holders, aliases and redirects to write or delete."""
        changes = EngineChanges(
            holders={k: self.holders.get(k) for k in self._touched},
            aliases={k: self.aliases.get(k) for k in self._touched_aliases},
            redirects={k: self.redirects[k] for k in self._touched_redirects},
            meta=self.meta(),
        )
        self._touched, self._touched_aliases, self._touched_redirects = set(), set(), set()
        return changes

    def meta(self) -> dict[str, object]:
        """The engine's own counters and clock."""
        return {
            "clock": self.clock, "late": self.late, "duplicates": self.duplicates,
            "seen": sorted(self._seen),
        }

    @classmethod
    def restore(
        cls,
        config: EngineConfig,
        holders: dict[str, Holder],
        aliases: dict[str, str],
        redirects: dict[str, str],
        meta: dict[str, object],
    ) -> JourneyEngine:
        """An engine continuing from a checkpoint; timers are rebuilt from the holders."""
        engine = cls(config)
        engine.holders, engine.aliases, engine.redirects = holders, aliases, redirects
        engine.clock = int(meta.get("clock", 0))  # type: ignore[call-overload]
        engine.late = int(meta.get("late", 0))  # type: ignore[call-overload]
        engine.duplicates = int(meta.get("duplicates", 0))  # type: ignore[call-overload]
        engine._seen = set(meta.get("seen", ()))  # type: ignore[call-overload]
        timers = engine._timers
        for key, holder in holders.items():
            for kind, deadline in (
                (CART_ABANDONED, holder.sched_cart),
                (DEAL_STALLED, holder.sched_stall),
                (_EVICT, holder.sched_evict),
            ):
                if deadline is not None:
                    timers.append((deadline, key, kind))
        heapq.heapify(timers)
        return engine


@dataclass
class EngineChanges:
    """An incremental checkpoint: None values are deletions."""

    holders: dict[str, Holder | None]
    aliases: dict[str, str | None]
    redirects: dict[str, str]
    meta: dict[str, object]
