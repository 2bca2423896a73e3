"""Per-journey state: what the engine keeps for one account or one unidentified visitor.

A journey is the account's set of events. Its state has three parts:

- *Aggregates* that do not depend on order (event count, first time seen,
  contacts, DMU roles). Any event updates them whenever it comes.
- A *tail*: the journey's recent events as `(ts, event_id, type code, segment,
  DMU role bit)`, sorted, for everything later than the holder's `bound` (at
  most `MAX_TAIL`: a busier journey moves its bound up).
- An *archive* (`Archive`): every event at or before `bound`, packed in chunks
  of at most `CHUNK_EVENTS` entries (at most ~128 KiB each, see `MAX_SEGMENT`),
  unpacked only to fold the journey again from its start. With the tail it is
  the journey's whole set of events, forever: a fingerprint index over it
  (`Holder.index`, 8-byte BLAKE2b of each event_id, never Python's `hash`)
  makes dedupe exact at any age, and a late, moved, merged or erased event
  makes the engine fold the journey again from the archive, exactly as sorted
  replay does.
- Two `Fold`s: `base`, the order-dependent state (trajectory, cart and deal
  episodes, alerts, the latest segment, the engagement score and its hot episode) after
  every event up to `bound`, and `cur`, the same
  after the whole tail. `cur` is always `base` folded over the tail in
  (ts, event_id) order; an event in order extends `cur`, an event out of
  order makes the engine fold `cur` again from `base` (or, for an event at or
  before `bound`, `base` again from the archive) and publish the difference.

A holder is stored as bounded records (see `PartitionEngine.changes`): the
small part (`to_bytes`: aggregates, folds, tail) and one record per archive
chunk (`Archive.chunk`), immutable once full.

A phase history is kept as its *trajectory*: one entry per phase entered, in
order.
"""

from __future__ import annotations

import hashlib
import sys
from array import array
from bisect import bisect_left
from collections.abc import Iterable
from typing import Any

import orjson

#: One trajectory entry: (phase index, ts ms, event_id, event type, channel).
Step = tuple[int, int, str, str, str]
#: The code of an event's (channel, type): an int for known types, "channel.type" otherwise.
Code = int | str
#: One tail or archive entry: (ts ms, event_id, type code, segment or None, DMU role bit).
Entry = tuple[int, str, Code, str | None, int]
#: A conditional-rule candidate of old checkpoints: (ts ms, event_id, type code, None).
Cand = tuple[int, str, Code, str | None]
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
#: A segment longer than this many characters is cut to it in journey state and rows (the
#: stored event keeps its context whole): one journey's state stays bounded whatever its
#: events carry.
MAX_SEGMENT = 256
#: A journey keeps at most this many events in its tail; beyond it, all but the last
#: `KEEP_TAIL` move to the archive (its bound moves up), so its small record stays small.
MAX_TAIL = 512
KEEP_TAIL = 64
#: Events per archive chunk: with event_ids of at most 128 characters, type codes of at
#: most ~80 and segments of at most `MAX_SEGMENT`, a chunk stays below 128 KiB.
CHUNK_EVENTS = 256

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
#: `Holder.pending`: fold `cur` again from `base`, or everything again from the archive.
TAIL, FULL = 1, 2
#: Events archived since a journey's fingerprint index was built are merged into it by
#: this many.
_FRESH = 256


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
    """(channel, type) of a code: the same two strings for every entry of a type (a
    restored engine holds one copy per type, not one per trajectory step)."""
    names = _TYPE_NAMES.get(code)
    if names is None:
        name = TYPE_CODES[code] if isinstance(code, int) else code
        channel, _, type_ = name.partition(".")
        names = (sys.intern(channel), sys.intern(type_))
        if isinstance(code, int) or len(_TYPE_NAMES) < _MAX_TYPE_NAMES:
            _TYPE_NAMES[code] = names
    return names


#: (channel, type) by code, shared; custom types ("channel.type" codes) up to a bound, so a
#: sender inventing types cannot grow it without end.
_TYPE_NAMES: dict[Code, tuple[str, str]] = {}
_MAX_TYPE_NAMES = 10_000


def entry_list(entry: Cand) -> list[Any]:
    """A candidate as stored: the segment left out when there is none."""
    return list(entry) if entry[3] is not None else [entry[0], entry[1], entry[2]]


def entry_of(data: list[Any]) -> Cand:
    """The inverse of `entry_list`."""
    return (data[0], data[1], data[2], data[3] if len(data) > 3 else None)


