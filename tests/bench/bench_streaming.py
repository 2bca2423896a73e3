"""Benchmark: the streaming pipeline, Kafka → Faust → ClickHouse, on the local broker.

Run on demand (needs `journeys kafka start` or starts the broker itself):

    .venv/bin/python tests/bench/bench_streaming.py [--events 200000] [--latency-seconds 20]

Prints, each beside a baseline from the same run:
- throughput with one worker: events/s from the first message consumed to the
  last event row in ClickHouse, next to a raw aiokafka consume loop over the
  same topic (the ratio is pipeline / raw);
- the same with two workers (ratio 2 workers / 1 worker);
- p50/p99 latency from produce to the event's row in ClickHouse at a fixed
  offered load (default 5,000 events/s).
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


def settings_for(root: Path, chdb: Path, partitions: int) -> Settings:
    name = uuid.uuid4().hex[:8]
    return Settings(
        data_dir=root / name,
        clickhouse_url=f"chdb://{chdb}",
        clickhouse_database=f"bench_{name}",
        topic_prefix=f"bench{name}.",
        topic_partitions=partitions,
        allowed_lateness=0,
    )


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


def run_pipeline(settings: Settings, workers: int, expected: int) -> float:
    """Seconds to store `expected` events at the steady rate (from the first row to the last)."""
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
        ) < expected:
            if first is None and stored:
                first = (time.perf_counter(), stored)
            time.sleep(0.1)
        done = time.perf_counter()
        if first is None:
            first = (started, 0)
        print(f"  ({workers} worker(s): first rows after {first[0] - started:.1f}s of start-up)")
        return (done - first[0]) * expected / max(1, expected - first[1])
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


def bench_throughput(root: Path, chdb: Path, events: int) -> None:
    accounts = max(50, events // 17)
    lines = [
        line
        for line in simulate(
            accounts=accounts, days=120, seed=1, invalid_share=0.0, duplicate_share=0.0
        )
    ]
    lines = lines[:events]
    results = {}
    for workers in (1, 2):
        settings = settings_for(root, chdb, partitions=4)
        produce_bulk(settings, lines)
        raw = asyncio.run(raw_consume(settings, len(lines)))
        took = run_pipeline(settings, workers, len(lines))
        results[workers] = len(lines) / took
        print(
            f"throughput, {workers} worker(s): {len(lines) / took:>9,.0f} events/s end to end "
            f"(raw aiokafka loop {len(lines) / raw:,.0f}/s, ratio {raw / took:.2f}; "
            f"{len(lines):,} events)"
        )
    print(f"2 workers / 1 worker: {results[2] / results[1]:.2f}x")


def bench_latency(root: Path, chdb: Path, rate: int, seconds: int) -> None:
    settings = settings_for(root, chdb, partitions=4)
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
    finally:
        producer.close()
        stop_processes(processes)
        sink.stop()
        thread.join(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rate", type=int, default=5_000)
    parser.add_argument("--latency-seconds", type=int, default=20)
    args = parser.parse_args()
    ensure_broker(Settings())
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        chdb = root / "clickhouse"
        if args.events:
            bench_throughput(root, chdb, args.events)
        if args.latency_seconds:
            bench_latency(root, chdb, args.rate, args.latency_seconds)


if __name__ == "__main__":
    main()
