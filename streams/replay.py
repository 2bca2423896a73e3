"""Replay: JSONL events through the journey engine into a sink, without Kafka.

The whole input is validated, sorted into event-time order and run through
the same engine the streaming workers run (the identity router and the
journey partitions, in one process), so a replay is the reference answer for
any input: backfills, rebuilds and tests. The engine
gives the same tables for any order (late data is data); sorting makes the
replay publish each row about once, and redeliveries of one event_id meet
within the dedupe window, the earliest first. Invalid lines become dead
letters with their reason and original bytes; the run goes on.

Memory stays bounded whatever the input (the engine's own state apart):

- `read_lines` reads a file line by line and never holds more than
  `LINE_BYTES` of one line: a longer line is an event too large, of which
  only the first `DEAD_LETTER_PAYLOAD_BYTES` are kept, with the whole
  line's size and SHA-256 (counted and hashed while skipping to its end).
- Dead letters go to the sink every `DEAD_LETTER_STEP` rows, and the sink
  is flushed every `DEAD_LETTER_FLUSH_BYTES` of their payloads.
- Valid events are sorted on disk when there are more than `RUN_EVENTS`:
  sorted runs of `RUN_EVENTS` are spilled to a private temporary folder and
  merged back in order (`SortedRuns`), and the engine takes them
  `STEP_EVENTS` at a time, handing its output to the sink each step.
"""

from __future__ import annotations

import gc
import hashlib
import heapq
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import islice
from operator import attrgetter
from pathlib import Path
from typing import IO, NamedTuple

import orjson

from journeys.schemas.codec import (
    DEAD_LETTER_PAYLOAD_BYTES,
    EVENT_BYTES,
    check_event_size,
    fit_dead_letter,
    record_from_values,
    record_values,
    too_large_reason,
    truncated_reason,
)
from journeys.schemas.errors import InvalidEvent
from journeys.schemas.event import parse_event
from journeys.schemas.privacy import PrivacyGate
from journeys.schemas.record import EventRecord
from journeys.schemas.rows import DeadLetterRow, IdentityLink, Output
from journeys.sinks.base import Batching, Sink
from journeys.streams.engine import EngineConfig, IdentityRouter, JourneyEngine
from journeys.streams.parallel import PartitionPool

#: Events per engine step (its rows are handed to the sink at once): bounds the rows in flight.
STEP_EVENTS = 50_000
#: Events held in memory for sorting; beyond, sorted runs of this many go to disk.
RUN_EVENTS = 50_000
#: The most of one line held at once: an event's limit and room for trailing blanks.
LINE_BYTES = EVENT_BYTES + 64
#: Bytes read at a time while skipping the rest of a line longer than `LINE_BYTES`.
SKIP_BYTES = 1024 * 1024
#: Dead letters handed to the sink at a time.
DEAD_LETTER_STEP = 10_000
#: Payload bytes of dead letters after which the sink is flushed (it buffers by rows).
DEAD_LETTER_FLUSH_BYTES = 32 * 1024 * 1024
#: Sorted runs on disk merged into one when there are this many (open files stay few).
MAX_RUNS = 64
#: The cyclic garbage collector's thresholds while a replay runs (see `_collector`).
REPLAY_GC = (50_000, 20, 10)


class Oversized(NamedTuple):
    """A line longer than `LINE_BYTES`: its first bytes, and the whole line's size and
    SHA-256 (hex), newline excluded."""

    source: str
    head: bytes
    size: int
    sha256: str


Line = tuple[str, bytes] | Oversized


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
    #: Input the privacy gate withheld (consent, the suppression list), by reason.
    withheld: dict[str, int] = field(default_factory=dict)
    #: Whether each transition key / alert id currently stands (the latest row seen).
    standing_transitions: dict[tuple[str, str], bool] = field(default_factory=dict, repr=False)
    standing_alerts: dict[str, bool] = field(default_factory=dict, repr=False)


# ------------------------------------------------------------------------ reading


