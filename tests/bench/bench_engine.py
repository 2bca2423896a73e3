"""Benchmark: the pure journey engine, parsing, replay into embedded ClickHouse, state size.

Run on demand (not part of the test suite); prints figures, each next to a
baseline measured in the same run, because these machines are shared:

    .venv/bin/python tests/bench/bench_engine.py [--accounts 2000] [--state-accounts 100000]

- parse: `parse_event` per line (decode and validate, invalid lines included) vs
  `orjson.loads` per line (the floor); target: at least 0.3x the floor.
- engine: events/s of `JourneyEngine` on one core over sorted records, vs a
  loop that only looks up and updates one dict entry per event.
- value: the engine with the engagement score on (the default) beside it off.
- arrival: the engine fed the same events in a realistic arrival order (nightly
  ERP exports, webhook retries, SDK redeliveries with moved times; event time
  trailing the latest event seen by 30 s, late events in batches of 500) vs
  fed sorted, as a ratio; with the corrections it published.
- replay: lines/s of the whole `journeys replay` path (parse, sort, engine,
  ClickHouse writes) into a fresh embedded database, for a file in arrival
  order vs the same file sorted, as a ratio; events/s of the sorted file beside
  a plain Python fold over the same events (parse, then one dict update per
  event: the floor; target: at least 100,000 events/s); and with `--jobs`
  (default 2) worker processes for the journey partitions beside one.
- state: serialised bytes per account (what a checkpoint stores: journeys with
  their dedupe window of recent event_ids, aliases with link times, redirects)
  and Python heap bytes per account at `--state-accounts` accounts.
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import orjson

from journeys.producers.simulator import simulate
from journeys.schemas.errors import InvalidEvent
from journeys.schemas.event import parse_event
from journeys.schemas.record import EventRecord
from journeys.schemas.rows import Output
from journeys.streams.engine import EngineConfig, JourneyEngine
from journeys.streams.engine.rules import ENGAGEMENT_OFF, default_rules_text

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository, for tests.*
from tests.unit.engine.journey import realistic_arrival  # noqa: E402

LATENESS = 30_000
BATCH = 500


def records(lines: list[bytes], ordered: bool = True) -> list[EventRecord]:
    out = []
    for line in lines:
        try:
            out.append(parse_event(line))
        except InvalidEvent:
            pass
    if ordered:
        out.sort(key=lambda e: (e.ts, e.event_id))
    return out


def _loads(lines: list[bytes]) -> None:
    for line in lines:
        try:
            orjson.loads(line)
        except orjson.JSONDecodeError:
            pass


def bench_parse(lines: list[bytes], chunk: int = 500) -> None:
    """Both timed over the same chunks of lines in turn, so a neighbour's load on this
    shared machine falls on both alike."""
    floor = took = 0.0
    for start in range(0, len(lines), chunk):
        part = lines[start : start + chunk]
        begin = time.perf_counter()
        _loads(part)
        middle = time.perf_counter()
        records(part, ordered=False)
        floor, took = floor + middle - begin, took + time.perf_counter() - middle
    print(
        f"parse   {len(lines) / took:>12,.0f} lines/s   "
        f"(orjson.loads floor {len(lines) / floor:,.0f}/s, ratio {floor / took:.2f}; "
        "target >= 0.30)"
    )


def sorted_run(events: list[EventRecord], config: EngineConfig | None = None) -> Output:
    """Replay semantics: sorted events, event time advanced to the last one."""
    engine = JourneyEngine(config or EngineConfig.default())
    engine.process_all(events)
    engine.advance_to(events[-1].ts)
    return engine.take()


def without_engagement() -> EngineConfig:
    """The default rules with the engagement score (and account_hot) off."""
    config = EngineConfig.default()
    return replace(config, rules=replace(config.rules, engagement=ENGAGEMENT_OFF))


def stream_run(deliveries: list[EventRecord]) -> Output:
    """Stream semantics: deliveries as they arrive, event time trailing the latest seen."""
    engine = JourneyEngine(EngineConfig.default())
    out = Output()
    latest = deliveries[0].ts
    for start in range(0, len(deliveries), BATCH):
        batch = deliveries[start : start + BATCH]
        engine.process_late_batch(batch)
        latest = max(latest, *(e.ts for e in batch))
        engine.advance_to(latest - LATENESS)
        out.extend(engine.take())
    engine.advance_to(latest)
    out.extend(engine.take())
    return out


def best_of(
    runs: int, fn: Callable[[list[EventRecord]], Output], events: list[EventRecord]
) -> tuple[float, Output]:
    """The least CPU time of `runs` runs, and the last run's output."""
    best, result = float("inf"), Output()
    for _ in range(runs):
        gc.collect()
        start = time.process_time()
        result = fn(events)
        best = min(best, time.process_time() - start)
    return best, result


