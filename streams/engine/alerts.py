"""Timers and alerts: cart and deal episodes, deadlines in event time, alert rows.

Both alerts are functions of the account's events in (ts, event_id) order:

- `cart_abandoned`: a cart episode starts with an add to cart and ends with an
  order. After each cart activity a deadline runs (`cart_abandon_after`); a
  checkout stops it until the next cart activity; if it passes with no cart
  activity, checkout or order at or before it, the episode is alerted, once.
  An order resolves the alert.
- `deal_stalled`: a deal opens with a quote, demo or meeting and closes with
  a rejection, order, win or loss. While it is open, a deadline runs from the
  later of the opening and the account's last activity (`deal_stall_after`);
  if it passes with no activity, and the account is in a stall phase then,
  the deal has stalled. Activity or the close resolves the stall; the next
  quiet period can stall again.
- `reorder_due`: after each order of an account with at least two, its next
  order is due once the median of its last intervals between orders (at most
  `MAX_INTERVALS`) times `reorder_factor` has passed; if no order came by
  then, and the account is in a reorder phase (loyalty), it is alerted. The
  next order resolves it.
- `account_hot`: raised at the activity event that brings the engagement score
  (decayed to that event, plus its weight; see `Phases.step`) to `hot` or above,
  once per episode. The episode ends at a later activity event before which the
  decayed score was below `warm`; that event may start the next one. It is
  raised as the event is applied; its alert is resolved at the moment the
  decaying score fell below `warm` (a deadline), so a quiet account does not
  stay hot.

A deadline fires once event time is past it: before an event later than the
deadline is applied, and when the engine's clock passes it.

An alert's id names its episode, not its moment, so a consumer can match the
versions of one alert when a late event moves it: the event that opened the
episode (the cart's first add to cart; the deal's opening event and the
stall's number within the deal; the order after which the next was due; the event
that heated the account). It
does not name the account, so it stays when the account merges into another.
When a late event moves the deadline, the alert keeps its id and gets a new
version with the new `raised_at`; when it shows the alert never happened (or
not yet), the alert is withdrawn (a new version with `withdrawn`), and raised
again with the same id and a higher version if it becomes due.
"""

from __future__ import annotations

import hashlib
import math

import orjson

from journeys.schemas.record import format_ms
from journeys.schemas.rows import AlertRow
from journeys.streams.engine.rules import (
    CART_ACTIVITY,
    CART_CHECKOUT,
    CART_END,
    CART_START,
    DEAL_CLOSE,
    DEAL_OPEN,
    ORDER,
    Rules,
)
from journeys.streams.engine.state import (
    ACCOUNT_HOT,
    CART_ABANDONED,
    DEAL_STALLED,
    MAX_INTERVALS,
    REORDER_DUE,
    Alert,
    Fold,
)


def alert_id(kind: str, event_id: str, number: int = 0) -> str:
    """A deterministic alert id: the kind, the event that opened the episode, and the
    number of the alert within it (stalls of one deal)."""
    text = "\x1f".join([kind, event_id, str(number)])
    return "al_" + hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


