"""Benchmark: the pure journey engine, parsing, replay into embedded ClickHouse, state size.

Run on demand (not part of the test suite); prints figures, each next to a
baseline measured in the same run, because these machines are shared:

    .venv/bin/python tests/bench/bench_engine.py [--accounts 2000] [--state-accounts 100000]

- parse: `parse_event` per line vs `orjson.loads` per line (the floor).
- engine: events/s of `JourneyEngine` on one core over sorted records, vs a
  loop that only looks up and updates one dict entry per event.
- replay: events/s of the whole `journeys replay` path (parse, sort, engine,
  ClickHouse writes) into a fresh embedded database.
- state: serialised bytes per account (what a checkpoint stores) and Python
  heap bytes per account at `--state-accounts` accounts.
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import time
import tracemalloc
from pathlib import Path

import orjson

from journeys.producers.simulator import simulate
from journeys.schemas.errors import InvalidEvent
from journeys.schemas.event import parse_event
from journeys.schemas.record import EventRecord
from journeys.streams.engine import EngineConfig, JourneyEngine


def records(lines: list[bytes]) -> list[EventRecord]:
    out = []
    for line in lines:
        try:
            out.append(parse_event(line))
        except InvalidEvent:
            pass
    out.sort(key=lambda e: (e.ts, e.event_id))
    return out


def bench_parse(lines: list[bytes]) -> None:
    start = time.perf_counter()
    for line in lines:
        try:
            orjson.loads(line)
        except orjson.JSONDecodeError:
            pass
    floor = time.perf_counter() - start
    start = time.perf_counter()
    records(lines)
    took = time.perf_counter() - start
    print(f"parse   {len(lines) / took:>12,.0f} lines/s   (orjson.loads floor {len(lines) / floor:,.0f}/s, ratio {floor / took:.2f})")


def bench_engine(events: list[EventRecord]) -> None:
    counts: dict[str, int] = {}
    start = time.perf_counter()
    for event in events:
        key = event.account_id or event.email or event.anonymous_id or ""
        counts[key] = counts.get(key, 0) + 1
    floor = time.perf_counter() - start
    best = float("inf")
    for _ in range(3):
        engine = JourneyEngine(EngineConfig.default())
        gc.collect()
        start = time.perf_counter()
        engine.process_all(events)
        engine.advance_to(events[-1].ts)
        engine.take()
        best = min(best, time.perf_counter() - start)
    print(
        f"engine  {len(events) / best:>12,.0f} events/s (one core; dict-update floor "
        f"{len(events) / floor:,.0f}/s, ratio {floor / best:.2f})"
    )


def bench_replay(lines: list[bytes]) -> None:
    from journeys.cmd_core import replay_files
    from journeys.schemas.settings import Settings

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "events.jsonl"
        path.write_bytes(b"\n".join(lines) + b"\n")
        settings = Settings(data_dir=Path(tmp) / "data")
        start = time.perf_counter()
        summary = replay_files((str(path),), settings, quiet=True)
        took = time.perf_counter() - start
    print(f"replay  {summary.lines / took:>12,.0f} lines/s into embedded ClickHouse ({summary.lines:,} lines, {took:.1f}s)")


def bench_state(accounts: int, days: int) -> None:
    lines = list(simulate(accounts=accounts, days=days, seed=11))
    events = records(lines)
    del lines
    gc.collect()
    tracemalloc.start()
    engine = JourneyEngine(EngineConfig.default())
    engine.process_all(events)
    engine.take()
    heap, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    n = sum(1 for h in engine.holders.values() if h.is_account)
    serialised = sum(len(h.to_bytes()) + len(k) for k, h in engine.holders.items())
    serialised += sum(len(k) + len(v) for k, v in engine.aliases.items())
    serialised += sum(len(k) + len(v) for k, v in engine.redirects.items())
    visitors = len(engine.holders) - n
    print(
        f"state   {serialised / n:>12,.0f} bytes/account serialised, {heap / n:,.0f} bytes/account "
        f"Python heap ({n:,} accounts, {visitors:,} unidentified visitors, {len(events):,} events)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=2000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--state-accounts", type=int, default=100_000)
    parser.add_argument("--state-days", type=int, default=60)
    args = parser.parse_args()
    lines = list(simulate(accounts=args.accounts, days=args.days, seed=7))
    print(f"input   {len(lines):,} simulated lines, {args.accounts:,} accounts over {args.days} days")
    bench_parse(lines)
    bench_engine(records(lines))
    bench_replay(lines)
    if args.state_accounts:
        bench_state(args.state_accounts, args.state_days)


if __name__ == "__main__":
    main()