def bench_engine(events: list[EventRecord]) -> None:
    counts: dict[str, int] = {}
    start = time.process_time()
    for event in events:
        key = event.account_id or event.email or event.anonymous_id or ""
        counts[key] = counts.get(key, 0) + 1
    floor = time.process_time() - start
    took, _ = best_of(3, sorted_run, events)
    print(
        f"engine  {len(events) / took:>12,.0f} events/s (one core, sorted; dict-update floor "
        f"{len(events) / floor:,.0f}/s, ratio {floor / took:.2f}; target >= 200,000/s)"
    )


def bench_value_layer(events: list[EventRecord]) -> None:
    """The engine with the value layer on (the default) beside it off, in one run.

    Engagement and account_hot are the engine's part of it; attribution and the customer
    pyramid are ClickHouse views over the stored rows and cost the engine nothing."""
    off = without_engagement()
    took_off, _ = best_of(3, lambda e: sorted_run(e, off), events)
    took_on, _ = best_of(3, sorted_run, events)
    print(
        f"value   {len(events) / took_on:>12,.0f} events/s with engagement on, "
        f"{len(events) / took_off:,.0f}/s off: costs {100 * (took_on / took_off - 1):.1f}% "
        "(target <= 25%)"
    )


def bench_rebuild(events: list[EventRecord]) -> None:
    """A partition rebuilt with other rules (`journeys rebuild`): every journey folded
    again from its archive, every row published again, beside the fold that built it."""
    text = default_rules_text().replace("hot = 25.0", "hot = 12.0")
    engine = JourneyEngine(EngineConfig.default())
    gc.collect()
    start = time.process_time()
    engine.process_all(events)
    engine.advance_to(events[-1].ts)
    engine.take()
    built = time.process_time() - start
    start = time.process_time()
    engine.rebuild(1, text)
    rows = len(engine.take())
    took = time.process_time() - start
    print(
        f"rebuild {len(events) / took:>12,.0f} events/s folded again with new rules "
        f"({rows:,} rows; the first fold {len(events) / built:,.0f}/s); one partition's "
        "rebuild is one transaction, within 60 s"
    )


def bench_arrival(events: list[EventRecord]) -> None:
    deliveries = realistic_arrival(events, seed=9)
    ordered = sorted(deliveries, key=lambda e: (e.ts, e.event_id))
    sorted_took, _ = best_of(3, sorted_run, ordered)
    took, out = best_of(3, stream_run, deliveries)
    withdrawn = sum(1 for a in out.alerts if a.withdrawn)
    deleted = sum(1 for t in out.transitions if t.deleted)
    print(
        f"arrival {len(deliveries) / took:>12,.0f} events/s in arrival order "
        f"({len(deliveries) - len(events):,} redeliveries; "
        f"sorted {len(ordered) / sorted_took:,.0f}/s, ratio {sorted_took / took:.2f}); "
        f"{withdrawn} alerts withdrawn, "
        f"{deleted} transitions deleted"
    )


def _replay(lines: list[bytes], tmp: str, name: str, jobs: int = 1) -> tuple[float, int]:
    from journeys.cmd_core import replay_files
    from journeys.schemas.settings import Settings

    path = Path(tmp) / f"{name}.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    settings = Settings(data_dir=Path(tmp) / "data", clickhouse_database=name, replay_jobs=jobs)
    start = time.perf_counter()
    summary = replay_files((str(path),), settings, quiet=True)
    return time.perf_counter() - start, summary.lines


