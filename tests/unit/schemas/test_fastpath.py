"""The fast path and the reference validator agree on every input."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from journeys.schemas.errors import InvalidEvent
from journeys.schemas.event import reference_record
from journeys.schemas.fastpath import fast_record

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


@given(events())
@settings(max_examples=3000, deadline=None)
def test_fast_path_agrees_with_the_reference(data: dict[str, Any]) -> None:
    fast = fast_record(data)
    if fast is not None:
        assert fast == reference(data)


def test_plain_events_take_the_fast_path() -> None:
    data = {
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
    record = fast_record(data)
    assert record is not None and record == reference(data)
    assert record.ts == 1793610900123
