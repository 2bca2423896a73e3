"""Faults at random moments for the fencing and kill tests, and the soak on demand.

`fleet_for` builds a `Fleet` whose workers give a silent member's partitions to
the others after 6 s (`kafka_session_timeout`, the broker's minimum) instead of
20 s, so that many faults fit one test. `run_with_kills` feeds a small simulated
history chunk by chunk into two workers and, after each chunk, waits a seeded
random moment while they work on it, SIGKILLs a seeded random worker and starts
a fresh one (new name, new empty data dir: nothing on a killed worker's disk is
ever read).
The caller then compares every table with `journeys replay`
(`test_scale.settle_and_compare`).
"""

from __future__ import annotations

import random
import time
from pathlib import Path

from journeys.producers.client import EventProducer
from journeys.producers.simulator import simulate
from journeys.producers.topics import ensure_pipeline_topics
from journeys.schemas.errors import InvalidEvent
from journeys.schemas.event import parse_event
from journeys.schemas.settings import Settings
from tests.integration.kafka.pipeline import INVALID
from tests.integration.kafka.test_outages import free_ports
from tests.integration.kafka.test_scale import Input, wait_running
from tests.integration.kafka.workers import Fleet
from tests.unit.engine.journey import realistic_arrival

#: Seconds a killed or frozen worker keeps its partitions (the broker's minimum).
SESSION_TIMEOUT = 6.0


def fleet_for(bootstrap: str, prefix: str, root: Path) -> Fleet:
    """A fleet (not started) on its own topics and embedded ClickHouse under `root`."""
    settings = Settings(
        data_dir=root / "unused",
        clickhouse_url=f"chdb://{root / 'clickhouse'}",
        clickhouse_database="journeys",
        kafka_bootstrap=bootstrap,
        topic_prefix=prefix,
        topic_partitions=4,
        allowed_lateness=0,
        read_port=free_ports(1),
        kafka_session_timeout=SESSION_TIMEOUT,
        # A few journeys in memory per partition, the rest in RocksDB: kills and freezes
        # find journeys going out of memory and coming back.
        state_cache=8,
    )
    ensure_pipeline_topics(settings)
    return Fleet(settings, root)


def small_history(chunks: int, accounts: int = 40, days: int = 60, seed: int = 23) -> Input:
    """A simulated B2B history in arrival order (as `test_scale`'s), cut into `chunks`."""
    records, invalid = [], list(INVALID)
    for line in simulate(accounts=accounts, days=days, seed=seed):
        try:
            records.append(parse_event(line))
        except InvalidEvent:  # `journeys replay` reads lines without trailing blanks
            invalid.append(line.rstrip())
    deliveries = realistic_arrival(records, seed=5)
    size = len(deliveries) // chunks + 1
    return Input([deliveries[i : i + size] for i in range(0, len(deliveries), size)], invalid)


def run_with_kills(fleet: Fleet, history: Input, seed: int, workers: int = 2) -> list[str]:
    """Start the sink and `workers` workers and feed `history` chunk by chunk. After each
    chunk but the last, once the group is stable again: send the chunk, wait a random
    0 to 1.5 s (the workers busy with it: mid-batch, mid-commit, mid-restore), SIGKILL a
    random worker and start a fresh one. The names killed, in order."""
    rnd = random.Random(seed)
    fleet.start("sink", "sink")
    started = 0
    for _ in range(workers):
        started += 1
        fleet.start(f"worker-{started}")
    killed: list[str] = []
    producer = EventProducer(fleet.settings)
    producer.start()
    try:
        for i, chunk in enumerate(history.chunks):
            wait_running(fleet)
            producer.send(chunk)
            if i == 0 and history.invalid:
                producer.send_raw(history.invalid)
            if i == len(history.chunks) - 1:
                break
            time.sleep(rnd.uniform(0.0, 1.5))
            victim = rnd.choice(fleet.workers)
            fleet.kill(victim)
            killed.append(victim)
            started += 1
            fleet.start(f"worker-{started}")
    finally:
        producer.close()
    return killed
