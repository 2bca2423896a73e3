"""Benchmark: the streaming pipeline, Kafka → Faust → ClickHouse, on the local broker.

Run on demand (needs `journeys kafka start` or starts the broker itself):

    .venv/bin/python tests/bench/bench_streaming.py [--events 100000] [--workers 1 2]
        [--partitions 4] [--rate 5000] [--latency-seconds 20]

Prints, each beside a baseline from the same run and the target it is held to:
- throughput: events/s from the first event row in ClickHouse to the last,
  with every stage (ingest, identity, journey partitions) in one worker and
  the sink in this process, next to a raw aiokafka consume loop over the
  same topic (target: at least 20,000 events/s and 0.3x the raw loop);
  `--workers 1 2` repeats it with two workers (the journey stage's own
  scaling, without the sink and broker on the same cores, is
  bench_stages.py's);
- p50/p99 latency from produce to the event's row in ClickHouse at a fixed
  offered load (default 5,000 events/s; target: p99 at most 1 s).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path

import orjson

from journeys.kafka_broker import ensure_broker
from journeys.processes import settings_env, start_processes, stop_processes
from journeys.producers.client import EventProducer
from journeys.producers.simulator import simulate
from journeys.producers.topics import ensure_pipeline_topics
from journeys.schemas.record import format_ms
from journeys.schemas.settings import Settings
from journeys.sinks.clickhouse.queries import table_counts
from journeys.sinks.clickhouse.writer import ClickHouseSink
from journeys.sinks.consumer import OutputConsumer

#: Targets: events/s end to end with one worker, and that over the raw consume loop's.
THROUGHPUT_TARGET = 20_000
RAW_RATIO_TARGET = 0.3
#: Target: p99 from produce to the row in ClickHouse, milliseconds.
P99_TARGET_MS = 1_000


def settings_for(root: Path, chdb: Path, partitions: int, journey_partitions: int) -> Settings:
    """Settings with topics and a database of their own."""
    name = uuid.uuid4().hex[:8]
    return Settings(
        data_dir=root / name,
        clickhouse_url=f"chdb://{chdb}",
        clickhouse_database=f"bench_{name}",
        topic_prefix=f"bench{name}.",
        topic_partitions=partitions,
        journey_partitions=journey_partitions,
        allowed_lateness=0,
    )


def verdict(target: str, met: bool) -> str:
    return f"target {target}: {'met' if met else 'MISSED'}"


async def raw_consume(settings: Settings, expected: int) -> float:
    """Seconds for a bare aiokafka consumer to read `expected` messages of the events topic."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        settings.topic("events"),
        bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="earliest",
        group_id=f"raw-{uuid.uuid4().hex[:6]}",
        enable_auto_commit=False,
    )
    await consumer.start()
    seen, started = 0, None
    try:
        while seen < expected:
            batch = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            for messages in batch.values():
                if started is None:
                    started = time.perf_counter()
                seen += len(messages)
    finally:
        await consumer.stop()
    return time.perf_counter() - (started or time.perf_counter())


def run_pipeline(settings: Settings, workers: int, expected: int, patience: float) -> float:
    """Seconds to store `expected` events at the steady rate (from the first row to the last);
    after `patience` seconds, extrapolated from the rate so far."""
    writer = ClickHouseSink(settings.clickhouse_dsn, settings.clickhouse_database)
    sink = OutputConsumer(settings, writer)
    sink.setup()
    thread = threading.Thread(target=sink.run, daemon=True)
    thread.start()
    started = time.perf_counter()
    processes = start_processes(
        workers, {**settings_env(settings), "JOURNEYS_IDLE_AFTER": "1"}, with_sink=False
    )
    first = None
    try:
        while (
            stored := table_counts(writer.client, settings.clickhouse_database)["events"]
        ) < expected and time.perf_counter() - started < patience:
            if first is None and stored:
                first = (time.perf_counter(), stored)
            time.sleep(0.1)
        done = time.perf_counter()
        if first is None:
            first = (started, 0)
        print(
            f"  ({workers} worker(s): first rows after {first[0] - started:.1f}s of start-up; "
            f"{stored:,} of {expected:,} stored after {done - started:.1f}s)"
        )
        return (done - first[0]) * expected / max(1, stored - first[1])
    finally:
        stop_processes(processes)
        sink.stop()
        thread.join(30)


def produce_bulk(settings: Settings, lines: list[bytes]) -> None:
    ensure_pipeline_topics(settings)
    producer = EventProducer(settings)
    producer.start()
    producer.send_raw(lines)
    producer.close()


