"""Journey state and phases: one event applied to a fold, a fold rebuilt from its tail.

The phase rules, as functions of the account's events in (ts, event_id)
order: an event moves the account up to the highest phase whose rule it meets
given the phase the account had just before it (`after` rules, such as a
second order after a delivery, need that phase); phases never move back. The
trajectory is the list of phases entered; `Phases.fold` computes it, with the
cart and deal episodes (`Alerts`), from a starting fold and sorted events, and
`Phases.step` is the same for one event appended in order.

Nothing here depends on arrival: an event older than a journey's tail, an
event moved earlier, a merge or an erasure makes the engine fold the journey
again from its archive (`partition.PartitionEngine`), so every rule,
conditional ones and episodes included, sees the events in (ts, event_id)
order, as sorted replay does.

The engagement score (contract section 8) is kept at the fold's last activity
(`Fold.score` at `Fold.act`): each activity event decays it to the event's
time, the episode rule of `account_hot` looks at that value, and the event's
weight is added. Sorted replay and a journey folded again after a late event
add in the same (ts, event_id) order and agree bit for bit; rows round it
(`ENGAGEMENT_DIGITS`) all the same.
"""

from __future__ import annotations

from collections.abc import Iterable

from journeys.streams.engine.alerts import Alerts
from journeys.streams.engine.rules import NEUTRAL, SUPPLIER, EventClass, Rules
from journeys.streams.engine.state import Code, Entry, Fold, Step, type_code, type_name

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
        for phase, after in kind.cls.moves:
            if after <= current:
                if phase > target:
                    target = phase
                break
        made: Step | None = None
        if target > current:
            made = (target, ts, event_id, kind.type, kind.channel)
            traj.append(made)
        if active and self._half_life:  # `_engage`, its common case inline (every activity)
            if act is not None and ts > act and f.hot is None:
                score = f.score = f.score * 2.0 ** ((act - ts) / self._half_life) + kind.weight
                if score >= self._hot:
                    self._alerts.heat(f, ts, event_id, score, changed)
            else:
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
        for ts, event_id, code, segment, _ in tail:
            if account is not None:
                alerts.fire(f, ts, None)
            self.step(f, ts, event_id, self.kind_of(code), segment, None)
        if account is not None:
            alerts.fire(f, until, None)
        return f
