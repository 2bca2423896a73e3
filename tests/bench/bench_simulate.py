"""Benchmark: how fast `journeys simulate` generates events (one core, no I/O).

Run on demand (not part of the test suite):

    .venv/bin/python tests/bench/bench_simulate.py [--accounts 5000] [--days 90] [--repeat 3]

Prints the best of `--repeat` runs in lines/s (every yielded line: events,
duplicates and malformed lines) and MB/s of JSON, next to the floor of merely
`orjson.dumps`-ing one typical event as many times, because these machines
are shared and absolute figures move.
"""

from __future__ import annotations

import argparse
import gc
import time

import orjson

from journeys.producers.simulator import simulate

TYPICAL = {
    "event_id": "e0123456789abcdef00042",
    "occurred_at": "2026-01-05T09:15:00.000Z",
    "channel": "web",
    "type": "product_view",
    "anonymous_id": "anon-0123456789abcdef",
    "contact_id": "c-100042",
    "properties": {"url": "https://www.kasplus.nl/producten/led-600", "sku": "LED-600"},
    "context": {"dmu_role": "influencer", "segment": "tomato growers"},
}


def run_once(accounts: int, days: int, seed: int) -> tuple[int, int, float]:
    """Lines, bytes and seconds of one full simulation."""
    gc.collect()
    lines = size = 0
    started = time.perf_counter()
    for line in simulate(accounts=accounts, days=days, seed=seed):
        lines += 1
        size += len(line)
    return lines, size, time.perf_counter() - started


def floor(count: int) -> float:
    """Seconds to serialise one typical event `count` times: the cost of output alone."""
    dumps = orjson.dumps
    started = time.perf_counter()
    for _ in range(count):
        dumps(TYPICAL)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> float:
    """Print the figures; return the best lines/s."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=5000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    best = float("inf")
    lines = size = 0
    for _ in range(max(1, args.repeat)):
        lines, size, took = run_once(args.accounts, args.days, args.seed)
        best = min(best, took)
    rate = lines / best
    base = floor(lines)
    print(
        f"simulate {rate:>12,.0f} lines/s  {size / best / 1e6:,.1f} MB/s  ({lines:,} lines, "
        f"{args.accounts:,} accounts over {args.days} days, best of {args.repeat}: {best:.2f}s; "
        f"orjson.dumps floor {lines / base:,.0f}/s, ratio {base / best:.2f})"
    )
    return rate


if __name__ == "__main__":
    main()