def read_lines(handle: IO[bytes], name: str, limit: int = LINE_BYTES) -> Iterator[Line]:
    """The lines of a binary file as (`name:number`, bytes), holding at most `limit + 1`
    bytes of a line: a longer one comes as `Oversized`."""
    number = 0
    while raw := handle.readline(limit + 1):
        number += 1
        source = f"{name}:{number}"
        if raw.endswith(b"\n") or len(raw) <= limit:
            yield source, raw
        else:
            yield _skip_rest(handle, source, raw)


def _skip_rest(handle: IO[bytes], source: str, first: bytes) -> Oversized:
    """Read the rest of a long line in `SKIP_BYTES` pieces, counting and hashing it."""
    digest = hashlib.sha256()
    head, size, piece = first[:DEAD_LETTER_PAYLOAD_BYTES], 0, first
    while piece:
        ends = piece.endswith(b"\n")
        body = piece[:-1] if ends else piece
        digest.update(body)
        size += len(body)
        if ends:
            break
        piece = handle.readline(SKIP_BYTES)
    return Oversized(source, head, size, digest.hexdigest())


def _validate(line: Line, received_at: int) -> tuple[DeadLetterRow | None, EventRecord | None]:
    """A line as a valid event, or as a dead letter; (None, None) for a blank line."""
    if isinstance(line, Oversized):
        reason = truncated_reason(too_large_reason(line.size), line.size, line.sha256)
        return DeadLetterRow.of(
            line.head, reason, line.source, received_at, sha256=line.sha256
        ), None
    source, raw = line
    text = raw.strip()
    if not text:
        return None, None
    try:
        check_event_size(text)  # as the streaming ingest does: too large for Kafka
        return None, parse_event(text)
    except InvalidEvent as exc:
        return fit_dead_letter(DeadLetterRow.of(text, str(exc), source, received_at)), None


class _DeadLetters:
    """Dead letters on their way to the sink, in steps, flushed by payload bytes."""

    def __init__(self, sink: Sink, summary: ReplaySummary) -> None:
        self.sink, self.summary = sink, summary
        self.rows: list[DeadLetterRow] = []
        self.unflushed = 0

    def add(self, row: DeadLetterRow) -> None:
        self.rows.append(row)
        self.summary.invalid += 1
        key = row.reason.split(":", 1)[0]
        self.summary.reasons[key] = self.summary.reasons.get(key, 0) + 1
        self.unflushed += len(row.payload) + len(row.reason)
        if len(self.rows) >= DEAD_LETTER_STEP or self.unflushed >= DEAD_LETTER_FLUSH_BYTES:
            self.hand_over()

    def hand_over(self) -> None:
        if self.rows:
            self.sink.add(Output(dead_letters=self.rows))
            self.rows = []
        if self.unflushed >= DEAD_LETTER_FLUSH_BYTES:
            self.sink.flush()
            self.unflushed = 0


def read_events(
    lines: Iterable[Line],
    received_at: int,
    summary: ReplaySummary,
    sink: Sink,
    runs: SortedRuns,
    on_line: Callable[[int], None] | None = None,
    gate: PrivacyGate | None = None,
) -> None:
    """Validate the lines: valid events go to `runs`, dead letters to the sink (what the
    privacy `gate`, when given, lets through, as the collector and ingest do)."""
    dead = _DeadLetters(sink, summary)
    for line in lines:
        summary.lines += 1
        if on_line is not None:
            on_line(line.size + 1 if isinstance(line, Oversized) else len(line[1]) + 1)
        row, record = _validate(line, received_at)
        if gate is not None:
            row, record = _screened(gate, row, record, summary.withheld)
        if row is not None:
            dead.add(row)
        elif record is not None:
            runs.add(record)
    dead.hand_over()


def _screened(
    gate: PrivacyGate, row: DeadLetterRow | None, record: EventRecord | None, counts: dict[str, int]
) -> tuple[DeadLetterRow | None, EventRecord | None]:
    """A line's dead letter or event after the privacy gate (counted when withheld)."""
    reason: str | None = None
    if record is not None:
        verdict = gate.screen(record)
        record, reason = verdict.record, verdict.reason
    elif row is not None and gate.payload_suppressed(row.payload):
        row, reason = None, "suppressed"
    if reason is not None:
        counts[reason] = counts.get(reason, 0) + 1
    return row, record


