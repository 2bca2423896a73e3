"""Benchmark: peak memory of `journeys replay` on hostile inputs (issue 16), run on demand.

    .venv/bin/python tests/bench/bench_replay_memory.py [--lines 1000000] [--mb 200]

Writes the inputs to a temporary folder (about 400 MB with the defaults) and
replays each into an embedded ClickHouse of its own, as a child process, then
prints its peak RSS, how far that is above a one-line replay's (the embedded
engine's own footprint), and the time taken. The bound the replay keeps to is
150 MB above the one-line replay's peak, the engine's state apart (a 10**6-line
input's journeys and dedupe window are part of what a replay must hold).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO

import orjson

PEAK = (
    "import resource, subprocess, sys\n"
    "done = subprocess.run(sys.argv[1:], capture_output=True)\n"
    "sys.stderr.buffer.write(done.stderr[-2000:])\n"
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    "sys.exit(done.returncode)\n"
)
START = datetime(2026, 1, 1, tzinfo=UTC)


def event(n: int) -> bytes:
    """A valid event: one a second, a thousand visitors."""
    at = (START + timedelta(seconds=n)).isoformat().replace("+00:00", "Z")
    return orjson.dumps(
        {
            "event_id": f"e{n:08d}",
            "occurred_at": at,
            "channel": "web",
            "type": "content_view",
            "anonymous_id": f"v{n % 1000}",
        }
    )


def inputs(lines: int, mb: int) -> dict[str, Callable[[IO[bytes]], None]]:
    """Name -> a writer of that input."""

    def huge(out: IO[bytes]) -> None:
        out.write(b'{"blob":"')
        for _ in range(mb):
            out.write(b"a" * 1024 * 1024)
        out.write(b'"}\n')

    return {
        "one line": lambda out: out.write(event(0) + b"\n"),
        f"a {mb} MB line": huge,
        f"{lines:,} valid lines": lambda out: out.writelines(
            event(n) + b"\n" for n in range(lines)
        ),
        f"{lines:,} invalid lines": lambda out: out.writelines(
            b'{"broken": %d\n' % n for n in range(lines)
        ),
        "100,000 identical bad lines": lambda out: out.write(b"{not json\n" * 100_000),
    }


def peak(path: Path, data: Path) -> tuple[float, float]:
    """Peak RSS (MB) and seconds of one replay."""
    command = [sys.executable, "-m", "journeys", "replay", "--quiet", str(path)]
    command += ["--clickhouse-url", f"chdb://{data / 'ch'}", "--data-dir", str(data)]
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", PEAK, *command], capture_output=True, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(done.stderr.decode(errors="replace"))
    return int(done.stdout.split()[-1]) / 1024, seconds


def main() -> None:
    """Write each input, replay it, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--mb", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-replay-") as tmp:
        base = None
        for n, (name, write) in enumerate(inputs(args.lines, args.mb).items()):
            path = Path(tmp) / f"in-{n}.jsonl"
            with path.open("wb") as out:
                write(out)
            rss, seconds = peak(path, Path(tmp) / f"data-{n}")
            base = rss if base is None else base
            print(f"{name:>30}: peak {rss:7.0f} MB (+{rss - base:5.0f} MB) in {seconds:6.1f} s")
            path.unlink()


if __name__ == "__main__":
    main()
