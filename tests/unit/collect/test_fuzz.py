"""Fuzz every endpoint with malformed bodies: never a 5xx, never a lost valid event."""

from __future__ import annotations

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from journeys.producers.collect.publisher import MemoryPublisher
from tests.unit.collect.client import AUTH, request
from tests.unit.collect.client import settings as config

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
bodies = st.one_of(st.binary(max_size=200), json_values.map(orjson.dumps))
PATHS = [
    "/v1/track",
    "/v1/page",
    "/v1/screen",
    "/v1/identify",
    "/v1/group",
    "/v1/alias",
    "/v1/batch",
    "/v1/import",
    "/v1/t",
    "/v1/b",
    "/webhooks/orders",
    "/webhooks/sendgrid",
    "/webhooks/mandrill",
    "/webhooks/shopify",
]
VALID = {
    "type": "track",
    "event": "Product Viewed",
    "anonymousId": "a",
    "messageId": "ok-1",
    "timestamp": "2026-11-02T09:15:00Z",
}


@given(st.sampled_from(PATHS), bodies)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_no_endpoint_answers_5xx_to_garbage(path: str, body: bytes) -> None:
    answer = request(
        "POST",
        path,
        data=body,
        headers={**AUTH, "Content-Type": "application/json"},
        config=config(shopify_secret="s", mandrill_webhook_key="k"),
    )
    assert answer.status < 500, (path, body, answer.body)


@given(st.lists(json_values, max_size=6), st.integers(0, 6))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_valid_events_in_a_garbage_batch_are_never_lost(
    garbage: list[object], position: int
) -> None:
    batch = list(garbage)
    batch.insert(min(position, len(batch)), VALID)
    publisher = MemoryPublisher()
    answer = request("POST", "/v1/batch", publisher, json={"batch": batch}, headers=AUTH)
    assert answer.status == 200
    assert "ok-1" in [r.event_id for r in publisher.records]
    assert answer.body["accepted"] + answer.body["rejected"] == len(batch)
    assert len(publisher.dead_letters) == answer.body["rejected"]
