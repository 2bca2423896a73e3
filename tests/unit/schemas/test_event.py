"""Contract section 1: the event, its validation and normalisation."""

from __future__ import annotations

import orjson
import pytest

from journeys.schemas.errors import InvalidEvent
from journeys.schemas.event import event_json_schema, parse_event, validate_event

BASE = {
    "event_id": "01JD3K8Q2W5T9Z7Y4X6V1B0N3M",
    "channel": "web",
    "type": "page_view",
    "occurred_at": "2026-11-02T09:15:00.000Z",
    "anonymous_id": "a1b2c3",
    "contact_id": "c-17",
    "email": "inkoop@kwekerij-x.nl",
    "account_id": "kwekerij-x",
    "properties": {"url": "https://shop.example/blog/afwatering"},
    "context": {"dmu_role": "buyer", "segment": "tomato growers"},
}


def parse(**changes: object) -> object:
    data = {**BASE, **changes}
    return parse_event(orjson.dumps({k: v for k, v in data.items() if v is not ...}))


def reason(raw: bytes) -> str:
    with pytest.raises(InvalidEvent) as info:
        parse_event(raw)
    return str(info.value)


def test_the_contract_example_is_valid() -> None:
    record = parse_event(orjson.dumps(BASE))
    assert (record.event_id, record.channel, record.type, record.account_id) == (
        "01JD3K8Q2W5T9Z7Y4X6V1B0N3M",
        "web",
        "page_view",
        "kwekerij-x",
    )
    assert (record.dmu_role, record.segment) == ("buyer", "tomato growers")
    assert record.ts == 1793610900000
    assert orjson.loads(record.properties) == BASE["properties"]


def test_times_are_stored_in_utc() -> None:
    record = parse(occurred_at="2026-11-02T10:15:00+01:00")
    assert record.ts == 1793610900000  # type: ignore[attr-defined]
    assert record.occurred_at.isoformat() == "2026-11-02T09:15:00+00:00"  # type: ignore[attr-defined]


def test_emails_are_lower_cased_and_stripped() -> None:
    assert parse(email="  Inkoop@Kwekerij-X.NL ").email == "inkoop@kwekerij-x.nl"  # type: ignore[attr-defined]


def test_event_id_is_derived_deterministically_when_absent() -> None:
    first, second = parse(event_id=...), parse(event_id=...)
    assert first.event_id == second.event_id and first.event_id.startswith("ev_")  # type: ignore[attr-defined]
    assert parse(event_id=..., type="pricing_view").event_id != first.event_id  # type: ignore[attr-defined]


def test_unknown_types_are_valid() -> None:
    assert parse(type="webinar_attended").type == "webinar_attended"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"{not json", "invalid JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'"text"', "not a JSON object"),
    ],
)
def test_bad_json(raw: bytes, expected: str) -> None:
    assert expected in reason(raw)


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"channel": "fax"}, "channel"),
        ({"anonymous_id": ..., "contact_id": ..., "email": ..., "account_id": ...}, "no identity"),
        ({"anonymous_id": " ", "contact_id": None, "email": ..., "account_id": ""}, "no identity"),
        ({"occurred_at": ...}, "occurred_at"),
        ({"occurred_at": "2026-11-02T09:15:00"}, "timezone"),
        ({"occurred_at": "yesterday"}, "occurred_at"),
        ({"type": 7}, "type"),
        ({"properties": [1]}, "properties"),
        ({"email": "not-an-address"}, "email"),
        ({"context": {"dmu_role": "janitor"}}, "dmu_role"),
        (
            {"channel": "order", "properties": {"items": [{"sku": "A", "quantity": "lots"}]}},
            "items",
        ),
        ({"channel": "order", "properties": {"payment_terms": "barter"}}, "payment_terms"),
    ],
)
def test_invalid_events_say_why(changes: dict[str, object], expected: str) -> None:
    data = {k: v for k, v in {**BASE, **changes}.items() if v is not ...}
    assert expected in reason(orjson.dumps(data))


def test_order_properties_are_typed() -> None:
    record = validate_event(
        {
            **BASE,
            "channel": "order",
            "type": "order_placed",
            "properties": {
                "order_id": "o-1",
                "amount": 1250.5,
                "currency": "EUR",
                "payment_terms": "invoice",
                "items": [{"sku": "KAS-1", "quantity": 3, "price": 416.83}],
            },
        }
    )
    assert orjson.loads(record.properties)["items"][0]["sku"] == "KAS-1"


def test_round_trip_through_the_contract_json() -> None:
    record = parse_event(orjson.dumps(BASE))
    assert parse_event(record.to_json()) == record


def test_json_schema_describes_the_contract() -> None:
    schema = event_json_schema()
    assert set(schema["required"]) == {"channel", "type", "occurred_at"}
    assert schema["properties"]["channel"]["enum"] == ["web", "email", "order", "sales"]


def test_a_byte_order_mark_before_the_json_is_ignored() -> None:
    raw = orjson.dumps(
        {"event_id": "b1", "channel": "web", "type": "page_view", "anonymous_id": "v1"}
        | {"occurred_at": "2026-01-01T00:00:00Z"}
    )
    assert parse_event(b"\xef\xbb\xbf" + raw) == parse_event(raw)
    assert parse_event("\ufeff" + raw.decode()) == parse_event(raw)
    with pytest.raises(InvalidEvent):
        parse_event(b"\xef\xbb\xbf\xef\xbb\xbf" + raw)  # only one, only first
