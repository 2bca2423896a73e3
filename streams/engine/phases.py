"""Journey state and phases: one event applied to a fold, a fold rebuilt from its tail.

The phase rules, as functions of the account's events in (ts, event_id)
order: an event moves the account up to the highest phase whose rule it meets
given the phase the account had just before it (`after` rules, such as a
second order after a delivery, need that phase); phases never move back. The
trajectory is the list of phases entered; `Phases.fold` computes it, with the
cart and deal episodes (`Alerts`), from a starting fold and sorted events, and
`Phases.step` is the same for one event appended in order.

Events older than the tail (beyond the window) cannot be folded in order any
more. `insert_old` applies them as well as their order-free parts allow: the
trajectory takes the step the event's own time calls for, and the few events
kept whose conditional rule was not met then (`Fold.cands`, at most
`MAX_CANDIDATES`) are promoted when an old event meets the condition for them.
Cart and deal episodes ignore such events.

The engagement score (contract section 8) is kept at the fold's last activity
(`Fold.score` at `Fold.act`): each activity event decays it to the event's
time, the episode rule of `account_hot` looks at that value, and the event's
weight is added. Sorted replay and a journey folded again after a late event
add in the same (ts, event_id) order and agree bit for bit; `merge` (decay both
scores to the later time and add) and `insert_old` (the old event's weight,
decayed) give the same sum in exact arithmetic, and floating point may differ
in the last bits there, so rows round it (`ENGAGEMENT_DIGITS`).
"""

from __future__ import annotations

from collections.abc import Iterable

from journeys.streams.engine.alerts import Alerts, alert_id
from journeys.streams.engine.rules import NEUTRAL, ORDER, SUPPLIER, EventClass, Rules
from journeys.streams.engine.state import (
    ACCOUNT_HOT,
    MAX_CANDIDATES,
    MAX_INTERVALS,
    Code,
    Entry,
    Fold,
    Step,
    merge_trajectories,
    phase_before,
    type_code,
    type_name,
)

#: Decimals of the engagement score in rows and alerts (see the module docstring).
ENGAGEMENT_DIGITS = 6


class Kind:
    """What the engine knows of one (channel, type): its class, code, names and weight."""

    __slots__ = (
        "cls", "flags", "episodes", "active", "conditional", "code", "type", "channel", "weight",
    )  # fmt: skip

    def __init__(
        self, cls: EventClass, code: Code, channel: str, type_: str, weight: float = 0.0
    ) -> None:
        self.cls = cls
        self.flags = cls.flags
        #: The cart and deal flags alone: whether the event touches an alert's episode.
        self.episodes = cls.flags & ~SUPPLIER
        self.active = not cls.flags & SUPPLIER
        self.conditional = any(after >= 0 for _, after in cls.moves)
        self.code = code
        self.type = type_
        self.channel = channel
        #: What an event of this kind adds to the engagement score (0 for supplier actions).
        self.weight = weight if self.active else 0.0