# ------------------------------------------------------------------------ sorting


#: The order of a replay: (event time, event_id), read in C (a Python key function cost a
#: tenth of the sort).
_key: Callable[[EventRecord], tuple[int, str]] = attrgetter("ts", "event_id")


class SortedRuns:
    """Events sorted by (event time, event_id) in bounded memory: up to `size` are held;
    beyond, each `size` is sorted and spilled to a file of `directory` (one JSON list of
    the record's fields per line), and `merged()` merges the files back. Ties keep the
    order of arrival, as a stable sort of the whole would."""

    def __init__(self, directory: Path, size: int = RUN_EVENTS) -> None:
        self.directory, self.size = directory, size
        self.held: list[EventRecord] = []
        self.files: list[Path] = []
        self.count = 0

    def add(self, record: EventRecord) -> None:
        """Take one event."""
        self.held.append(record)
        self.count += 1
        if len(self.held) >= self.size:
            self._spill()

    def _spill(self) -> None:
        self.held.sort(key=_key)
        self.files.append(self._write(self.held))
        self.held = []
        if len(self.files) >= MAX_RUNS:
            merged = self._write(heapq.merge(*map(self._read, self.files), key=_key))
            for path in self.files:
                path.unlink()
            self.files = [merged]

    def _write(self, records: Iterable[EventRecord]) -> Path:
        path = self.directory / f"run-{self.count}-{len(self.files)}.jsonl"
        with path.open("wb") as out:
            for record in records:
                out.write(orjson.dumps(record_values(record)) + b"\n")
        return path

    @staticmethod
    def _read(path: Path) -> Iterator[EventRecord]:
        with path.open("rb") as handle:
            for line in handle:
                yield record_from_values(orjson.loads(line))

    def merged(self) -> Iterator[EventRecord]:
        """Every event taken, in order (the runs on disk and those still held)."""
        self.held.sort(key=_key)
        if not self.files:
            return iter(self.held)
        return heapq.merge(*map(self._read, self.files), self.held, key=_key)


# ------------------------------------------------------------------------ the engine


def run_engine(
    events: Iterable[EventRecord],
    engine: JourneyEngine,
    sink: Sink,
    summary: ReplaySummary,
    on_events: Callable[[int], None] | None = None,
) -> None:
    """Run events, already in event-time order, through the engine into the sink,
    `STEP_EVENTS` at a time."""
    stream = iter(events)
    while chunk := list(islice(stream, STEP_EVENTS)):
        if summary.first_ts is None:
            summary.first_ts = chunk[0].ts
        summary.last_ts = chunk[-1].ts
        engine.process_all(chunk)
        _hand_over(engine.take(), sink, summary)
        if on_events is not None:
            on_events(len(chunk))
    if summary.last_ts is not None:
        engine.advance_to(summary.last_ts)
    _hand_over(engine.take(), sink, summary)
    summary.duplicates = engine.duplicates
    summary.accounts = sum(1 for h in engine.holders.values() if h.is_account and h.traj)


def run_parallel(
    events: Iterable[EventRecord],
    config: EngineConfig,
    partitions: int,
    jobs: int,
    sink: Sink,
    summary: ReplaySummary,
    on_events: Callable[[int], None] | None = None,
) -> None:
    """`run_engine` with the journey partitions in `jobs` worker processes (see
    `streams.parallel`). The identity router runs here, routing the next step while
    the workers apply this one."""
    router = IdentityRouter(config, partitions)
    stream = iter(events)
    with PartitionPool(config, partitions, jobs) as pool:
        chunk = list(islice(stream, STEP_EVENTS))
        routing = _Routing(router, chunk)
        while chunk:
            if summary.first_ts is None:
                summary.first_ts = chunk[0].ts
            summary.last_ts = chunk[-1].ts
            routing.finish()
            commands, links = router.take()
            routed, chunk = len(chunk), list(islice(stream, STEP_EVENTS))
            routing = _Routing(router, chunk)
            pool.apply(commands, routing.some)
            _hand_over(_with_links(pool.take(), links), sink, summary)
            if on_events is not None:
                on_events(routed)
        if summary.last_ts is not None:
            router.advance_to(summary.last_ts)
        commands, links = router.take()
        pool.apply(commands)
        _hand_over(_with_links(pool.take(), links), sink, summary)
        summary.duplicates, summary.accounts = pool.totals()


