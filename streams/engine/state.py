"""Per-journey state: what the engine keeps for one account or one unidentified visitor.

A journey is the account's set of events. Its state has three parts:

- *Aggregates* that do not depend on order (event count, first time seen,
  contacts, DMU roles). Any event updates them whenever it comes.
- A *tail*: the journey's recent events as `(ts, event_id, type code, segment)`,
  sorted, for everything later than the holder's `bound`. The tail is the
  dedupe window (an event_id in it is a redelivery) and what a late event is
  folded back in with.
- Two `Fold`s: `base`, the order-dependent state (trajectory, cart and deal
  episodes, alerts, the latest segment, the engagement score and its hot episode) after
  every event up to `bound`, and `cur`, the same
  after the whole tail. `cur` is always `base` folded over the tail in
  (ts, event_id) order; an event in order extends `cur`, an event out of
  order makes the engine fold `cur` again from `base` and publish the
  difference.

A phase history is kept as its *trajectory*: one entry per phase entered, in
order. Two trajectories of one journey merge by taking, for each phase, the
earlier moment it was reached, and keeping the entries that still raise the
phase; for unconditional rules that is order-free by construction.
"""

from __future__ import annotations

from typing import Any

import orjson

#: One trajectory entry: (phase index, ts ms, event_id, event type, channel).
Step = tuple[int, int, str, str, str]
#: The code of an event's (channel, type): an int for known types, "channel.type" otherwise.
Code = int | str
#: One tail entry: (ts ms, event_id, type code, segment or None).
Entry = tuple[int, str, Code, str | None]
#: One alert of a journey: (kind, raised_at, resolved_at, since, last, phase).
#: Cart: `since` is the episode's first add, `last` its last cart activity.
#: Stall: `since` is when the deal opened, `last` the last account activity, `phase` the
#: phase it stalled in. Hot: `since` is the event that heated the account, `last` the
#: score then in millionths. Everything an alert row shows is derived from it.
Alert = tuple[str, int, int | None, int, int | None, int]

# Ranks of journey holders: which identity wins when two are found to be one.
RANK_ANONYMOUS = 0
RANK_CONTACT = 1
RANK_FREE_MAIL = 2
RANK_DOMAIN = 3
RANK_ACCOUNT = 4
#: Holders of at least this rank are accounts; lower ones are visitors awaiting identity.
ACCOUNT_RANK = RANK_FREE_MAIL

#: At most this many aliases are remembered for an unidentified visitor.
MAX_VISITOR_ALIASES = 16
#: At most this many conditional-rule candidates are kept before the tail (see `Fold.cands`).
MAX_CANDIDATES = 4

CART_ABANDONED = "cart_abandoned"
DEAL_STALLED = "deal_stalled"
REORDER_DUE = "reorder_due"
ACCOUNT_HOT = "account_hot"
#: Codes of alert kinds. Checkpoints store them: append only.
_KIND_CODES = {CART_ABANDONED: 0, DEAL_STALLED: 1, REORDER_DUE: 2, ACCOUNT_HOT: 3}
_KINDS = (CART_ABANDONED, DEAL_STALLED, REORDER_DUE, ACCOUNT_HOT)
#: A loyal account's usual interval between orders is the median of this many last ones.
MAX_INTERVALS = 5

#: Codes of known (channel, type) pairs. Checkpoints store them: append only.
TYPE_CODES: tuple[str, ...] = (
    "web.add_to_cart", "web.checkout_started", "web.compare", "web.content_view",
    "web.form_submit", "web.login", "web.page_view", "web.pricing_view", "web.product_view",
    "web.remove_from_cart", "web.review_view", "web.search", "web.signup", "web.survey_response",
    "email.bounce", "email.click", "email.delivered", "email.open", "email.reply", "email.sent",
    "email.spam_report", "email.unsubscribe", "order.invoice_paid", "order.invoice_sent",
    "order.order_delivered", "order.order_placed", "order.order_returned", "order.order_shipped",
    "order.quote_accepted", "order.quote_rejected", "order.quote_requested", "order.quote_sent",
    "sales.call", "sales.deal_lost", "sales.deal_stage_changed", "sales.deal_won", "sales.demo",
    "sales.meeting", "email.deferred",
)  # fmt: skip
_CODE_OF = {name: i for i, name in enumerate(TYPE_CODES)}
#: Defaults of a stored fold's fields, in `Fold.to_list` order (trailing ones are left out).
_FOLD_DEFAULTS: tuple[Any, ...] = (
    [], None, None, None, None, None, None, None, None, None, None, 0, 0, 0, None, None, 0, 0,
    None, 0, None, None, 0.0, None,
)  # fmt: skip
_NO_BOUND = -(2**62)


