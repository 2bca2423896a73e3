"""The memory of a `journeys collect` process under oversized and full batches, on the real broker.

Measured on the process itself (/proc/PID/status: VmRSS now, VmHWM the
peak): four requests at a time, of 60,000 empty items (what once took the
collector from 83 MB to 369 MB, and 1.34 GB for four at once) and of full
2,500-event batches that are validated and stored.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson
import pytest
import requests

from journeys.producers.topics import ensure_topics
from journeys.schemas.settings import Settings
from tests.unit.collect.client import KEY
from tests.unit.collect.server import free_port

pytestmark = [pytest.mark.integration, pytest.mark.kafka]

#: Growth over the idle process allowed at the peak and after the load (MiB).
PEAK_GROWTH = 100
KEPT_GROWTH = 60


def memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process, in MiB."""
    figures = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            figures[name] = int(value.split()[0]) // 1024
    return figures


def wait_serving(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"journeys collect exited with {process.returncode}")
        try:
            requests.get(f"{url}/health", timeout=1)
            return
        except requests.ConnectionError:
            time.sleep(0.2)
    raise RuntimeError("journeys collect did not serve within 60s")


def full_batch(round_: int, request_: int) -> bytes:
    event = {
        "type": "track",
        "event": "Product Viewed",
        "timestamp": "2026-11-02T09:15:00Z",
        "properties": {"sku": "KAS-200", "url": "https://shop.example/p/kas"},
    }
    return orjson.dumps(
        {
            "batch": [
                {**event, "anonymousId": f"a-{i % 50}", "messageId": f"m-{round_}-{request_}-{i}"}
                for i in range(2500)
            ]
        }
    )


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_memory_stays_bounded_under_oversized_and_full_batches(
    kafka_bootstrap: str, topic_prefix: Callable[[], str]
) -> None:
    prefix = topic_prefix()
    ensure_topics(Settings(kafka_bootstrap=kafka_bootstrap, topic_prefix=prefix))
    port = free_port()
    env = {
        **os.environ,
        "JOURNEYS_WRITE_KEYS": KEY,
        "JOURNEYS_COLLECT_RATE_LIMIT": "0",  # 80,000 events in a few seconds, on purpose
        "JOURNEYS_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "JOURNEYS_TOPIC_PREFIX": prefix,
    }
    command = [sys.executable, "-m", "journeys", "collect", "--port", str(port)]
    process = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    empty = b'{"batch":[' + b",".join([b"{}"] * 60_000) + b"]}"

    def post(body: bytes) -> int:
        answer = requests.post(f"{url}/v1/batch", data=body, auth=(KEY, ""), timeout=60)
        return answer.status_code

    try:
        wait_serving(url, process)
        idle = memory(process.pid)
        with ThreadPoolExecutor(4) as pool:
            oversized = list(pool.map(post, [empty] * 40))
            after_oversized = memory(process.pid)
            full = [
                status
                for round_ in range(8)
                for status in pool.map(post, [full_batch(round_, r) for r in range(4)])
            ]
        time.sleep(1)
        after = memory(process.pid)
    finally:
        process.terminate()
        process.wait(30)
    print(
        f"\ncollector memory (MiB): idle {idle}, after 40 oversized {after_oversized}, "
        f"after 32 full batches {after}"
    )
    assert set(oversized) == {400} and set(full) == {200}
    assert after["VmHWM"] - idle["VmRSS"] < PEAK_GROWTH, (idle, after)
    assert after["VmRSS"] - idle["VmRSS"] < KEPT_GROWTH, (idle, after)
