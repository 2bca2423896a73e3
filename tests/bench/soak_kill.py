"""Soak on demand: kill -9 at random moments, many runs, each compared with replay.

    .venv/bin/python tests/bench/soak_kill.py --runs 20 [--kills 10] [--accounts 40]
        [--seed 1000]

Each run is `tests/integration/kafka/test_kill_random.py`'s scenario with its own
seed: two `journeys worker` processes and a sink on topics of their own, a
simulated history fed chunk by chunk, a random worker SIGKILLed at a random
moment before each chunk after the first and a fresh one started, then every
table compared with `journeys replay` of the same lines. Prints one line per run
(kills, seconds, pass or what differed) and a summary; exits 1 if any run failed.
Uses the broker at JOURNEYS_KAFKA_BOOTSTRAP (starts one if none answers).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from pathlib import Path

from journeys.kafka_broker import ensure_broker
from journeys.schemas.settings import Settings
from tests.integration.kafka.kills import fleet_for, run_with_kills, small_history
from tests.integration.kafka.test_scale import settle_and_compare


def one_run(bootstrap: str, seed: int, kills: int, accounts: int) -> tuple[bool, str]:
    """One run in a directory of its own: (passed, what to print)."""
    history = small_history(kills + 1, accounts=accounts, seed=23 + seed % 7)
    with tempfile.TemporaryDirectory(prefix="soak-kill-") as tmp:
        fleet = fleet_for(bootstrap, f"soak{uuid.uuid4().hex[:8]}.", Path(tmp))
        try:
            killed = run_with_kills(fleet, history, seed)
            result = settle_and_compare(fleet, history, timeout=300, minimum=0)
            return True, f"{len(killed)} kills, tables equal replay {result['counts']}"
        except AssertionError as exc:
            return False, f"FAILED: {str(exc)[:2000]}"
        finally:
            fleet.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--kills", type=int, default=10, help="kills per run")
    parser.add_argument("--accounts", type=int, default=40)
    parser.add_argument("--seed", type=int, default=1000, help="seed of the first run")
    args = parser.parse_args()
    bootstrap = ensure_broker(Settings())
    failed = 0
    for run in range(args.runs):
        seed = args.seed + run
        started = time.monotonic()
        passed, said = one_run(bootstrap, seed, args.kills, args.accounts)
        failed += not passed
        print(f"run {run + 1}/{args.runs} seed {seed}: {time.monotonic() - started:.0f}s {said}")
    total = args.runs * args.kills
    print(f"{args.runs - failed} of {args.runs} runs equal replay ({total} kills in all)")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