def plain_fold(lines: list[bytes]) -> float:
    """Seconds to parse the lines and fold each event into one dict entry per account."""
    start = time.perf_counter()
    state: dict[str, tuple[int, int]] = {}
    for record in records(lines, ordered=False):
        key = record.account_id or record.email or record.anonymous_id or ""
        count, _ = state.get(key, (0, 0))
        state[key] = (count + 1, record.ts)
    return time.perf_counter() - start


def bench_replay(events: list[EventRecord], jobs: int) -> None:
    deliveries = realistic_arrival(events, seed=9)
    arrival = [e.to_json() for e in deliveries]
    ordered = [e.to_json() for e in sorted(deliveries, key=lambda e: (e.ts, e.event_id))]
    with tempfile.TemporaryDirectory() as tmp:
        _replay(ordered[:100], tmp, "warm")  # the embedded engine's start, paid once
        fold = plain_fold(ordered)
        sorted_took, n = _replay(ordered, tmp, "sorted")
        fold = min(fold, plain_fold(ordered))
        took, _ = _replay(arrival, tmp, "arrival")
        jobs_took, _ = _replay(ordered, tmp, "jobs", jobs)
    print(
        f"replay  {n / took:>12,.0f} lines/s of an arrival-ordered file into embedded "
        f"ClickHouse ({n:,} lines; the same file sorted {n / sorted_took:,.0f}/s, "
        f"ratio {sorted_took / took:.2f})"
    )
    print(
        f"replay  {n / sorted_took:>12,.0f} events/s sorted, one process (plain Python fold "
        f"over the same lines {n / fold:,.0f}/s: {sorted_took / fold:.2f}x its time; "
        f"target >= 100,000/s); --jobs {jobs} {n / jobs_took:,.0f}/s, "
        f"{sorted_took / jobs_took:.2f}x one process"
    )


def bench_state(accounts: int, days: int) -> None:
    lines = list(simulate(accounts=accounts, days=days, seed=11))
    events = records(lines)
    del lines
    gc.collect()
    tracemalloc.start()
    engine = JourneyEngine(EngineConfig.default())
    engine.process_all(events)
    engine.advance_to(events[-1].ts)
    engine.take()
    heap, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    n = sum(1 for h in engine.holders.values() if h.is_account)
    changes = engine.changes()  # what the changelogs of everything hold

    def size(prefix: bytes) -> int:
        return sum(
            len(k) + len(v)
            for state in changes.values()
            for k, v in state.items()
            if v is not None and k.startswith(prefix)
        )

    holders, aliases, redirects = size(b"h:") + size(b"s:"), size(b"a:"), size(b"r:")
    window = sum(len(h.tail) for h in engine.holders.values())
    visitors = len(engine.holders) - n
    print(
        f"state   {(holders + aliases + redirects) / n:>12,.0f} bytes/account serialised "
        f"(journeys and their routing {holders / n:,.0f}, aliases {aliases / n:,.0f}, "
        f"redirects {redirects / n:,.0f}), "
        f"{heap / n:,.0f} bytes/account Python heap ({n:,} accounts, {visitors:,} unidentified "
        f"visitors, {len(events):,} events, {window:,} event_ids in the dedupe window of "
        f"{engine.config.window // 86_400_000}d)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--accounts", type=int, default=2000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--state-accounts", type=int, default=100_000)
    parser.add_argument("--state-days", type=int, default=60)
    parser.add_argument("--jobs", type=int, default=2, help="replay worker processes")
    args = parser.parse_args()
    lines = list(simulate(accounts=args.accounts, days=args.days, seed=7))
    print(
        f"input   {len(lines):,} simulated lines, {args.accounts:,} accounts over {args.days} days"
    )
    bench_parse(lines)
    events = records(lines)
    bench_engine(events)
    bench_value_layer(events)
    bench_arrival(events)
    bench_rebuild(events)
    bench_replay(events, args.jobs)
    if args.state_accounts:
        bench_state(args.state_accounts, args.state_days)


if __name__ == "__main__":
    main()