def bench_throughput(
    root: Path,
    chdb: Path,
    events: int,
    workers_list: list[int],
    journey_partitions: int,
    patience: float,
) -> None:
    accounts = max(50, events // 17)
    lines = [
        line
        for line in simulate(
            accounts=accounts, days=120, seed=1, invalid_share=0.0, duplicate_share=0.0
        )
    ]
    lines = lines[:events]
    results = {}
    for workers in workers_list:
        settings = settings_for(root, chdb, 4, journey_partitions)
        produce_bulk(settings, lines)
        raw = asyncio.run(raw_consume(settings, len(lines)))
        took = run_pipeline(settings, workers, len(lines), patience)
        rate, ratio = len(lines) / took, raw / took
        results[workers] = rate
        print(
            f"throughput, {workers} worker(s): {rate:>9,.0f} events/s end to end "
            f"(raw aiokafka loop {len(lines) / raw:,.0f}/s, ratio {ratio:.2f}; "
            f"{len(lines):,} events, {journey_partitions} journey partitions)"
        )
        if workers == 1:
            print(
                f"  {verdict(f'>= {THROUGHPUT_TARGET:,} events/s', rate >= THROUGHPUT_TARGET)}; "
                f"{verdict(f'>= {RAW_RATIO_TARGET}x raw', ratio >= RAW_RATIO_TARGET)}"
            )
    if 1 in results and 2 in results:
        print(f"2 workers / 1 worker end to end: {results[2] / results[1]:.2f}x")


def bench_latency(root: Path, chdb: Path, rate: int, seconds: int, journey_partitions: int) -> None:
    settings = settings_for(root, chdb, 4, journey_partitions)
    ensure_pipeline_topics(settings)
    writer = ClickHouseSink(settings.clickhouse_dsn, settings.clickhouse_database)
    sink = OutputConsumer(settings, writer)
    sink.setup()
    thread = threading.Thread(target=sink.run, daemon=True)
    thread.start()
    processes = start_processes(
        1, {**settings_env(settings), "JOURNEYS_IDLE_AFTER": "1"}, with_sink=False
    )
    producer = EventProducer(settings)
    producer.start()
    time.sleep(8)  # let the worker join its group
    total = rate * seconds
    try:
        started = time.perf_counter()
        for tick in range(seconds * 10):
            due = started + tick / 10
            time.sleep(max(0.0, due - time.perf_counter()))
            now = int(time.time() * 1000)
            batch = [
                orjson.dumps(
                    {
                        "event_id": f"lat-{tick}-{i}",
                        "channel": "web",
                        "type": "page_view",
                        "occurred_at": format_ms(now),
                        "email": f"u{i % 500}@co{i % 97}.nl",
                        "properties": {"sent_ms": now},
                    }
                )
                for i in range(rate // 10)
            ]
            producer.send_raw(batch)
        deadline = time.monotonic() + 60
        while (
            table_counts(writer.client, settings.clickhouse_database)["events"] < total
            and time.monotonic() < deadline
        ):
            time.sleep(0.5)
        rows = writer.client.query(
            f"SELECT toUnixTimestamp64Milli(inserted_at) - JSONExtractUInt(properties, 'sent_ms') "
            f"FROM {settings.clickhouse_database}.events"
        ).result_rows
        latencies = sorted(r[0] for r in rows)
        p50 = statistics.median(latencies)
        p99 = latencies[int(len(latencies) * 0.99) - 1]
        print(
            f"latency at {rate:,} events/s offered for {seconds}s: "
            f"p50 {p50:,.0f} ms, p99 {p99:,.0f} ms ({len(latencies):,} of {total:,} stored)"
        )
        print(f"  {verdict(f'p99 <= {P99_TARGET_MS:,} ms', p99 <= P99_TARGET_MS)}")
    finally:
        producer.close()
        stop_processes(processes)
        sink.stop()
        thread.join(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000, help="0: no throughput run")
    parser.add_argument(
        "--patience", type=float, default=90, help="seconds before a slow run is extrapolated"
    )
    parser.add_argument("--workers", type=int, nargs="+", default=[1], help="throughput runs")
    parser.add_argument("--partitions", type=int, default=4, help="journey partitions (P)")
    parser.add_argument("--rate", type=int, default=5_000, help="offered events/s for latency")
    parser.add_argument("--latency-seconds", type=int, default=20, help="0: no latency run")
    args = parser.parse_args()
    ensure_broker(Settings())
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        chdb = root / "clickhouse"
        if args.events:
            bench_throughput(root, chdb, args.events, args.workers, args.partitions, args.patience)
        if args.latency_seconds:
            bench_latency(root, chdb, args.rate, args.latency_seconds, args.partitions)


if __name__ == "__main__":
    main()
