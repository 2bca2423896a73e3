"""Builders for engine tests: compact events in, FINAL-like tables out."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from journeys.schemas.event import validate_event
from journeys.schemas.record import KNOWN_TYPES, EventRecord
from journeys.schemas.rows import Output
from journeys.sinks.reference import FinalTables, final_tables
from journeys.streams.engine import EngineConfig, JourneyEngine, load_rules

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
HOUR = 3_600_000
DAY = 24 * HOUR

_counter = iter(range(10**9))


def channel_of(type_: str) -> str:
    """The channel a contract type belongs to (web for anything else)."""
    for channel, types in KNOWN_TYPES.items():
        if type_ in types:
            return channel
    return "web"


def ev(type_: str, at: float = 0, *, event_id: str | None = None, **fields: Any) -> EventRecord:
    """An event of `type_` at T0 + `at` hours; identity defaults to account `acme`."""
    if not any(k in fields for k in ("anonymous_id", "contact_id", "email", "account_id")):
        fields["account_id"] = "acme"
    context = {k: fields.pop(k) for k in ("dmu_role", "segment") if k in fields}
    data = {
        "event_id": event_id or f"e{next(_counter):06d}",
        "channel": fields.pop("channel", channel_of(type_)),
        "type": type_,
        "occurred_at": (T0 + timedelta(hours=at)).isoformat(),
        "context": context,
        **fields,
    }
    return validate_event(data)


def ms(hours: float) -> int:
    """Milliseconds of T0 + `hours`."""
    return int((T0 + timedelta(hours=hours)).timestamp() * 1000)


def engine(partitions: int = 1, **config: Any) -> JourneyEngine:
    """An engine with the given thresholds (ms) and rules (default: the built-in ones), in
    `partitions`."""
    config.setdefault("rules", load_rules())
    return JourneyEngine(EngineConfig(**config), partitions)


def run(
    events: list[EventRecord], until: int | None = None, **config: Any
) -> tuple[FinalTables, Output]:
    """Replay semantics: sort, process, advance to the last event (or `until`), collapse
    like FINAL."""
    eng = engine(**config)
    ordered = sorted(events, key=lambda e: (e.ts, e.event_id))
    eng.process_all(ordered)
    if ordered:
        eng.advance_to(ordered[-1].ts if until is None else until)
    out = eng.take()
    return final_tables(out), out


def phases(tables: FinalTables, account: str = "acme") -> list[tuple[str | None, str, int]]:
    """(from, to, at) of an account's transitions, in time order."""
    rows = [t for (a, _), t in tables.transitions.items() if a == account]
    return [
        (t.from_phase, t.to_phase, t.transitioned_at)
        for t in sorted(rows, key=lambda t: t.transitioned_at)
    ]


def arrive(
    deliveries: list[EventRecord],
    *,
    lateness: int | None = None,
    batch: int = 1,
    partitions: int = 1,
    **config: Any,
) -> tuple[FinalTables, Output]:
    """Stream semantics: deliveries in the order given, event time moving like a stream's.

    With `lateness` None every delivery goes through `process` (event time jumps to the
    latest event seen; anything earlier is late). Otherwise deliveries go through
    `process_late` and, after every `batch` of them, event time advances to the latest
    time seen less `lateness`. In the end event time reaches the latest event. Journeys
    are kept in `partitions` partitions.
    """
    eng = engine(partitions, **config)
    out = Output()
    latest = None
    for i, event in enumerate(deliveries, start=1):
        if lateness is None:
            eng.process(event)
        else:
            eng.process_late(event)
        latest = event.ts if latest is None else max(latest, event.ts)
        if lateness is not None and i % batch == 0:
            eng.advance_to(latest - lateness)
        if i % 7 == 0:
            out.extend(eng.take())
    if latest is not None:
        eng.advance_to(latest)
    out.extend(eng.take())
    return final_tables(out), out


def view(tables: FinalTables) -> dict[str, dict[Any, Any]]:
    """What readers see in every table (the `_current` views), without versions.

    Links are compared by the account each alias ends at, following merges (which of
    two merged accounts a row names depends on the order links were learnt), and by
    when the alias was first linked to an account: the earliest moment in event time.
    """
    current = tables.current()
    journeys = {k: replace(j, version=0) for k, j in current["journeys_current"].items()}
    transitions = {
        k: replace(t, version=0) for k, t in current["phase_transitions_current"].items()
    }
    alerts = {k: replace(a, version=0) for k, a in current["alerts_current"].items()}
    events = {k: (e.record, e.account_id) for k, e in current["events_current"].items()}
    links = {}
    for (kind, alias), link in tables.links.items():
        account, seen = link.account_id, set()
        while ("account", account) in tables.links and account not in seen:
            seen.add(account)
            account = tables.links[("account", account)].account_id
        links[(kind, alias)] = (account, link.linked_at)
    return {
        "journeys": journeys,
        "transitions": transitions,
        "alerts": alerts,
        "events": events,
        "links": links,
    }


def realistic_arrival(events: list[EventRecord], seed: int = 1) -> list[EventRecord]:
    """Deliveries of `events` in the order real B2B sources send them.

    Web calls arrive a few seconds late, 2% of them twice (a retrying SDK: same
    event_id, occurred_at moved by up to 3 s); email up to 2 minutes late; half the
    orders in a nightly ERP export (the next day at 02:00), the others from webhooks
    retried for up to 4 hours; sales logged up to a day later.
    """
    import random

    rnd = random.Random(seed)
    deliveries: list[tuple[int, int, EventRecord]] = []
    for i, event in enumerate(events):
        if event.channel == "web":
            deliveries.append((event.ts + rnd.randint(0, 5_000), i, event))
            if rnd.random() < 0.02:
                moved = replace(event, ts=event.ts + rnd.randint(-3_000, 3_000))
                deliveries.append((moved.ts + rnd.randint(2_000, 8_000), -i, moved))
        elif event.channel == "email":
            deliveries.append((event.ts + rnd.randint(0, 120_000), i, event))
        elif event.channel == "order":
            if rnd.random() < 0.5:
                night = (event.ts // DAY + 1) * DAY + 2 * HOUR
                deliveries.append((night, i, event))
            else:
                deliveries.append((event.ts + rnd.randint(0, 4 * HOUR), i, event))
        else:
            deliveries.append((event.ts + rnd.randint(0, DAY), i, event))
    return [event for _, _, event in sorted(deliveries, key=lambda d: (d[0], d[1]))]
