"""The msgspec decoder and the reference validator agree on every input.

The decoder answers "this record" or "ask the reference", never "invalid": so
every record it builds must be the reference's, from JSON text and from Python
objects alike, and every rejection keeps the reference's reason.
"""

from __future__ import annotations

import json
from dataclasses import FrozenInstanceError
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from journeys.schemas.decode import decode_line, decode_object
from journeys.schemas.errors import InvalidEvent
from journeys.schemas.event import Event, parse_event, reference_record
from journeys.schemas.record import EventRecord, new_record

texts = st.one_of(
    st.none(), st.text(max_size=12), st.sampled_from(["", "  ", " x ", "A@B.NL", "a@b"])
)
scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=False), texts)
times = st.one_of(
    st.sampled_from(
        [
            "2026-11-02T09:15:00Z",
            "2026-11-02T09:15:00.123Z",
            "2026-11-02T10:15:00+01:00",
            "2026-11-02T09:15:00",
            "2026-11-02 09:15:00Z",
            "2026-02-30T09:15:00Z",
            "2026-11-02T09:15:00.1234567Z",
            "2026-11-02T09:15:00+0100",
            "1969-12-31T23:59:59.999Z",
            "2026-11-02T23:59:60Z",
            "2026-11-02T09:15:00.5-03:30",
        ]
    ),
    scalars,
)
items = st.lists(
    st.fixed_dictionaries(
        {"sku": st.one_of(st.text(max_size=4), st.integers())},
        optional={
            "quantity": st.one_of(st.integers(-2, 5), st.floats(0, 3), st.booleans()),
            "price": st.one_of(st.none(), st.integers(0, 9), st.floats(0, 9), st.text(max_size=3)),
        },
    ),
    max_size=3,
)
properties = st.one_of(
    st.none(),
    st.lists(st.integers(), max_size=1),
    st.fixed_dictionaries(
        {},
        optional={
            "url": scalars,
            "order_id": scalars,
            "amount": scalars,
            "currency": st.sampled_from(["EUR", "eur", "EURO", 5]),
            "payment_terms": st.sampled_from(["invoice", "immediate", "cash", None]),
            "items": st.one_of(items, scalars),
            "free": st.dictionaries(st.text(max_size=3), scalars, max_size=2),
            "deal_id": scalars,
        },
    ),
)
contexts = st.one_of(
    st.none(),
    st.integers(),
    st.fixed_dictionaries(
        {},
        optional={
            "dmu_role": st.sampled_from(["buyer", "decider", "janitor", None, 3]),
            "segment": scalars,
            "page": st.dictionaries(st.text(max_size=3), scalars, max_size=2),
            "locale": scalars,
        },
    ),
)
BASE = {
    "event_id": "e-1",
    "channel": "web",
    "type": "page_view",
    "occurred_at": "2026-11-02T09:15:00Z",
    "anonymous_id": "a1",
    "contact_id": "c1",
    "email": "jan@acme.nl",
    "account_id": "erp-1",
    "properties": {"url": "https://x"},
    "context": {"dmu_role": "buyer"},
}
FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "event_id": st.one_of(texts, st.integers()),
    "channel": st.sampled_from(["web", "email", "order", "sales", "fax", None]),
    "type": st.one_of(st.sampled_from(["page_view", " Order_Placed ", "", "x" * 70]), scalars),
    "occurred_at": times,
    "anonymous_id": scalars,
    "contact_id": scalars,
    "email": scalars,
    "account_id": scalars,
    "properties": properties,
    "context": contexts,
    "extra": scalars,
}


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    """A valid event with a few fields changed or removed."""
    data = dict(BASE)
    for name in draw(st.lists(st.sampled_from(sorted(FIELDS)), max_size=4, unique=True)):
        if draw(st.booleans()):
            data[name] = draw(FIELDS[name])
        else:
            data.pop(name, None)
    return data


def reference(data: Any) -> Any:
    try:
        return reference_record(data)
    except InvalidEvent:
        return "invalid"


def reference_json(raw: bytes) -> Any:
    try:
        return Event.model_validate_json(raw).to_record()
    except ValidationError:
        return "invalid"


@given(events())
@settings(max_examples=3000, deadline=None)
def test_objects_decode_as_the_reference_validates(data: dict[str, Any]) -> None:
    fast = decode_object(data)
    if fast is not None:
        assert fast == reference(data)


@given(events())
@settings(max_examples=3000, deadline=None)
def test_json_lines_decode_as_the_reference_validates(data: dict[str, Any]) -> None:
    raw = json.dumps(data).encode()  # big integers kept, and Infinity as Python writes it
    fast = decode_line(raw)
    if fast is not None:
        assert fast == reference_json(raw)


PLAIN = {
    "event_id": "e1",
    "channel": "order",
    "type": "order_placed",
    "occurred_at": "2026-11-02T09:15:00.123Z",
    "account_id": "erp-1",
    "properties": {
        "order_id": "o1",
        "amount": 10.5,
        "currency": "EUR",
        "payment_terms": "invoice",
        "items": [{"sku": "A", "quantity": 2, "price": 5.25}],
    },
    "context": {"dmu_role": "buyer"},
}


def test_plain_events_are_decoded_without_the_reference() -> None:
    record = decode_line(orjson.dumps(PLAIN))
    assert record is not None and record == reference(PLAIN)
    assert record.ts == 1793610900123
    assert decode_object(PLAIN) == record


def test_an_event_without_an_id_gets_the_references_derived_id() -> None:
    data = {k: v for k, v in PLAIN.items() if k != "event_id"}
    data["occurred_at"] = "2026-11-02T10:15:00.5+01:00"
    data["context"] = {"dmu_role": "buyer", "page": {"x": None}, "segment": None}
    record = decode_line(orjson.dumps(data))
    assert record is not None and record.event_id.startswith("ev_")
    assert record == reference(data)


BIG = str(2**70).encode()  # 70 bits: msgspec keeps it exact, the reference judges it


def line(**changes: Any) -> bytes:
    """PLAIN with `changes`, as JSON; the text "BIG" becomes a 70-bit integer."""
    return orjson.dumps({**PLAIN, **changes}).replace(b'"BIG"', BIG)


@pytest.mark.parametrize(
    "raw",
    [
        line(occurred_at="2026-11-02T09:15:00.9999999Z"),  # msgspec would round, pydantic cuts
        line(occurred_at="2026-W45-1T09:15:00.000Z"),  # Python reads week dates, the contract not
        line(occurred_at="2026-11-02T09:15:00.000"),  # no zone
        line(properties={"big": "BIG"}),
        line(properties={"amount": "10.50"}),  # text amounts: the reference's lax reading
        line(account_id=5),
        b"[1, 2]",
    ],
)
def test_unusual_input_goes_to_the_reference(raw: bytes) -> None:
    assert decode_line(raw) is None


def test_rejections_keep_the_references_reason() -> None:
    with pytest.raises(InvalidEvent, match="does not fit in 64 bits"):
        parse_event(line(properties={"n": "BIG"}))
    with pytest.raises(InvalidEvent, match="channel: Input should be 'web'"):
        parse_event(line(channel="fax"))


def test_new_record_is_an_ordinary_frozen_event_record() -> None:
    values = ("e1", "web", "page_view", 5, None, None, None, "a1", None, None, "{}", "{}")
    made = new_record(*values)
    assert type(made) is EventRecord and made == EventRecord(*values)
    assert hash(made) == hash(EventRecord(*values))
    with pytest.raises(FrozenInstanceError):
        made.ts = 6  # type: ignore[misc]