def _before(reference: int, ts: int | None) -> int | None:
    """A time stored as how long before `reference` it is (small where they are close)."""
    return None if ts is None else reference - ts


def _after(reference: int, back: int | None) -> int | None:
    """The inverse of `_before`."""
    return None if back is None else reference - back


def _steps(times: list[int]) -> list[int]:
    """Sorted times as the first one and the steps between them."""
    return [times[0], *(b - a for a, b in zip(times, times[1:], strict=False))]


def _unsteps(steps: list[int]) -> list[int]:
    """The inverse of `_steps`."""
    times, ts = [], 0
    for step in steps:
        ts += step
        times.append(ts)
    return times


def _is_default(value: Any, default: Any) -> bool:
    return value is None if default is None else value is not None and value == default


def type_code(channel: str, type_: str) -> Code:
    """The code of an event's (channel, type)."""
    name = f"{channel}.{type_}"
    return _CODE_OF.get(name, name)


def type_name(code: Code) -> tuple[str, str]:
    """(channel, type) of a code."""
    name = TYPE_CODES[code] if isinstance(code, int) else code
    channel, _, type_ = name.partition(".")
    return channel, type_


def entry_list(entry: Entry) -> list[Any]:
    """A tail entry as stored: the segment left out when there is none."""
    return list(entry) if entry[3] is not None else [entry[0], entry[1], entry[2]]


def entry_of(data: list[Any]) -> Entry:
    """The inverse of `entry_list`."""
    return (data[0], data[1], data[2], data[3] if len(data) > 3 else None)


def pack_tail(tail: list[Entry]) -> list[Any]:
    """A sorted tail as stored: times as steps from the one before, and a segment only
    where it changes (0: the same as the last one named; absent: none)."""
    packed: list[Any] = []
    previous_ts, previous_segment = 0, None
    for ts, event_id, code, segment in tail:
        item: list[Any] = [ts - previous_ts, event_id, code]
        if segment is not None:
            item.append(0 if segment == previous_segment else segment)
            previous_segment = segment
        packed.append(item)
        previous_ts = ts
    return packed


def unpack_tail(packed: list[Any]) -> list[Entry]:
    """The inverse of `pack_tail`."""
    tail: list[Entry] = []
    ts, named = 0, None
    for item in packed:
        ts += item[0]
        segment = None
        if len(item) > 3:
            segment = named if item[3] == 0 else item[3]
            named = segment
        tail.append((ts, item[1], item[2], segment))
    return tail