def pack_tail(tail: Iterable[Entry]) -> list[Any]:
    """Entries as stored: times as steps from the one before (negative where not sorted),
    a segment only where it changes (0: the same as the last one named; None or absent:
    none), and the DMU role bit last where there is one."""
    packed: list[Any] = []
    previous_ts, previous_segment = 0, None
    for ts, event_id, code, segment, role in tail:
        item: list[Any] = [ts - previous_ts, event_id, code]
        if segment is not None:
            item.append(0 if segment == previous_segment else segment)
            previous_segment = segment
        if role:
            if segment is None:
                item.append(None)
            item.append(role)
        packed.append(item)
        previous_ts = ts
    return packed


def unpack_tail(packed: list[Any]) -> list[Entry]:
    """The inverse of `pack_tail`."""
    tail: list[Entry] = []
    ts, named = 0, None
    for item in packed:
        ts += item[0]
        segment, role = None, 0
        if len(item) > 3:
            mark = item[3]
            if mark is not None:
                segment = named if mark == 0 else mark
                named = segment
            if len(item) > 4:
                role = item[4]
        tail.append((ts, item[1], item[2], segment, role))
    return tail


#: Bound once: `fingerprint` runs about once per event.
_blake2b = hashlib.blake2b
_from_bytes = int.from_bytes


def fingerprint(event_id: str) -> int:
    """A journey's dedupe key of an event: 8 bytes of BLAKE2b, the same in every process.

    Two event_ids of one journey share one with odds of about n^2 / 2^65 (1 in 10^8 for a
    journey of a million events); the later one would be taken for a redelivery."""
    return _from_bytes(_blake2b(event_id.encode(), digest_size=8).digest(), "little", signed=True)


def by_time(entry: Entry) -> tuple[int, str]:
    """The order events are folded in."""
    return entry[0], entry[1]


class Index:
    """Fingerprints of a journey's archived events and the events' times, in two sorted
    runs searched by bisection: the old events, and recent ones (cheap to insert into),
    merged into the first once more than `_FRESH` and an eighth of it (so an event costs
    a few steps of merging however large the journey)."""

    __slots__ = ("fps", "fts", "new_fps", "new_fts")

    def __init__(self, pairs: list[tuple[int, int]] | None = None) -> None:
        pairs = sorted(pairs or ())
        self.fps = array("q", [p[0] for p in pairs])
        self.fts = array("q", [p[1] for p in pairs])
        self.new_fps: array[int] = array("q")
        self.new_fts: array[int] = array("q")

    def get(self, fp: int) -> int | None:
        """The time of the event with fingerprint `fp`, None if there is none."""
        fps = self.fps
        i = bisect_left(fps, fp)
        if i < len(fps) and fps[i] == fp:
            return self.fts[i]
        fps = self.new_fps
        i = bisect_left(fps, fp)
        if i < len(fps) and fps[i] == fp:
            return self.new_fts[i]
        return None

    def add(self, fp: int, ts: int) -> None:
        """One more event."""
        new_fps = self.new_fps
        i = bisect_left(new_fps, fp)
        new_fps.insert(i, fp)
        self.new_fts.insert(i, ts)
        if len(new_fps) > _FRESH and len(new_fps) > len(self.fps) >> 3:
            pairs = sorted(
                [
                    *zip(self.fps, self.fts, strict=True),
                    *zip(self.new_fps, self.new_fts, strict=True),
                ]
            )
            self.fps = array("q", [p[0] for p in pairs])
            self.fts = array("q", [p[1] for p in pairs])
            self.new_fps, self.new_fts = array("q"), array("q")