class _Routing:
    """A step's events through the router, a few at a time while the workers are busy."""

    #: Events routed per call of `some`.
    SOME = 64

    def __init__(self, router: IdentityRouter, events: list[EventRecord]) -> None:
        self.router, self.events, self.done = router, events, 0

    def some(self) -> None:
        """Route the next few events."""
        end = min(self.done + self.SOME, len(self.events))
        self.router.process_all(self.events[self.done : end])
        self.done = end

    def finish(self) -> None:
        """Route the rest."""
        self.router.process_all(self.events[self.done :])
        self.done = len(self.events)


def _with_links(out: Output, links: list[IdentityLink]) -> Output:
    out.links.extend(links)
    return out


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
    if isinstance(sink, Batching) and sink.due:
        sink.flush()


def replay(
    lines: Iterable[Line],
    sink: Sink,
    config: EngineConfig,
    received_at: int,
    on_line: Callable[[int], None] | None = None,
    on_events: Callable[[int], None] | None = None,
    partitions: int = 1,
    spill_dir: Path | None = None,
    on_stage: Callable[[str, int], None] | None = None,
    gate: PrivacyGate | None = None,
    jobs: int = 1,
) -> ReplaySummary:
    """Replay (source, line) pairs into a sink that is already set up; flushes it at the end.

    `on_line(bytes)` and `on_events(count)` report progress while reading and while the
    engine runs; `on_stage(stage, total)` says when the engine starts (`"journeys"`, with
    the number of valid events) and when the last writes are waited for (`"writing"`):
    the command line draws its progress with them. Journeys are kept in `partitions`
    partitions (the tables are the same for any number). Events beyond `RUN_EVENTS`
    are sorted in a private temporary folder inside `spill_dir` (the system's default
    when None), removed at the end. Lines pass the privacy `gate` when one is given.
    With `jobs` above 1 the journey partitions (at least `jobs` of them) run in that
    many worker processes (`run_parallel`); the tables are the same.
    """
    summary = ReplaySummary()
    with _collector(REPLAY_GC):
        with tempfile.TemporaryDirectory(prefix="journeys-replay-", dir=spill_dir) as tmp:
            runs = SortedRuns(Path(tmp))
            read_events(lines, received_at, summary, sink, runs, on_line, gate)
            if on_stage is not None:
                on_stage("journeys", runs.count)
            if jobs > 1:
                partitions = max(partitions, jobs)
                run_parallel(runs.merged(), config, partitions, jobs, sink, summary, on_events)
            else:
                engine = JourneyEngine(config, partitions)
                run_engine(runs.merged(), engine, sink, summary, on_events)
        if on_stage is not None:
            on_stage("writing", 0)
        sink.flush()
    return summary


@contextmanager
def _collector(thresholds: tuple[int, int, int]) -> Iterator[None]:
    """The garbage collector's `thresholds` meanwhile, the process's own ones after.

    A replay makes millions of objects that live until it ends (journeys, their archives,
    rows on their way to the sink) and few reference cycles; with the default thresholds
    the collector walks the young ones every 700 allocations and all of them in each full
    collection: an eighth of the engine's time on `bench_engine.py`'s input. Young objects
    are still collected, every `thresholds[0]` allocations, and all of them now and then.
    (Process-wide: the sink's writer thread follows them too.)"""
    before = gc.get_threshold()
    gc.set_threshold(*thresholds)
    try:
        yield
    finally:
        gc.set_threshold(*before)