class Fold:
    """The order-dependent part of a journey at one point of its event sequence."""

    __slots__ = (
        "traj", "seen", "act", "cart_start", "cart_last", "cart_armed", "cart_alerted",
        "deal_open", "stalls", "stall_alerted", "stall_skip", "alerts", "fired", "cands",
        "segment", "segment_ts", "orders", "reorder_alerted", "reorder_skip", "cart_event",
        "deal_event", "order_event", "score", "hot",
    )  # fmt: skip

    def __init__(self) -> None:
        self.traj: list[Step] = []
        #: Latest event time, and latest time of account activity (not supplier actions).
        self.seen: int | None = None
        self.act: int | None = None
        #: The open cart episode: when it started, its last cart activity, whether a
        #: deadline is running (cleared by checkout) and whether it was alerted.
        self.cart_start: int | None = None
        self.cart_last = 0
        self.cart_armed = False
        self.cart_alerted = False
        #: The open deal: since when, how many stalls it had, whether one is raised now,
        #: and the quiet-period start a stall was skipped for (account past the stall phases).
        self.deal_open: int | None = None
        self.stalls = 0
        self.stall_alerted = False
        self.stall_skip: int | None = None
        #: alert_id -> Alert: open alerts, and closed ones that a late event could still change.
        self.alerts: dict[str, Alert] | None = None
        #: The latest deadline whose timer ran: an event at or before it comes too late to
        #: be appended, the journey is folded again.
        self.fired: int | None = None
        #: Events with a conditional rule not met when they happened (the latest few), so
        #: an older event that meets the condition later can still promote them.
        self.cands: list[Entry] | None = None
        #: The segment of the latest event that named one, and that event's time.
        self.segment: str | None = None
        self.segment_ts: int | None = None
        #: The account's last orders (at most `MAX_INTERVALS` + 1 times), whether the next
        #: one is overdue and alerted, and the last order a reorder was skipped for (the
        #: account was not loyal when it fell due).
        self.orders: list[int] | None = None
        self.reorder_alerted = False
        self.reorder_skip: int | None = None
        #: The events that opened the cart episode and the deal, and the last order: what
        #: their alerts' ids name.
        self.cart_event: str | None = None
        self.deal_event: str | None = None
        self.order_event: str | None = None
        #: The engagement score just after the latest activity event (at `act`; see
        #: `Phases.step`), and the event that heated the account if a hot episode is open.
        self.score = 0.0
        self.hot: str | None = None

    @property
    def phase(self) -> int:
        """Index of the current phase, -1 before the journey started."""
        return self.traj[-1][0] if self.traj else -1

    def copy(self) -> Fold:
        """An independent copy (trajectory, alerts and candidates are copied too)."""
        other = Fold.__new__(Fold)
        other.traj = list(self.traj)
        other.seen, other.act = self.seen, self.act
        other.cart_start, other.cart_last = self.cart_start, self.cart_last
        other.cart_armed, other.cart_alerted = self.cart_armed, self.cart_alerted
        other.deal_open, other.stalls = self.deal_open, self.stalls
        other.stall_alerted, other.stall_skip = self.stall_alerted, self.stall_skip
        other.alerts = None if self.alerts is None else dict(self.alerts)
        other.fired = self.fired
        other.cands = None if self.cands is None else list(self.cands)
        other.segment, other.segment_ts = self.segment, self.segment_ts
        other.orders = None if self.orders is None else list(self.orders)
        other.reorder_alerted, other.reorder_skip = self.reorder_alerted, self.reorder_skip
        other.cart_event, other.deal_event = self.cart_event, self.deal_event
        other.order_event = self.order_event
        other.score, other.hot = self.score, self.hot
        return other

    def to_list(self) -> list[Any]:
        """A compact JSON-able form: step times as steps from the one before, fields that
        are rarely set last and left out while at their defaults."""
        traj, previous = [], 0
        for phase, ts, event_id, type_, channel in self.traj:
            traj.append([phase, ts - previous, event_id, type_code(channel, type_)])
            previous = ts
        seen = self.seen or 0
        data = [
            traj, self.seen, _before(seen, self.act), self.segment,
            _before(seen, self.segment_ts),
            None if self.cands is None else [entry_list(c) for c in self.cands],
            None if self.orders is None else _steps(self.orders), self.order_event,
            self.fired, self.cart_start, self.cart_event, self.cart_last, int(self.cart_armed),
            int(self.cart_alerted), self.deal_open, self.deal_event, self.stalls,
            int(self.stall_alerted), self.stall_skip, int(self.reorder_alerted),
            self.reorder_skip,
            None if self.alerts is None
            else [[k, _KIND_CODES[a[0]], *a[1:]] for k, a in self.alerts.items()],
            self.score, self.hot,
        ]  # fmt: skip
        while len(data) > 1 and _is_default(data[-1], _FOLD_DEFAULTS[len(data) - 1]):
            data.pop()
        return data

    @classmethod
    def from_list(cls, data: list[Any]) -> Fold:
        """The inverse of `to_list`."""
        full = data + list(_FOLD_DEFAULTS[len(data) :])
        fold = cls.__new__(cls)
        (traj, fold.seen, fold.act, fold.segment, fold.segment_ts, cands, orders,
         fold.order_event, fold.fired, fold.cart_start, fold.cart_event, fold.cart_last, armed,
         alerted, fold.deal_open, fold.deal_event, fold.stalls, stalled, fold.stall_skip,
         reordered, fold.reorder_skip, alerts, fold.score, fold.hot) = full  # fmt: skip
        fold.orders = None if orders is None else _unsteps(orders)
        fold.reorder_alerted = bool(reordered)
        seen = fold.seen or 0
        fold.act, fold.segment_ts = _after(seen, fold.act), _after(seen, fold.segment_ts)
        fold.traj = []
        ts = 0
        for phase, step, event_id, code in traj:
            ts += step
            channel, type_ = type_name(code)
            fold.traj.append((phase, ts, event_id, type_, channel))
        fold.cart_armed, fold.cart_alerted = bool(armed), bool(alerted)
        fold.stall_alerted = bool(stalled)
        fold.alerts = (
            None if alerts is None
            else {a[0]: (_KINDS[a[1]], a[2], a[3], a[4], a[5], a[6]) for a in alerts}
        )  # fmt: skip
        fold.cands = None if cands is None else [entry_of(c) for c in cands]
        return fold


