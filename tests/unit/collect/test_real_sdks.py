"""The real Segment and RudderStack Python SDKs, unchanged, pointed at the collector."""

from __future__ import annotations

import time
from typing import Any

from journeys.producers.collect.publisher import MemoryPublisher
from tests.unit.collect.client import KEY, settings
from tests.unit.collect.server import running


def wait_for(publisher: MemoryPublisher, count: int) -> None:
    deadline = time.monotonic() + 15
    while len(publisher.records) < count and time.monotonic() < deadline:
        time.sleep(0.05)


def drive(client: Any) -> None:
    client.identify(
        "c-17", {"email": "jan@kwekerij-x.nl", "dmu_role": "buyer"}, anonymous_id="cookie-1"
    )
    client.group("c-17", "erp-42", {"name": "Kwekerij X"})
    client.page(
        "c-17",
        category="blog",
        name="Afwatering",
        properties={"url": "https://shop.example/blog/afwatering"},
    )
    client.track("c-17", "Product Viewed", {"sku": "KAS-200"}, context={"groupId": "erp-42"})
    client.track(
        "c-17",
        "Order Completed",
        {
            "order_id": "o-1",
            "total": 99.5,
            "currency": "EUR",
            "products": [{"sku": "KAS-200", "quantity": 1, "price": 99.5}],
        },
    )
    client.flush()


def test_segment_analytics_python() -> None:
    from segment.analytics import Client

    publisher = MemoryPublisher()
    with running(settings(), publisher) as url:
        errors: list[object] = []
        client = Client(
            write_key=KEY, host=url, on_error=lambda e, b: errors.append(e), max_retries=1
        )
        drive(client)
        wait_for(publisher, 5)
        client.shutdown()
    assert errors == []
    assert [r.type for r in publisher.records] == [
        "identify",
        "group",
        "page_view",
        "product_view",
        "order_placed",
    ]
    assert (
        publisher.records[0].email == "jan@kwekerij-x.nl"
        and publisher.records[0].anonymous_id == "cookie-1"
    )
    assert (
        publisher.records[1].account_id == "erp-42" and publisher.records[3].account_id == "erp-42"
    )
    assert all(r.contact_id == "c-17" for r in publisher.records)


def test_rudder_sdk_python_with_gzip() -> None:
    from rudderstack.analytics.client import Client

    publisher = MemoryPublisher()
    with running(settings(), publisher) as url:
        errors: list[object] = []
        client = Client(
            write_key=KEY,
            host=url,
            on_error=lambda e, b: errors.append(e),
            max_retries=1,
            gzip=True,
        )
        drive(client)
        wait_for(publisher, 5)
        client.shutdown()
    assert errors == []
    assert [r.type for r in publisher.records] == [
        "identify",
        "group",
        "page_view",
        "product_view",
        "order_placed",
    ]
    assert len({r.event_id for r in publisher.records}) == 5  # messageId carried through