class Alerts:
    """Cart and deal state of a fold, its deadlines, and the alerts they raise."""

    def __init__(
        self,
        rules: Rules,
        cart_abandon_after: int,
        deal_stall_after: int,
        reorder_factor: float = 1.5,
        generation: int = 0,
    ) -> None:
        self.cart_after = cart_abandon_after
        #: The generation of the rows `row` makes (`journeys rebuild`).
        self.generation = generation
        self.stall_after = deal_stall_after
        self.reorder_factor = reorder_factor
        self._stall_phases = rules.stall_phases
        self._reorder_phases = rules.reorder_phases
        self._phases = rules.phases
        self._engagement = rules.engagement

    # ------------------------------------------------------------ episodes

    def on_event(
        self,
        f: Fold,
        flags: int,
        active: bool,
        ts: int,
        event_id: str,
        changed: list[str] | None,
    ) -> None:
        """Update cart and deal episodes for one event applied in order."""
        if flags & CART_END:
            if f.cart_start is not None:
                self._resolve(f, CART_ABANDONED, ts, changed)
            f.cart_start, f.cart_last, f.cart_armed, f.cart_alerted = None, 0, False, False
            f.cart_event = None
        elif flags & CART_CHECKOUT:
            f.cart_armed = False
        if flags & CART_ACTIVITY:
            if f.cart_start is None and flags & CART_START:
                f.cart_start, f.cart_event, f.cart_alerted = ts, event_id, False
            if f.cart_start is not None:
                f.cart_last = ts
                f.cart_armed = not f.cart_alerted
        if flags & DEAL_CLOSE:
            if f.deal_open is not None:
                f.deal_open, f.deal_event, f.stalls, f.stall_skip = None, None, 0, None
            if f.stall_alerted:
                f.stall_alerted = False
                self._resolve(f, DEAL_STALLED, ts, changed)
        elif flags & DEAL_OPEN and f.deal_open is None:
            f.deal_open, f.deal_event, f.stalls, f.stall_skip = ts, event_id, 0, None
        if active and f.stall_alerted:
            f.stall_alerted = False
            self._resolve(f, DEAL_STALLED, ts, changed)
        if flags & ORDER:
            if f.reorder_alerted:
                f.reorder_alerted = False
                self._resolve(f, REORDER_DUE, ts, changed)
            orders = f.orders
            if orders is None:
                f.orders = [ts]
            else:
                orders.append(ts)
                if len(orders) > MAX_INTERVALS + 1:
                    del orders[0]
            f.order_event = event_id
            f.reorder_skip = None

    def _resolve(self, f: Fold, kind: str, ts: int, changed: list[str] | None) -> None:
        alerts = f.alerts
        if not alerts:
            return
        for aid, alert in alerts.items():
            if alert[0] == kind and alert[2] is None:
                alerts[aid] = (alert[0], alert[1], ts, alert[3], alert[4], alert[5])
                if changed is not None:
                    changed.append(aid)
                return

    # ------------------------------------------------------------ engagement

    def heat(
        self, f: Fold, ts: int, event_id: str, score: float, changed: list[str] | None
    ) -> None:
        """The event at `ts` brought the score to `score`, `hot` or above: a hot episode."""
        f.hot = event_id
        aid = alert_id(ACCOUNT_HOT, event_id)
        self._add(f, aid, (ACCOUNT_HOT, ts, None, ts, round(score * 1_000_000), f.phase))
        if changed is not None:
            changed.append(aid)

    @staticmethod
    def cool(f: Fold, ts: int, changed: list[str] | None) -> None:
        """The score was below `warm` before the activity event at `ts`: the episode ends
        (every open hot alert is resolved: two journeys merged while both were hot have two)."""
        f.hot = None
        alerts = f.alerts
        if not alerts:
            return
        for aid, alert in alerts.items():
            if alert[0] == ACCOUNT_HOT and alert[2] is None:
                alerts[aid] = (alert[0], alert[1], ts, alert[3], alert[4], alert[5])
                if changed is not None:
                    changed.append(aid)

    # ------------------------------------------------------------ deadlines

    def cart_deadline(self, f: Fold) -> int | None:
        """When the open cart episode is abandoned, if nothing happens before."""
        if f.cart_armed and f.cart_start is not None:
            return f.cart_last + self.cart_after
        return None

    def stall_deadline(self, f: Fold) -> int | None:
        """When the open deal stalls, if the account stays quiet."""
        if f.deal_open is None or f.stall_alerted:
            return None
        base = f.deal_open if f.act is None or f.act < f.deal_open else f.act
        if base == f.stall_skip:
            return None
        return base + self.stall_after

    def usual_interval(self, f: Fold) -> int | None:
        """The median of the account's last intervals between orders (None before two)."""
        orders = f.orders
        if orders is None or len(orders) < 2:
            return None
        gaps = sorted(b - a for a, b in zip(orders, orders[1:], strict=False))
        middle = len(gaps) // 2
        return gaps[middle] if len(gaps) % 2 else (gaps[middle - 1] + gaps[middle]) // 2

    def reorder_deadline(self, f: Fold) -> int | None:
        """When the account's next order is due, if it does not come before."""
        if f.reorder_alerted or not self._reorder_phases:
            return None
        usual = self.usual_interval(f)
        if usual is None or f.orders is None or f.reorder_skip == f.orders[-1]:
            return None
        return f.orders[-1] + int(usual * self.reorder_factor)

    def cool_deadline(self, f: Fold) -> int | None:
        """When the open hot episode's score, decaying from the last activity, is below
        `warm`: its alert is resolved then, so a quiet account does not stay hot forever.

        The first millisecond at which `score * 2^(-(t - act) / half_life) < warm`. The
        episode itself ends at the next activity event (`Phases.step`), as the contract
        words it; only the alert's `resolved_at` comes from here."""
        engagement = self._engagement
        if f.hot is None or f.act is None or not engagement.half_life or not f.alerts:
            return None
        if not any(a[0] == ACCOUNT_HOT and a[2] is None for a in f.alerts.values()):
            return None
        if f.score < engagement.warm:
            return f.act
        if engagement.warm <= 0:
            return None
        return f.act + math.floor(engagement.half_life * math.log2(f.score / engagement.warm)) + 1

    def next_deadline(self, f: Fold) -> int | None:
        """The earliest running deadline (asked after most events: a deadline whose episode
        is not open is not asked for)."""
        best = f.cart_last + self.cart_after if f.cart_armed and f.cart_start is not None else None
        if f.deal_open is not None and not f.stall_alerted:
            stall = self.stall_deadline(f)
            if stall is not None and (best is None or stall < best):
                best = stall
        if f.orders is not None:
            reorder = self.reorder_deadline(f)
            if reorder is not None and (best is None or reorder < best):
                best = reorder
        if f.hot is not None:
            cool = self.cool_deadline(f)
            if cool is not None and (best is None or cool < best):
                best = cool
        return best

    def fire(self, f: Fold, before: int, changed: list[str] | None) -> None:
        """Raise every alert whose deadline is before `before` (event time has passed it),
        and resolve a hot account's alert once its score has cooled below `warm`."""
        cool = self.cool_deadline(f) if f.hot is not None else None
        alerts = f.alerts
        if cool is not None and cool < before and alerts:
            for aid, alert in alerts.items():
                if alert[0] == ACCOUNT_HOT and alert[2] is None:
                    alerts[aid] = (alert[0], alert[1], cool, alert[3], alert[4], alert[5])
                    if changed is not None:
                        changed.append(aid)
            if f.fired is None or cool > f.fired:
                f.fired = cool
        while True:  # (the deadlines' guards inline: this runs before every event of a fold)
            cart = (
                f.cart_last + self.cart_after if f.cart_armed and f.cart_start is not None else None
            )
            stall = (
                self.stall_deadline(f) if f.deal_open is not None and not f.stall_alerted else None
            )
            reorder = self.reorder_deadline(f) if f.orders is not None else None
            if (
                reorder is not None
                and reorder < before
                and ((cart is None or reorder < cart) and (stall is None or reorder < stall))
            ):
                self._reorder(f, reorder, changed)
                deadline = reorder
            elif cart is not None and cart < before and (stall is None or cart <= stall):
                assert f.cart_start is not None
                aid = alert_id(CART_ABANDONED, f.cart_event or "")
                f.cart_alerted, f.cart_armed = True, False
                self._add(f, aid, (CART_ABANDONED, cart, None, f.cart_start, f.cart_last, -1))
                if changed is not None:
                    changed.append(aid)
                deadline = cart
            elif stall is not None and stall < before:
                assert f.deal_open is not None
                phase = f.phase
                if phase in self._stall_phases:
                    f.stalls += 1
                    f.stall_alerted = True
                    aid = alert_id(DEAL_STALLED, f.deal_event or "", f.stalls)
                    self._add(f, aid, (DEAL_STALLED, stall, None, f.deal_open, f.act, phase))
                    if changed is not None:
                        changed.append(aid)
                else:
                    f.stall_skip = stall - self.stall_after
                deadline = stall
            else:
                return
            if f.fired is None or deadline > f.fired:
                f.fired = deadline

    def _reorder(self, f: Fold, deadline: int, changed: list[str] | None) -> None:
        assert f.orders is not None
        last = f.orders[-1]
        phase = f.phase
        if phase not in self._reorder_phases:
            f.reorder_skip = last
            return
        f.reorder_alerted = True
        aid = alert_id(REORDER_DUE, f.order_event or "")
        self._add(f, aid, (REORDER_DUE, deadline, None, last, self.usual_interval(f), phase))
        if changed is not None:
            changed.append(aid)

    @staticmethod
    def _add(f: Fold, aid: str, alert: Alert) -> None:
        if f.alerts is None:
            f.alerts = {}
        f.alerts[aid] = alert

    # ------------------------------------------------------------ rows

    def row(
        self, aid: str, alert: Alert, account: str, version: int, withdrawn: bool = False
    ) -> AlertRow:
        """The alert row of a journey's alert."""
        kind, raised_at, resolved_at, since, last, phase = alert
        if kind == CART_ABANDONED:
            details: dict[str, object] = {
                "cart_started_at": format_ms(since),
                "last_cart_activity_at": format_ms(last or since),
                "threshold_ms": self.cart_after,
            }
        elif kind == ACCOUNT_HOT:
            engagement = self._engagement
            details = {
                "phase": self._phases[phase] if phase >= 0 else None,
                "score": (last or 0) / 1_000_000,
                "hot": engagement.hot,
                "warm": engagement.warm,
                "half_life_ms": engagement.half_life,
            }
        elif kind == REORDER_DUE:
            usual = last or 0
            details = {
                "phase": self._phases[phase],
                "last_order_at": format_ms(since),
                "median_days": round(usual / 86_400_000, 1),
                "threshold_ms": int(usual * self.reorder_factor),
            }
        else:
            details = {
                "phase": self._phases[phase],
                "open_since": format_ms(since),
                "last_activity_at": format_ms(last) if last is not None else None,
                "threshold_ms": self.stall_after,
            }
        return AlertRow(
            aid, kind, account, raised_at, orjson.dumps(details).decode(), version,
            resolved_at=resolved_at, withdrawn=withdrawn, generation=self.generation,
        )  # fmt: skip

    @staticmethod
    def diff(
        old: dict[str, Alert] | None, new: dict[str, Alert] | None
    ) -> list[tuple[str, Alert, bool]]:
        """(alert_id, alert, withdrawn) for every alert that differs between two folds."""
        old, new = old or {}, new or {}
        changes = [(aid, a, False) for aid, a in new.items() if old.get(aid) != a]
        changes.extend((aid, a, True) for aid, a in old.items() if aid not in new)
        return changes

    @staticmethod
    def prune(f: Fold, bound: int, into: dict[str, Alert] | None = None) -> None:
        """Forget alerts closed at or before `bound`: no event later than it can change
        them (a late event folds the journey again from its archive). They go `into` the
        holder's closed alerts, when given."""
        if f.alerts:
            done = [aid for aid, a in f.alerts.items() if a[2] is not None and a[2] <= bound]
            for aid in done:
                alert = f.alerts.pop(aid)
                if into is not None:
                    into[aid] = alert
            if not f.alerts:
                f.alerts = None