class Holder:
    """The state of one journey (an account, or a visitor not yet identified)."""

    __slots__ = (
        "key", "rank", "first_seen", "events", "contacts", "dmu", "bound", "base", "tail",
        "aliases", "cur", "pending", "wake",
    )  # fmt: skip

    def __init__(self, key: str, rank: int, ts: int) -> None:
        self.key = key
        self.rank = rank
        self.first_seen = ts
        self.events = 0
        self.contacts = 0
        self.dmu = 0
        #: Events at or before this time are folded into `base`; later ones are in `tail`.
        self.bound = _NO_BOUND
        self.base = Fold()
        self.tail: list[Entry] = []
        #: Alias keys of an unidentified visitor, for links and eviction.
        self.aliases: list[str] | None = None
        # Not stored: derived from base and tail when a checkpoint is read. While the tail
        # is empty, `cur` may be `base` itself (copied before either changes).
        self.cur = self.base
        self.pending = False
        self.wake: int | None = None

    @property
    def is_account(self) -> bool:
        """Whether this journey is an account's (rows are written only for accounts)."""
        return self.rank >= ACCOUNT_RANK

    @property
    def traj(self) -> list[Step]:
        """The current trajectory."""
        return self.cur.traj

    @property
    def phase(self) -> int:
        """Index of the current phase, -1 before the journey started."""
        return self.cur.phase

    @property
    def last_seen(self) -> int:
        """Latest event time of the journey."""
        return self.cur.seen if self.cur.seen is not None else self.first_seen

    def to_bytes(self) -> bytes:
        """A compact serialisation (what a checkpoint stores), without the key.

        `cur` is stored only while the journey waits to be folded again (it is what was
        published); otherwise it is `base` folded over `tail`.
        """
        data = [
            self.rank, self.first_seen, self.events, self.contacts, self.dmu,
            None if self.bound == _NO_BOUND else self.bound, self.base.to_list(),
            pack_tail(self.tail), self.aliases, self.cur.to_list() if self.pending else None,
        ]  # fmt: skip
        while data[-1] is None:
            data.pop()
        return orjson.dumps(data)

    @classmethod
    def from_bytes(cls, data: bytes, key: str = "") -> Holder:
        """The inverse of `to_bytes`; the restoring engine rebuilds `cur` if not stored.

        The key is not stored (it is the checkpoint's own key for the holder): give it here,
        or `JourneyEngine.restore` puts it back from the mapping it gets.
        """
        values: list[Any] = orjson.loads(data)
        values += [None] * (10 - len(values))
        holder = cls.__new__(cls)
        holder.key = key
        (holder.rank, holder.first_seen, holder.events, holder.contacts, holder.dmu, bound,
         base, tail, holder.aliases, cur) = values  # fmt: skip
        holder.bound = _NO_BOUND if bound is None else bound
        holder.base = Fold.from_list(base)
        holder.tail = unpack_tail(tail or [])
        holder.pending = cur is not None
        holder.cur = Fold.from_list(cur) if cur is not None else holder.base
        holder.wake = None
        return holder


def merge_trajectories(a: list[Step], b: list[Step]) -> list[Step]:
    """The trajectory of one journey made of two: earliest moment per phase, rises only."""
    best: dict[int, Step] = {}
    for step in (*a, *b):
        seen = best.get(step[0])
        if seen is None or (step[1], step[2]) < (seen[1], seen[2]):
            best[step[0]] = step
    merged: list[Step] = []
    for step in sorted(best.values(), key=lambda s: (s[1], s[2], s[0])):
        if not merged or step[0] > merged[-1][0]:
            merged.append(step)
    return merged


def phase_before(traj: list[Step], ts: int, event_id: str) -> int:
    """The phase a trajectory had just before (ts, event_id); -1 before it started."""
    phase = -1
    for step in traj:
        if (step[1], step[2]) >= (ts, event_id):
            break
        phase = step[0]
    return phase


def trajectory_rows(traj: list[Step]) -> dict[int, tuple[int, Step]]:
    """Per entered phase: (previous phase index or -1, the step), for diffing."""
    rows: dict[int, tuple[int, Step]] = {}
    previous = -1
    for step in traj:
        rows[step[0]] = (previous, step)
        previous = step[0]
    return rows
