"""Real SDKs and webhook payloads through the collector, Kafka and the pipeline into ClickHouse."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import requests
from pydantic import SecretStr

from journeys.producers.collect.publisher import KafkaPublisher
from journeys.producers.collect.webhooks import shopify_signature
from journeys.sinks.clickhouse.queries import snapshot
from tests.integration.kafka.pipeline import Pipeline, wait_settled
from tests.unit.collect.client import KEY
from tests.unit.collect.server import running

pytestmark = [pytest.mark.kafka, pytest.mark.integration]


def test_sdk_and_webhook_events_end_as_rows_in_clickhouse(
    kafka_bootstrap: str, chdb_dsn: str, tmp_path: Path, pipeline_factory: Any
) -> None:
    from segment.analytics import Client

    pipeline: Pipeline = pipeline_factory(workers=1, partitions=2)
    settings = pipeline.settings.model_copy(
        update={"write_keys": KEY, "shopify_secret": SecretStr("shp")}
    )
    pipeline.settings = settings
    from journeys.producers.topics import ensure_pipeline_topics

    ensure_pipeline_topics(settings)
    with running(settings, KafkaPublisher(settings)) as url:
        client = Client(write_key=KEY, host=url, max_retries=2, sync_mode=True)
        client.identify("c-1", {"email": "jan@kas-west.nl"}, anonymous_id="cookie-9")
        client.track("c-1", "Product Added", {"sku": "KAS-200", "quantity": 1, "price": 10.0})
        client.flush()
        order = {
            "id": 77,
            "email": "jan@kas-west.nl",
            "created_at": "2026-11-02T10:15:00+01:00",
            "total_price": "10.00",
            "currency": "EUR",
            "line_items": [{"sku": "KAS-200", "quantity": 1, "price": "10.00"}],
        }
        body = orjson.dumps(order)
        answer = requests.post(
            f"{url}/webhooks/shopify",
            data=body,
            timeout=10,
            headers={
                "X-Shopify-Hmac-Sha256": shopify_signature("shp", body),
                "X-Shopify-Topic": "orders/create",
                "X-Shopify-Event-Id": "evt-77",
                "Content-Type": "application/json",
            },
        )
        assert answer.status_code == 200, answer.text
    pipeline.start_sink()
    pipeline.start_workers()
    wait_settled(pipeline, 3, 0, quiet=3)
    assert pipeline.writer is not None
    snap = snapshot(pipeline.writer.client, settings.clickhouse_database)
    assert sorted((e["type"], e["account_id"]) for e in snap["events"]) == [
        ("add_to_cart", "kas-west.nl"),
        ("identify", "kas-west.nl"),
        ("order_placed", "kas-west.nl"),
    ]
    assert [j["account_id"] for j in snap["journeys"]] == ["kas-west.nl"]


def test_collector_answers_503_when_kafka_is_down(tmp_path: Path) -> None:
    from journeys.schemas.settings import Settings

    settings = Settings(kafka_bootstrap="127.0.0.1:1", write_keys=KEY, data_dir=tmp_path)
    with running(settings, KafkaPublisher(settings)) as url:
        started = time.monotonic()
        answer = requests.post(
            f"{url}/v1/track",
            auth=(KEY, ""),
            timeout=60,
            json={"type": "track", "event": "Product Viewed", "anonymousId": "a", "messageId": "m"},
        )
    assert answer.status_code == 503 and answer.headers["Retry-After"] == "5"
    assert time.monotonic() - started < 60
