"""Benchmark: events/s one collector process accepts, batch and single-event mode.

Run on demand:

    .venv/bin/python tests/bench/bench_collect.py [--seconds 10] [--kafka]

The collector runs in its own process (one core's worth of Python); the load
generator, an aiohttp client on loopback with a few concurrent connections,
runs in this one. Publisher: in memory (the collector's own cost), and with
--kafka the real broker (acks=all), the collector's full cost.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import multiprocessing
import socket
import statistics
import sys
import time
from typing import Any

import orjson

KEY = "bench-key"


def _serve(port: int, kafka: bool) -> None:
    from aiohttp import web

    from journeys.producers.collect.app import create_app
    from journeys.producers.collect.publisher import KafkaPublisher, MemoryPublisher
    from journeys.schemas.settings import Settings

    sys.setswitchinterval(0.001)  # as `journeys collect` does
    settings = Settings(  # the benchmark is one write key at full speed: no rate limit
        write_keys=KEY,
        collect_max_body=4 * 1024 * 1024,
        collect_rate_limit=0,
        topic_prefix="benchcollect.",
    )
    publisher: Any = KafkaPublisher(settings) if kafka else MemoryPublisher()
    if not kafka:

        async def drop(records: Any, dead: Any) -> None:  # keep memory flat over a long run
            return None

        publisher.publish = drop
    web.run_app(create_app(settings, publisher), host="127.0.0.1", port=port, print=None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _message(i: int) -> dict[str, Any]:
    return {
        "type": "track",
        "event": "Product Viewed",
        "messageId": f"m-{i}",
        "userId": f"c-{i % 1000}",
        "anonymousId": f"a-{i % 5000}",
        "timestamp": "2026-11-02T09:15:00.000Z",
        "properties": {"sku": "KAS-200", "url": "https://shop.example/p/kas-200"},
        "context": {
            "groupId": f"acct-{i % 300}",
            "traits": {"email": f"u{i % 1000}@co{i % 300}.nl"},
        },
    }


async def _load(
    port: int, seconds: float, batch: int, connections: int = 8
) -> tuple[int, list[float]]:
    import aiohttp

    auth = {
        "Authorization": "Basic " + base64.b64encode(f"{KEY}:".encode()).decode(),
        "Content-Type": "application/json",
    }
    path = "/v1/batch" if batch > 1 else "/v1/track"
    latencies: list[float] = []
    sent = 0
    deadline = time.perf_counter() + seconds

    async def worker(n: int, session: aiohttp.ClientSession) -> None:
        nonlocal sent
        i = n * 10_000_000
        while time.perf_counter() < deadline:
            if batch > 1:
                body = orjson.dumps({"batch": [_message(i + k) for k in range(batch)]})
            else:
                body = orjson.dumps(_message(i))
            i += batch
            started = time.perf_counter()
            async with session.post(
                f"http://127.0.0.1:{port}{path}", data=body, headers=auth
            ) as response:
                await response.read()
                if response.status != 200:
                    raise RuntimeError(f"{response.status}: {await response.text()}")
            latencies.append(time.perf_counter() - started)
            sent += batch

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(worker(n, session) for n in range(connections)))
    return sent, latencies


def floor(seconds: float) -> float:
    """Events/s of the same work without HTTP: parse, map and validate a batch body in-process."""
    from datetime import UTC, datetime

    from journeys.producers.collect.segment import to_event
    from journeys.schemas.event import validate_event

    body = orjson.dumps({"batch": [_message(i) for i in range(100)]})
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        received = datetime.now(UTC)
        for message in orjson.loads(body)["batch"]:
            validate_event(to_event(message, received))
        done += 100
    return done / (time.perf_counter() - started)


def run(kafka: bool, seconds: float) -> None:
    port = _free_port()
    server = multiprocessing.Process(target=_serve, args=(port, kafka), daemon=True)
    server.start()
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    try:
        label = "kafka" if kafka else "memory"
        for batch in (100, 1):
            sent, latencies = asyncio.run(_load(port, seconds, batch))
            latencies.sort()
            p99 = latencies[max(0, int(len(latencies) * 0.99) - 1)] * 1000
            print(
                f"{label:6} {'batch of 100' if batch > 1 else 'single event':13} "
                f"{sent / seconds:>9,.0f} events/s  "
                f"p50 {statistics.median(latencies) * 1000:6.1f} ms  "
                f"p99 {p99:6.1f} ms  ({len(latencies):,} requests)"
            )
    finally:
        server.terminate()
        server.join(5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--kafka", action="store_true", help="also measure with the real broker")
    args = parser.parse_args()
    print(
        f"floor  parse+map+validate {floor(min(args.seconds, 3)):>9,.0f} events/s  "
        "(one core, no HTTP)"
    )
    run(False, args.seconds)
    if args.kafka:
        from journeys.kafka_broker import ensure_broker
        from journeys.schemas.settings import Settings

        ensure_broker(Settings())
        run(True, args.seconds)


if __name__ == "__main__":
    main()
