"""The collector's Kafka publisher and HTTP answers against the real broker."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import requests
from kafka import KafkaConsumer

from journeys.kafka_broker import ensure_broker, stop_broker
from journeys.producers.client import partition_key
from journeys.producers.collect.publisher import KafkaPublisher
from journeys.producers.topics import ensure_topics
from journeys.schemas.codec import dead_letter_json
from journeys.schemas.event import parse_event, validate_event
from journeys.schemas.rows import DeadLetterRow
from journeys.schemas.settings import Settings
from tests.unit.collect.client import KEY
from tests.unit.collect.server import free_port, running

pytestmark = [pytest.mark.integration]


def read_topic(bootstrap: str, topic: str) -> list[tuple[bytes | None, bytes]]:
    consumer = KafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", consumer_timeout_ms=4000
    )
    try:
        return [(m.key, m.value) for m in consumer]
    finally:
        consumer.close()


@pytest.mark.kafka
def test_publisher_returns_after_the_broker_has_the_events(
    kafka_bootstrap: str, topic_prefix: Callable[[], str]
) -> None:
    settings = Settings(
        kafka_bootstrap=kafka_bootstrap, topic_prefix=topic_prefix(), topic_partitions=1
    )
    ensure_topics(settings)
    records = [
        validate_event(
            {
                "event_id": f"e{i}",
                "channel": "web",
                "type": "page_view",
                "occurred_at": "2026-11-02T09:15:00Z",
                "email": f"jan@co{i}.nl",
            }
        )
        for i in range(3)
    ]
    dead = [DeadLetterRow.of(b"{nope", "malformed JSON", "collect:/v1/track", 1_793_610_900_000)]
    publisher = KafkaPublisher(settings)

    async def go() -> None:
        await publisher.start()
        await asyncio.gather(
            publisher.publish(records[:2], dead), publisher.publish(records[2:], [])
        )
        await publisher.close()

    asyncio.run(go())
    events = read_topic(kafka_bootstrap, settings.topic("events"))
    assert sorted((key, parse_event(value)) for key, value in events) == [
        (partition_key(r), r) for r in records
    ]
    assert read_topic(kafka_bootstrap, settings.topic("dead-letters")) == [
        (None, dead_letter_json(dead[0]))
    ]


@pytest.mark.kafka
def test_batch_over_http_is_acknowledged_once_in_kafka(
    kafka_bootstrap: str, topic_prefix: Callable[[], str]
) -> None:
    settings = Settings(
        kafka_bootstrap=kafka_bootstrap,
        topic_prefix=topic_prefix(),
        topic_partitions=1,
        write_keys=KEY,
    )
    ensure_topics(settings)
    batch: dict[str, Any] = {
        "batch": [
            {
                "type": "track",
                "event": "Product Added",
                "messageId": "m-1",
                "anonymousId": "cookie-1",
                "timestamp": "2026-11-02T09:15:00Z",
                "properties": {"sku": "KAS-200", "quantity": 2},
            },
            {
                "type": "page",
                "messageId": "m-2",
                "userId": "c-1",
                "timestamp": "2026-11-02T09:16:00Z",
            },
            {"type": "track", "event": "no identity"},
        ]
    }
    with running(settings, KafkaPublisher(settings)) as url:
        answer = requests.post(f"{url}/v1/batch", json=batch, auth=(KEY, ""), timeout=30)
    assert answer.status_code == 200, answer.text
    assert (answer.json()["accepted"], answer.json()["rejected"]) == (2, 1)
    events = [
        orjson.loads(value) for _, value in read_topic(kafka_bootstrap, settings.topic("events"))
    ]
    assert [(e["event_id"], e["type"], e["occurred_at"]) for e in events] == [
        ("m-1", "add_to_cart", "2026-11-02T09:15:00.000Z"),
        ("m-2", "page_view", "2026-11-02T09:16:00.000Z"),
    ]
    assert events[0]["properties"]["items"] == [{"sku": "KAS-200", "quantity": 2}]
    (dead,) = [
        orjson.loads(v) for _, v in read_topic(kafka_bootstrap, settings.topic("dead-letters"))
    ]
    assert dead["source"] == "collect:/v1/batch" and "no identity" in dead["reason"]


@pytest.mark.parametrize("path", ["/v1/track", "/v1/batch"])
def test_no_broker_is_503_and_the_next_request_tries_again(path: str) -> None:
    """Nothing listens on port 1: every request is a 503 with Retry-After; none hangs."""
    settings = Settings(kafka_bootstrap="127.0.0.1:1", write_keys=KEY)
    message = {"type": "track", "event": "Product Viewed", "anonymousId": "a", "messageId": "m"}
    body = {"batch": [message]} if path == "/v1/batch" else message
    with running(settings, KafkaPublisher(settings, timeout=5)) as url:
        answers = [
            requests.post(f"{url}{path}", json=body, auth=(KEY, ""), timeout=30) for _ in range(2)
        ]
    assert [(a.status_code, a.headers.get("Retry-After")) for a in answers] == [
        (503, "5"),
        (503, "5"),
    ]
    assert all("events not stored" in a.json()["error"] for a in answers)


def test_known_down_kafka_is_a_503_at_once() -> None:
    """Nothing listens on port 1: the first request learns it within the probe's timeout, every
    later one is answered at once (it once waited the full publish timeout, 15 s)."""
    settings = Settings(kafka_bootstrap="127.0.0.1:1", write_keys=KEY)
    message = {"type": "track", "event": "Product Viewed", "anonymousId": "a", "messageId": "m"}
    with running(settings, KafkaPublisher(settings, timeout=15)) as url:
        timed = []
        for _ in range(6):
            started = time.monotonic()
            answer = requests.post(f"{url}/v1/track", json=message, auth=(KEY, ""), timeout=30)
            timed.append((answer.status_code, time.monotonic() - started))
        health = requests.get(f"{url}/health", timeout=5).json()
    assert [status for status, _ in timed] == [503] * 6
    assert timed[0][1] < 10 and all(seconds < 1 for _, seconds in timed[1:]), timed
    assert health == {"status": "ok", "kafka": "down"}


def _until(check: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {seconds:g}s")
        time.sleep(0.2)


@pytest.mark.kafka
def test_a_broker_outage_is_503_at_once_and_over_when_the_broker_is_back(
    tmp_path: Path, topic_prefix: Callable[[], str]
) -> None:
    port = free_port()
    broker = Settings(
        data_dir=tmp_path / "broker",
        kafka_bootstrap=f"127.0.0.1:{port}",
        kafka_controller_port=free_port(),
        kafka_heap="384m",
        topic_partitions=1,
    )
    settings = broker.model_copy(update={"write_keys": KEY, "topic_prefix": topic_prefix()})
    ensure_broker(broker)
    try:
        ensure_topics(settings)

        def track(n: int) -> requests.Response:
            message = {
                "type": "track",
                "event": "Signed Up",
                "anonymousId": "a",
                "messageId": str(n),
            }
            return requests.post(f"{url}/v1/track", json=message, auth=(KEY, ""), timeout=30)

        with running(settings, KafkaPublisher(settings, timeout=5)) as url:
            assert track(1).status_code == 200
            stop_broker(broker, timeout=5)
            outage = [track(2)]
            started = time.monotonic()
            outage += [track(n) for n in range(3, 8)]
            fast = time.monotonic() - started
            assert requests.get(f"{url}/health", timeout=5).json()["kafka"] == "down"
            ensure_broker(broker)
            _until(
                lambda: requests.get(f"{url}/health", timeout=5).json()["kafka"] == "up",
                30,
                "the collector did not see the broker back",
            )
            after = [track(n).status_code for n in range(8, 10)]
        events = read_topic(broker.kafka_bootstrap, settings.topic("events"))
    finally:
        stop_broker(broker, timeout=5)
    assert [a.status_code for a in outage] == [503] * 6 and fast < 3, fast
    assert all(a.headers["Retry-After"] == "5" for a in outage)
    assert after == [200, 200]
    stored = {orjson.loads(value)["event_id"] for _, value in events}
    assert {"1", "8", "9"} <= stored
    gc.collect()  # a producer left half open would raise here, from its __del__
