"""Replay: JSONL events through the journey engine into a sink, without Kafka.

The whole input is validated, sorted into event-time order and run through
the same engine the streaming workers run (the identity router and the
journey partitions, in one process), so a replay is the reference answer for
any input: backfills, rebuilds and tests. The engine
gives the same tables for any order (late data is data); sorting makes the
replay publish each row about once, and redeliveries of one event_id meet
within the dedupe window, the earliest first. Invalid lines become dead
letters with their reason and original bytes; the run goes on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from journeys.schemas.codec import check_event_size
from journeys.schemas.errors import InvalidEvent
from journeys.schemas.event import parse_event
from journeys.schemas.record import EventRecord
from journeys.schemas.rows import DeadLetterRow, Output
from journeys.sinks.base import Sink
from journeys.streams.engine import EngineConfig, JourneyEngine

#: Rows handed to the sink per engine step; bounds memory between flushes.
STEP_EVENTS = 50_000


@dataclass
class ReplaySummary:
    """What a replay read and wrote: events stored, and the transitions and alerts that
    stand at the end (not counting versions superseded, deleted or withdrawn)."""

    lines: int = 0
    events: int = 0
    invalid: int = 0
    duplicates: int = 0
    transitions: int = 0
    alerts: int = 0
    accounts: int = 0
    first_ts: int | None = None
    last_ts: int | None = None
    reasons: dict[str, int] = field(default_factory=dict)
    #: Whether each transition key / alert id currently stands (the latest row seen).
    standing_transitions: dict[tuple[str, str], bool] = field(default_factory=dict, repr=False)
    standing_alerts: dict[str, bool] = field(default_factory=dict, repr=False)


def read_events(
    lines: Iterable[tuple[str, bytes]],
    received_at: int,
    summary: ReplaySummary,
    on_line: Callable[[int], None] | None = None,
) -> tuple[list[EventRecord], list[DeadLetterRow]]:
    """Validate (source, line) pairs; return the valid events and the dead letters."""
    events: list[EventRecord] = []
    dead: list[DeadLetterRow] = []
    for source, raw in lines:
        summary.lines += 1
        if on_line is not None:
            on_line(len(raw) + 1)
        line = raw.strip()
        if not line:
            continue
        try:
            check_event_size(line)  # as the streaming ingest does: too large for Kafka
            events.append(parse_event(line))
        except InvalidEvent as exc:
            reason = str(exc)
            dead.append(DeadLetterRow.of(line, reason, source, received_at))
            key = reason.split(":", 1)[0]
            summary.reasons[key] = summary.reasons.get(key, 0) + 1
    summary.invalid = len(dead)
    return events, dead


def run_engine(
    events: list[EventRecord],
    engine: JourneyEngine,
    sink: Sink,
    summary: ReplaySummary,
    on_events: Callable[[int], None] | None = None,
) -> None:
    """Sort events into event-time order and run them through the engine into the sink."""
    events.sort(key=lambda e: (e.ts, e.event_id))
    for start in range(0, len(events), STEP_EVENTS):
        chunk = events[start : start + STEP_EVENTS]
        engine.process_all(chunk)
        _hand_over(engine.take(), sink, summary)
        if on_events is not None:
            on_events(len(chunk))
    if events:
        summary.first_ts, summary.last_ts = events[0].ts, events[-1].ts
        engine.advance_to(events[-1].ts)
    _hand_over(engine.take(), sink, summary)
    summary.duplicates = engine.duplicates
    summary.accounts = sum(1 for h in engine.holders.values() if h.is_account and h.traj)


def _hand_over(out: Output, sink: Sink, summary: ReplaySummary) -> None:
    summary.events += len({e.record.event_id for e in out.events})
    transitions, alerts = summary.standing_transitions, summary.standing_alerts
    for row in out.transitions:
        transitions[(row.account_id, row.to_phase)] = not row.deleted
    for alert in out.alerts:
        alerts[alert.alert_id] = not alert.withdrawn
    summary.transitions = sum(transitions.values())
    summary.alerts = sum(alerts.values())
    sink.add(out)


def replay(
    lines: Iterable[tuple[str, bytes]],
    sink: Sink,
    config: EngineConfig,
    received_at: int,
    on_line: Callable[[int], None] | None = None,
    on_events: Callable[[int], None] | None = None,
    partitions: int = 1,
) -> ReplaySummary:
    """Replay (source, line) pairs into a sink that is already set up; flushes it at the end.

    `on_line(bytes)` and `on_events(count)` report progress while reading and while the
    engine runs (the command line draws its progress bar with them). Journeys are kept in
    `partitions` partitions (the tables are the same for any number).
    """
    summary = ReplaySummary()
    events, dead = read_events(lines, received_at, summary, on_line)
    sink.add(Output(dead_letters=dead))
    run_engine(events, JourneyEngine(config, partitions), sink, summary, on_events)
    sink.flush()
    return summary