class Archive:
    """A journey's events at or before its bound, packed in chunks of `CHUNK_EVENTS`.

    A chunk is a JSON list of groups, each packed by `pack_tail`, so events are
    added to the last chunk without unpacking it; every chunk but the last is
    full and never changes unless an event in it moves earlier or is erased. `dirty` is the
    first chunk changed since the state was last saved, `saved` how many chunk
    records the store holds (to delete those left over when it shrinks).
    """

    __slots__ = ("chunks", "last", "count", "dirty", "saved", "expected")

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        #: Entries in the last chunk.
        self.last = 0
        self.count = 0
        self.dirty = 0
        self.saved = 0
        #: Chunks a small record names that are not loaded yet (see `Holder.load_chunks`).
        self.expected = 0

    def __len__(self) -> int:
        return self.count

    def add(self, entries: list[Entry]) -> None:
        """Keep more events (in any order)."""
        if not entries:
            return
        chunks = self.chunks
        start = 0
        if chunks and self.last < CHUNK_EVENTS:
            room = CHUNK_EVENTS - self.last
            part = entries[:room]
            chunks[-1] = b"".join((chunks[-1][:-1], b",", orjson.dumps(pack_tail(part)), b"]"))
            self.dirty = min(self.dirty, len(chunks) - 1)
            self.last += len(part)
            start = room
        for i in range(start, len(entries), CHUNK_EVENTS):
            part = entries[i : i + CHUNK_EVENTS]
            self.dirty = min(self.dirty, len(chunks))
            chunks.append(b"[" + orjson.dumps(pack_tail(part)) + b"]")
            self.last = len(part)
        self.count += len(entries)

    def entries(self) -> list[Entry]:
        """Every event kept, in no particular order."""
        out: list[Entry] = []
        for chunk in self.chunks:
            for group in orjson.loads(chunk):
                out += unpack_tail(group)
        return out

    def replace(self, entries: list[Entry]) -> None:
        """Keep exactly these events (after a move, an erasure or a merge)."""
        self.chunks, self.last, self.count = [], 0, 0
        self.dirty = self.expected = 0
        self.add(entries)

    def move(self, event_id: str, entry: Entry) -> bool:
        """Replace the event `event_id` by `entry` (its earlier delivery); False if absent."""
        needle = orjson.dumps(event_id)
        for n, chunk in enumerate(self.chunks):
            if needle not in chunk:
                continue
            items = [e for group in orjson.loads(chunk) for e in unpack_tail(group)]
            for i, old in enumerate(items):
                if old[1] == event_id:
                    items[i] = entry
                    self.chunks[n] = b"[" + orjson.dumps(pack_tail(items)) + b"]"
                    self.dirty = min(self.dirty, n)
                    return True
        return False

    def changed(self) -> list[tuple[int, bytes | None]]:
        """Chunk records to write since the last call: (number, chunk or None to delete)."""
        n = len(self.chunks)
        out: list[tuple[int, bytes | None]] = [(i, self.chunks[i]) for i in range(self.dirty, n)]
        out += [(i, None) for i in range(n, self.saved)]
        self.dirty, self.saved = n, n
        return out


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
        #: Unused (conditional-rule candidates of checkpoints made before journeys kept
        #: their archive); read and written so their layout stays.
        self.cands: list[Cand] | None = None
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
        "aliases", "cur", "pending", "wake", "archive", "idx", "was", "closed", "foreign",
    )  # fmt: skip

    def __init__(self, key: str, rank: int, ts: int) -> None:
        self.key = key
        self.rank = rank
        self.first_seen = ts
        self.events = 0
        self.contacts = 0
        self.dmu = 0
        #: Events at or before this time are folded into `base` (and kept in `archive`);
        #: later ones are in `tail`.
        self.bound = _NO_BOUND
        self.base = Fold()
        self.tail: list[Entry] = []
        #: Alias keys of an unidentified visitor, for links and eviction.
        self.aliases: list[str] | None = None
        self.archive = Archive()
        # Not stored: derived from base and tail when a checkpoint is read. While the tail
        # is empty, `cur` may be `base` itself (copied before either changes).
        self.cur = self.base
        #: 0, or `TAIL` (fold `cur` again from `base`) or `FULL` (fold `base` again from
        #: the archive too) when event time next moves.
        self.pending = 0
        self.wake: int | None = None
        #: The archive's fingerprint index (None: built on first use, see `index`).
        self.idx: Index | None = None
        #: While `FULL` is pending: every alert and the trajectory published for the
        #: journey before (the folding again publishes the difference against them).
        self.was: tuple[dict[str, Alert], list[Step]] | None = None
        #: Alerts in `was` published under a journey merged into this one: published again
        #: under this one's key if the merged history still has them.
        self.foreign: set[str] | None = None
        #: The closed alerts `Alerts.prune` took from the folds (None: not known since the
        #: state was read; the archive is folded to know them).
        self.closed: dict[str, Alert] | None = {}

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

    # ------------------------------------------------------------ the archive index

    def index(self) -> Index:
        """The archive's fingerprint index."""
        if self.idx is None:
            self.idx = Index([(fingerprint(e[1]), e[0]) for e in self.archive.entries()])
        return self.idx

    def archived(self, event_id: str) -> int | None:
        """The time of the archived event `event_id`, None if it is not archived."""
        if not self.archive.count:
            return None
        return self.index().get(fingerprint(event_id))

    def archive_add(self, entries: list[Entry], fps: dict[str, int] | None = None) -> None:
        """Archive events (out of the tail, or older than the bound), index included
        (`fps`: fingerprints computed already, by event_id, taken from it)."""
        if not entries:
            return
        if self.idx is None and not self.archive.count:
            self.idx = Index()
        if self.idx is not None:
            add = self.idx.add
            known = fps.pop if fps else None
            for entry in entries:
                fp = known(entry[1], None) if known is not None else None
                add(fingerprint(entry[1]) if fp is None else fp, entry[0])
        self.archive.add(entries)

    def set_history(self, entries: list[Entry], bound: int) -> None:
        """Keep exactly `entries` (in any order): the archive up to `bound`, the tail after
        it; aggregates that are functions of the events follow."""
        entries.sort(key=by_time)
        n = 0
        while n < len(entries) and entries[n][0] <= bound:
            n += 1
        self.archive.replace(entries[:n])
        self.idx = Index([(fingerprint(e[1]), e[0]) for e in entries[:n]])
        self.closed = None
        self.tail = entries[n:]
        self.bound = bound
        self.events = len(entries)
        if entries:
            self.first_seen = entries[0][0]
        dmu = 0
        for entry in entries:
            dmu |= entry[4]
        self.dmu = dmu

    def history(self) -> list[Entry]:
        """Every event of the journey (archive and tail), unsorted."""
        return [*self.archive.entries(), *self.tail]

    # ------------------------------------------------------------ storage

    def to_bytes(self) -> bytes:
        """The small part of the holder (what its `h:` record stores), without the key and
        without the archive's chunks (their own records; here only how many there are).

        `cur` is stored only while the journey waits to be folded again (it is what was
        published); otherwise it is `base` folded over `tail`.
        """
        archive = self.archive
        data = [
            self.rank, self.first_seen, self.events, self.contacts, self.dmu,
            None if self.bound == _NO_BOUND else self.bound, self.base.to_list(),
            pack_tail(self.tail), self.aliases, self.cur.to_list() if self.pending else None,
            1 if self.pending == FULL else None,
            [max(len(archive.chunks), archive.expected), archive.last, archive.count]
            if archive.count
            else None,
        ]  # fmt: skip
        while data[-1] is None:
            data.pop()
        return orjson.dumps(data)

    @classmethod
    def from_bytes(cls, data: bytes, key: str = "") -> Holder:
        """The inverse of `to_bytes`; the restoring engine rebuilds `cur` if not stored, and
        loads the archive's chunks (`load_chunks`).

        The key is not stored (it is the checkpoint's own key for the holder): give it here,
        or `JourneyEngine.restore` puts it back from the mapping it gets.
        """
        values: list[Any] = orjson.loads(data)
        values += [None] * (12 - len(values))
        holder = cls.__new__(cls)
        holder.key = key
        (holder.rank, holder.first_seen, holder.events, holder.contacts, holder.dmu, bound,
         base, tail, holder.aliases, cur, full, archive) = values  # fmt: skip
        holder.bound = _NO_BOUND if bound is None else bound
        holder.base = Fold.from_list(base)
        holder.tail = unpack_tail(tail or [])
        holder.pending = 0 if cur is None else FULL if full else TAIL
        holder.cur = Fold.from_list(cur) if cur is not None else holder.base
        holder.wake = None
        holder.idx = None
        holder.was = None
        holder.foreign = None
        holder.closed = None
        holder.archive = Archive()
        if archive is not None:
            chunks, holder.archive.last, holder.archive.count = archive
            holder.archive.saved = holder.archive.dirty = holder.archive.expected = chunks
        return holder

    def load_chunks(self, chunks: dict[int, bytes]) -> None:
        """Put back the archive's chunk records (as many as `to_bytes` named)."""
        archive = self.archive
        archive.chunks = [chunks[n] for n in range(archive.expected) if n in chunks]
        archive.expected = 0
        archive.dirty = len(archive.chunks)

    def digest(self) -> str:
        """A digest of the whole state (small part and archive), to know a state sent again."""
        h = hashlib.blake2b(self.to_bytes(), digest_size=8)
        for chunk in self.archive.chunks:
            h.update(chunk)
        return h.hexdigest()


def trajectory_rows(traj: list[Step]) -> dict[int, tuple[int, Step]]:
    """Per entered phase: (previous phase index or -1, the step), for diffing."""
    rows: dict[int, tuple[int, Step]] = {}
    previous = -1
    for step in traj:
        rows[step[0]] = (previous, step)
        previous = step[0]
    return rows