class Phases:
    """Applies events to folds with the compiled rules."""

    def __init__(self, rules: Rules, alerts: Alerts) -> None:
        self._rules = rules
        self._first = rules.first_activity_phase
        self._alerts = alerts
        engagement = rules.engagement
        self._engagement = engagement
        #: Engagement is kept (0: off), and its thresholds.
        self._half_life = float(engagement.half_life)
        self._warm = engagement.warm
        self._hot = engagement.hot
        self._by_code: dict[Code, Kind] = {}
        self.by_name: dict[str, dict[str, Kind]] = {}

    def kind(self, channel: str, type_: str) -> Kind:
        """The kind of an event's (channel, type)."""
        kinds = self.by_name.get(channel)
        if kinds is None:
            kinds = self.by_name[channel] = {}
        kind = kinds.get(type_)
        if kind is None:
            classes = self._rules.classes.get(channel, {})
            code = type_code(channel, type_)
            weight = self._engagement.weight(channel, type_)
            kind = kinds[type_] = self._by_code[code] = Kind(
                classes.get(type_, NEUTRAL), code, channel, type_, weight
            )
        return kind

    def kind_of(self, code: Code) -> Kind:
        """The kind of a stored type code."""
        kind = self._by_code.get(code)
        if kind is None:
            channel, type_ = type_name(code)
            kind = self.kind(channel, type_)
        return kind

    # ------------------------------------------------------------ in order

    def step(
        self,
        f: Fold,
        ts: int,
        event_id: str,
        kind: Kind,
        segment: str | None,
        changed: list[str] | None,
    ) -> Step | None:
        """Apply one event after everything the fold holds; the new step if the phase rose."""
        active = kind.active
        if segment is not None:
            f.segment, f.segment_ts = segment, ts
        if f.seen is None or ts > f.seen:
            f.seen = ts
        act = f.act
        if active and (act is None or ts > act):
            f.act = ts
        traj = f.traj
        current = traj[-1][0] if traj else -1
        target = self._first if active else -1
        unmet = False
        for phase, after in kind.cls.moves:
            if after <= current:
                if phase > target:
                    target = phase
                break
            if phase > current:
                unmet = True
        made: Step | None = None
        if target > current:
            made = (target, ts, event_id, kind.type, kind.channel)
            traj.append(made)
        if unmet and kind.conditional:
            self._remember(f, (ts, event_id, kind.code, None))
        if active and self._half_life:
            self._engage(f, act, ts, event_id, kind.weight, changed)
        if kind.episodes or (active and f.stall_alerted):
            self._alerts.on_event(f, kind.flags, active, ts, event_id, changed)
        return made

    def _engage(
        self,
        f: Fold,
        act: int | None,
        ts: int,
        event_id: str,
        weight: float,
        changed: list[str] | None,
    ) -> None:
        """Add an activity event to the score kept at `act` (the last activity before it),
        with the `account_hot` episode rule."""
        if act is None:
            before = 0.0
        elif ts > act:
            before = f.score * 2.0 ** ((act - ts) / self._half_life)
        elif ts == act:
            before = f.score
        else:  # not after the last activity (never in order): its decayed weight only
            f.score += weight * 2.0 ** ((ts - act) / self._half_life)
            return
        score = f.score = before + weight
        hot = f.hot
        if hot is not None and before < self._warm:
            self._alerts.cool(f, ts, changed)
            hot = None
        if hot is None and score >= self._hot:
            self._alerts.heat(f, ts, event_id, score, changed)

    def _add_old(self, f: Fold, ts: int, weight: float) -> None:
        """Add the weight of an activity event older than the fold's others (no episode)."""
        act = f.act
        if act is None:
            f.score = weight
        elif ts <= act:
            f.score += weight * 2.0 ** ((ts - act) / self._half_life)
        else:
            f.score = f.score * 2.0 ** ((act - ts) / self._half_life) + weight

    def _merged_score(self, a: Fold, b: Fold) -> float:
        """The score of two folds' activity together, at the later of their last ones."""
        if a.act is None or b.act is None or not self._half_life:
            return b.score if a.act is None else a.score
        at = max(a.act, b.act)
        half_life = self._half_life
        return a.score * 2.0 ** ((a.act - at) / half_life) + b.score * 2.0 ** (
            (b.act - at) / half_life
        )

    def engagement(self, f: Fold) -> float:
        """The score a row shows: just after the fold's last activity, rounded."""
        return round(f.score, ENGAGEMENT_DIGITS) + 0.0 if f.act is not None else 0.0

    def fold(self, f: Fold, tail: Iterable[Entry], account: str | None, until: int) -> Fold:
        """`f` after the sorted `tail` and every deadline before `until` (alerts if an account)."""
        alerts = self._alerts
        for ts, event_id, code, segment in tail:
            if account is not None:
                alerts.fire(f, ts, None)
            self.step(f, ts, event_id, self.kind_of(code), segment, None)
        if account is not None:
            alerts.fire(f, until, None)
        return f

    # ------------------------------------------------------------ out of the window

    def insert_old(self, f: Fold, entry: Entry) -> None:
        """Apply an event older than the fold's last one, as far as order allows."""
        ts, event_id, code, segment = entry
        kind = self.kind_of(code)
        if segment is not None and (f.segment_ts is None or ts >= f.segment_ts):
            f.segment, f.segment_ts = segment, ts
        if f.seen is None or ts > f.seen:
            f.seen = ts
        if kind.active:
            if self._half_life:
                self._add_old(f, ts, kind.weight)
            if f.act is None or ts > f.act:
                f.act = ts
        if kind.flags & ORDER:
            if not f.orders or ts >= f.orders[-1]:
                f.order_event = event_id
            f.orders = _last_orders(f.orders, [ts])
        if self._place(f, entry, kind):
            self._promote(f)

    def _place(self, f: Fold, entry: Entry, kind: Kind) -> bool:
        """Give an event the step its own time calls for; whether the trajectory changed."""
        ts, event_id = entry[0], entry[1]
        before = phase_before(f.traj, ts, event_id)
        target = self._first if kind.active else -1
        unmet = False
        for phase, after in kind.cls.moves:
            if after <= before:
                if phase > target:
                    target = phase
                break
            if phase > before:
                unmet = True
        if unmet and kind.conditional:
            self._remember(f, (ts, event_id, kind.code, None))
        if target <= before:
            return False
        merged = merge_trajectories(f.traj, [(target, ts, event_id, kind.type, kind.channel)])
        if merged == f.traj:
            return False
        f.traj = merged
        return True

    def _promote(self, f: Fold) -> None:
        """Promote remembered events whose condition the trajectory now meets."""
        for _ in range(MAX_CANDIDATES + 1):
            cands, f.cands = f.cands, None
            changed = False
            for entry in cands or ():
                changed |= self._place(f, entry, self.kind_of(entry[2]))
            if not changed:
                return

    @staticmethod
    def _remember(f: Fold, entry: Entry) -> None:
        cands = f.cands
        if cands is None:
            f.cands = [entry]
            return
        if entry in cands:
            return
        cands.append(entry)
        if len(cands) > MAX_CANDIDATES:
            cands.sort()
            del cands[0]

    def merge(self, a: Fold, b: Fold) -> Fold:
        """One fold of two journeys' folds at the same bound (order-free parts exact)."""
        if b.seen is None and b.alerts is None:  # nothing happened in `b` yet
            return a
        if a.seen is None and a.alerts is None:
            return b
        f = a.copy()
        f.traj = merge_trajectories(a.traj, b.traj)
        if b.seen is not None and (f.seen is None or b.seen > f.seen):
            f.seen = b.seen
        if b.act is not None:
            f.score = self._merged_score(a, b)
        if b.act is not None and (f.act is None or b.act > f.act):
            f.act = b.act
        if b.cart_start is not None and (f.cart_start is None or b.cart_last > f.cart_last):
            f.cart_start, f.cart_event, f.cart_last = b.cart_start, b.cart_event, b.cart_last
            f.cart_armed, f.cart_alerted = b.cart_armed, b.cart_alerted
        if b.deal_open is not None and (
            f.deal_open is None
            or (b.deal_open, b.deal_event or "") < (f.deal_open, f.deal_event or "")
        ):
            f.deal_open, f.deal_event, f.stalls = b.deal_open, b.deal_event, b.stalls
            f.stall_alerted, f.stall_skip = b.stall_alerted, b.stall_skip
        if b.alerts:
            f.alerts = {**b.alerts, **(f.alerts or {})}
        if b.hot is not None and (f.hot is None or _raised(f, b.hot) < _raised(f, f.hot)):
            f.hot = b.hot  # the earlier of two hot episodes goes on
        if b.fired is not None and (f.fired is None or b.fired > f.fired):
            f.fired = b.fired
        if b.segment_ts is not None and (f.segment_ts is None or b.segment_ts > f.segment_ts):
            f.segment, f.segment_ts = b.segment, b.segment_ts
        if b.orders:
            if not f.orders or b.orders[-1] >= f.orders[-1]:
                f.order_event = b.order_event
            f.orders = _last_orders(f.orders, b.orders)
        for entry in b.cands or ():
            self._remember(f, entry)
        self._promote(f)
        return f


def _raised(f: Fold, event_id: str) -> tuple[int, str]:
    """When the hot episode that `event_id` started was raised, for choosing one of two."""
    alert = (f.alerts or {}).get(alert_id(ACCOUNT_HOT, event_id))
    return (alert[1] if alert is not None else 0, event_id)


def _last_orders(orders: list[int] | None, more: list[int]) -> list[int]:
    """The latest order times of two sets, as many as a usual interval needs."""
    return sorted([*(orders or ()), *more])[-(MAX_INTERVALS + 1) :]
