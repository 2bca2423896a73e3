"""Realistic synthetic B2B journeys, seeded and fast: the data for the demo, tests and benchmarks.

Each simulated company (a Dutch grower, installer, wholesaler or garden
centre; see `simulator_world`) has a segment, a business email domain (sole
traders use free-mail), an ERP account id for some, and a decision making
unit of contacts. Its journey (`simulator_plot`) goes as far as a realistic
funnel lets it: anonymous research, the sign-up that stitches the cookie to
the contact, newsletters, product and pricing research, account-manager
calls, meetings and demos, quotes, carts (some abandoned), orders paid on
invoice, shipments, invoices, surveys and repeat orders; some deals stall.

Like a real feed, a small share of events have no event_id (the schema
derives one), are delivered twice, or come with a malformed line beside them
(`simulator_noise`, every one of which fails validation).

`simulate(...)` yields one JSON line per event (bytes, no newline) in
event-time order; the same arguments give byte-identical output. It only
generates: writing to a file or to Kafka is the caller's business.
"""

from __future__ import annotations

import random
from bisect import bisect_left
from collections.abc import Iterator
from datetime import UTC, datetime
from itertools import accumulate
from operator import itemgetter

import orjson

from journeys.producers.simulator_noise import malformed
from journeys.producers.simulator_plot import campaigns, tell
from journeys.producers.simulator_story import (
    ANONYMOUS_ONLY,
    CONSIDERATION,
    DAY,
    DECISION,
    LOYALTY,
    PURCHASE,
    Plan,
    Raw,
    Story,
)
from journeys.producers.simulator_world import Company, make_company

DEFAULT_START = datetime(2026, 1, 5, tzinfo=UTC)
#: Event time merged and sorted at a time (bounds memory; larger windows sort fewer times).
WINDOW = 7 * DAY
#: How far accounts get: ANONYMOUS_ONLY, then awareness .. loyalty (a funnel, cut further
#: by the end of the period for accounts that start late).
DEPTHS: tuple[int, ...] = (ANONYMOUS_ONLY, 0, 1, 2, 3, 4, 5)
DEPTH_WEIGHTS: tuple[int, ...] = (12, 16, 17, 13, 5, 8, 29)
_DEPTH_CUMULATIVE: tuple[int, ...] = tuple(accumulate(DEPTH_WEIGHTS))


def choose_plan(rnd: random.Random, company: Company) -> Plan:
    """Where this account's journey ends and what happens on the way."""
    depth = rnd.choices(DEPTHS, cum_weights=_DEPTH_CUMULATIVE)[0]
    sales_led = rnd.random() < (0.6 if company.erp_id else 0.3)
    return Plan(
        depth=depth,
        sales_led=sales_led,
        stall_then_revive=sales_led and depth >= DECISION and rnd.random() < 0.35,
        abandon_then_return=not sales_led and depth >= DECISION and rnd.random() < 0.35,
        existing_customer=depth == LOYALTY and rnd.random() < 0.25,
    )


def _begin(rnd: random.Random, plan: Plan, t0: int, days: int) -> int:
    """When the account's first event happens: deep journeys need time, so they start earlier."""
    if plan.existing_customer:
        return t0 + rnd.randrange(2 * DAY)
    share = 0.9 if plan.depth <= CONSIDERATION else 0.6 if plan.depth <= PURCHASE else 0.4
    return t0 + int(rnd.random() ** 1.3 * share * days * DAY)


class _Clock:
    """Formats epoch milliseconds as the contract's ISO 8601 UTC from cached day and minute text."""

    _MINUTES: tuple[bytes, ...] = tuple(b"%02d:%02d:" % divmod(m, 60) for m in range(1440))

    def __init__(self) -> None:
        self._days: dict[int, bytes] = {}

    def __call__(self, ts: int) -> bytes:
        """`2026-01-05T09:15:00.000Z` for the given milliseconds."""
        day, rest = divmod(ts, DAY)
        prefix = self._days.get(day)
        if prefix is None:
            prefix = datetime.fromtimestamp(day * 86_400, tz=UTC).strftime("%Y-%m-%dT").encode()
            self._days[day] = prefix
        minute, ms = divmod(rest, 60_000)
        return b"%s%s%06.3fZ" % (prefix, self._MINUTES[minute], ms / 1000)


