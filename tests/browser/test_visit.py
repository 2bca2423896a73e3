"""A real browser: Debian's chromium, `@segment/analytics-next` from npm served by the shop
itself, against `journeys collect`, with the collector refusing the first attempts.

The site's whole set-up is the write key and `cdnURL` set to the collector:
analytics-next fetches its settings from the collector, posts the five
calls of a visit back to it, and retries what is answered 429 (reading
Retry-After, which the collector exposes to scripts) and 503.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest
import requests

from journeys.producers.collect.publisher import KafkaPublisher, MemoryPublisher
from journeys.schemas.record import EventRecord
from journeys.schemas.rows import DeadLetterRow
from journeys.schemas.settings import Settings
from tests.browser.shop import FlakyPublisher, require_browser, serving_shop, visit
from tests.unit.collect.client import settings
from tests.unit.collect.server import free_port, running

KEY = "wk_browser"
TYPES = ["group", "identify", "order_placed", "page_view", "product_view"]


def refusals(report: dict[str, Any], collector: str) -> list[str]:
    """The collector's answers to the page's calls that were not 200."""
    return [
        line
        for line in report["responses"]
        if line.startswith(("429 ", "503 ")) and f"{collector}/v1/" in line
    ]


def test_the_five_calls_of_a_visit_arrive_once_each_after_retries(tmp_path: Path) -> None:
    require_browser()
    memory = MemoryPublisher()
    publisher = FlakyPublisher(memory, failures=2)  # the first two sends: 503
    config = settings(write_keys=KEY, collect_rate_limit=1)  # a bucket of 2: then 429
    with running(config, publisher) as collector:
        with serving_shop(lambda: len(memory.records) >= 5) as shop:
            report = visit(shop, collector, KEY, tmp_path / "visit.png")
    assert report["done"], report
    assert report["errors"] == [] and report["refused"] == []  # no CDN, no telemetry
    assert f"GET {collector}/v1/projects/{KEY}/settings" in report["requests"]
    assert any(line.startswith("429 ") for line in refusals(report, collector)), report
    assert any(line.startswith("503 ") for line in refusals(report, collector)), report
    records = memory.records
    assert sorted(r.type for r in records) == TYPES
    assert sorted(r.event_id for r in records) == sorted(report["calls"]["messageIds"])
    assert {r.anonymous_id for r in records} == {records[0].anonymous_id}  # one visitor
    order = next(r for r in records if r.type == "order_placed")
    assert orjson.loads(order.properties)["amount"] == 1250.5
    group = next(r for r in records if r.type == "group")
    assert (group.account_id, group.contact_id) == ("kwekerij-x", "c-17")
    identify = next(r for r in records if r.type == "identify")
    assert (identify.email, identify.dmu_role) == ("inkoop@kwekerij-x.nl", "buyer")
    view = next(r for r in records if r.type == "product_view")
    assert view.ts <= order.ts  # calls of one tick keep their order
    assert memory.dead_letters == []


def sink_rows(metrics_port: int) -> float:
    """Rows the pipeline's sink has written so far (-1 before it serves its metrics)."""
    try:
        text = requests.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=2).text
    except requests.RequestException:
        return -1
    found = re.search(r"^journeys_sink_rows_written (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else -1


def wait_written(metrics_port: int, pipeline: subprocess.Popen[bytes], seconds: float) -> float:
    """Wait until the sink has written rows and then nothing more for a while."""
    deadline = time.monotonic() + seconds
    last, since = -1.0, time.monotonic()
    while time.monotonic() < deadline:
        if pipeline.poll() is not None:
            raise AssertionError(f"journeys run exited with {pipeline.returncode}")
        rows = sink_rows(metrics_port)
        if rows != last:
            last, since = rows, time.monotonic()
        elif rows > 0 and time.monotonic() - since > 8:
            return rows
        time.sleep(0.5)
    raise AssertionError(f"the sink did not settle within {seconds:g}s ({last} rows)")


@pytest.mark.kafka
@pytest.mark.integration
def test_a_visit_ends_as_one_accounts_journey_in_clickhouse(
    tmp_path: Path, kafka_bootstrap: str, topic_prefix: Callable[[], str]
) -> None:
    """The browser, the collector (refusing the first attempts), Kafka, `journeys run` and
    ClickHouse: the five calls are one account's journey, read back with `journeys account`."""
    require_browser()
    metrics_port = free_port()
    env = {
        **os.environ,
        "JOURNEYS_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "JOURNEYS_TOPIC_PREFIX": topic_prefix(),
        "JOURNEYS_TOPIC_PARTITIONS": "2",
        "JOURNEYS_DATA_DIR": str(tmp_path / "data"),
        "JOURNEYS_METRICS_PORT": str(metrics_port),
    }
    env.pop("JOURNEYS_CLICKHOUSE_URL", None)
    config = Settings(
        kafka_bootstrap=kafka_bootstrap,
        topic_prefix=env["JOURNEYS_TOPIC_PREFIX"],
        topic_partitions=2,
        write_keys=KEY,
        collect_rate_limit=1,
    )
    journeys = [sys.executable, "-m", "journeys"]
    log = (tmp_path / "run.log").open("wb")
    pipeline = subprocess.Popen([*journeys, "run"], env=env, stdout=log, stderr=subprocess.STDOUT)
    stored: list[str] = []

    class Counted(KafkaPublisher):
        async def publish(
            self, records: Sequence[EventRecord], dead_letters: Sequence[DeadLetterRow]
        ) -> None:
            await super().publish(records, dead_letters)
            stored.extend(r.event_id for r in records)

    try:
        with running(config, FlakyPublisher(Counted(config), failures=2)) as collector:
            with serving_shop(lambda: len(stored) >= 5) as shop:
                report = visit(shop, collector, KEY)
        assert report["done"] and refusals(report, collector), report
        rows = wait_written(metrics_port, pipeline, 150)
    finally:
        pipeline.terminate()
        pipeline.wait(60)
        log.close()
    shown = subprocess.run(
        [*journeys, "account", "kwekerij-x", "--json"], env=env, capture_output=True, timeout=120
    )
    assert shown.returncode == 0, shown.stderr.decode(errors="replace")
    account = orjson.loads(shown.stdout)
    print(
        f"\nbrowser visit: 5 calls, {len(stored)} stored, {rows:g} rows written, "
        f"journey {account['journey']}"
    )
    assert sorted(stored) == sorted(report["calls"]["messageIds"])
    assert account["account_id"] == "kwekerij-x"
    assert (account["journey"]["phase"], account["journey"]["events"]) == ("purchase", 5)
    assert account["journey"]["dmu_roles"] == ["buyer"]
    assert sorted(e["event_id"] for e in account["recent_events"]) == sorted(stored)
    assert [c["contact"] for c in account["contacts"]] == ["c-17"]