def _check(accounts: int, days: int, start: datetime, shares: tuple[float, ...]) -> None:
    if accounts < 0 or days < 0:
        raise ValueError("accounts and days must not be negative")
    if start.tzinfo is None or start.utcoffset() is None:
        raise ValueError("start must be timezone-aware (e.g. 2026-01-05T00:00:00Z)")
    if not all(0.0 <= share < 1.0 for share in shares) or sum(shares) >= 1.0:
        raise ValueError("shares must be in [0, 1) and together below 1")


def account_streams(
    accounts: int, days: int, seed: int, start: datetime
) -> Iterator[tuple[int, list[Raw]]]:
    """Each account's first moment and events, built lazily in order of first moment.

    Every account has its own random stream, so an account is the same whatever the
    number of accounts simulated beside it.
    """
    t0 = int(start.timestamp()) * 1000 + start.microsecond // 1000
    end = t0 + days * DAY
    sends = campaigns(t0, end)
    pending = []
    for index in range(accounts):
        rnd = random.Random(f"journeys-simulator:{seed}:{index}")
        company = make_company(rnd, index)
        plan = choose_plan(rnd, company)
        pending.append((_begin(rnd, plan, t0, days), index, rnd, company, plan))
    pending.sort(key=lambda item: (item[0], item[1]), reverse=True)
    while pending:  # popped, so a told account's company can be freed
        begin, _index, rnd, company, plan = pending.pop()
        prefix = b"e%016x" % rnd.getrandbits(64)
        yield begin, tell(Story(company, rnd, begin, end, sends, prefix), plan)


def _windows(streams: Iterator[tuple[int, list[Raw]]], window: int = WINDOW) -> Iterator[list[Raw]]:
    """All accounts' events in time order, a window of event time at a time.

    An account is built only when its first moment falls in the current window; each
    window's events are gathered per account and sorted once (stably, so equal times
    keep the order of accounts and of events within one account).
    """
    active: list[tuple[list[Raw], list[int], list[int]]] = []  # (events, times, [next])
    upcoming = next(streams, None)
    if upcoming is None:
        return
    until = upcoming[0] - upcoming[0] % window + window
    first = itemgetter(0)
    while active or upcoming is not None:
        while upcoming is not None and upcoming[0] < until:
            events = upcoming[1]
            if events:
                active.append((events, [event[0] for event in events], [0]))
            upcoming = next(streams, None)
        batch: list[Raw] = []
        keep = []
        for entry in active:
            events, times, cursor = entry
            pos = cursor[0]
            stop = bisect_left(times, until, pos)
            if stop > pos:
                batch += events[pos:stop]
                cursor[0] = stop
            if stop < len(events):
                keep.append(entry)
        active = keep
        batch.sort(key=first)
        if batch:
            yield batch
        until += window


def simulate(
    accounts: int = 200,
    days: int = 90,
    seed: int = 7,
    start: datetime | None = None,
    invalid_share: float = 0.005,
    duplicate_share: float = 0.003,
    missing_id_share: float = 0.02,
) -> Iterator[bytes]:
    """JSON lines of simulated events in event-time order (see the module docstring).

    `invalid_share` of the lines are malformed; `duplicate_share` of the events are
    delivered twice (same bytes); `missing_id_share` come without an event_id.
    """
    start = DEFAULT_START if start is None else start
    _check(accounts, days, start, (invalid_share, duplicate_share, missing_id_share))
    noise = random.Random(f"journeys-simulator-noise:{seed}")
    extra = invalid_share / (1.0 - invalid_share)  # malformed lines come on top of the events
    dup_to = extra + duplicate_share
    missing_to = dup_to + missing_id_share
    when = _Clock()
    roll_of = noise.random
    for batch in _windows(account_streams(accounts, days, seed, start)):
        for ts, event_id, tail in batch:
            roll = roll_of()
            if roll >= missing_to:
                yield b'{"event_id":"%s","occurred_at":"%s",%s' % (event_id, when(ts), tail)
            elif roll < extra:
                line = b'{"event_id":"%s","occurred_at":"%s",%s' % (event_id, when(ts), tail)
                yield malformed(noise, orjson.loads(line))
                yield line
            elif roll < dup_to:
                line = b'{"event_id":"%s","occurred_at":"%s",%s' % (event_id, when(ts), tail)
                yield line
                yield line
            else:
                yield b'{"occurred_at":"%s",%s' % (when(ts), tail)
