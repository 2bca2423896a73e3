"""Values at and past the contract's limits are either valid or an `InvalidEvent`, never a crash.

Real producers send years 1 and 9999 with offsets, numbers as times, NaN and
integers past 64 bits. Each is refused with a reason (and so becomes a dead
letter); nothing else may escape validation, whatever the input.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from journeys.schemas.errors import InvalidEvent
from journeys.schemas.event import parse_event, validate_event
from journeys.schemas.record import LATEST_MS

BASE: dict[str, Any] = {
    "event_id": "e-1",
    "channel": "order",
    "type": "order_placed",
    "occurred_at": "2026-11-02T09:15:00Z",
    "account_id": "acme",
}


def _both(event: dict[str, Any]) -> list[Any]:
    """The outcome of validating from JSON text and from Python objects."""
    outcomes: list[Any] = []
    text = json.dumps(event).encode()  # json (unlike orjson) writes NaN and huge integers
    for validate in (lambda: parse_event(text), lambda: validate_event(event)):
        try:
            outcomes.append(validate())
        except InvalidEvent as exc:
            outcomes.append(exc)
    return outcomes


@pytest.mark.parametrize(
    "when",
    [
        "9999-12-31T23:59:59-14:00",
        "0001-01-01T00:00:00+14:00",
        "0001-01-01T00:00:00Z",
        "1969-12-31T23:59:59.999Z",
        "2200-01-01T00:00:00Z",
        "2300-06-01T00:00:00+02:00",
    ],
)
def test_times_outside_the_supported_range_are_invalid(when: str) -> None:
    for outcome in _both({**BASE, "occurred_at": when}):
        assert isinstance(outcome, InvalidEvent)
        assert "occurred_at" in str(outcome) and "1970" in str(outcome)


@pytest.mark.parametrize(
    ("when", "ts"),
    [
        ("1970-01-01T00:00:00Z", 0),
        ("1970-01-01T00:00:00-01:00", 3_600_000),
        ("2199-12-31T23:59:59.999Z", LATEST_MS - 1),
    ],
)
def test_the_range_ends_are_valid(when: str, ts: int) -> None:
    for outcome in _both({**BASE, "occurred_at": when}):
        assert not isinstance(outcome, InvalidEvent)
        assert outcome.ts == ts


@pytest.mark.parametrize("when", [1_793_610_900, 1_793_610_900_000, 0, 1.5, True])
def test_a_number_is_not_a_time(when: Any) -> None:
    for outcome in _both({**BASE, "occurred_at": when}):
        assert isinstance(outcome, InvalidEvent)
        assert "not a number" in str(outcome)


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("properties", {"amount": float("nan")}, "NaN or Infinity"),
        ("properties", {"free": [1, {"x": float("inf")}]}, "NaN or Infinity"),
        ("context", {"screen": -float("inf")}, "NaN or Infinity"),
        ("properties", {"items": [{"sku": "a", "quantity": 2**80}]}, "64 bits"),
        ("properties", {"free": {"deep": [-(2**63) - 1]}}, "64 bits"),
        ("properties", {"amount": 10**400}, "64 bits"),
    ],
)
def test_numbers_that_cannot_be_stored_are_invalid(field: str, value: Any, reason: str) -> None:
    for outcome in _both({**BASE, field: value}):
        assert isinstance(outcome, InvalidEvent), outcome
        assert reason in str(outcome)
        assert field in str(outcome)


def test_numbers_at_the_64_bit_ends_are_kept_exactly() -> None:
    props = {"big": 2**64 - 1, "small": -(2**63)}
    for outcome in _both({**BASE, "properties": props}):
        assert not isinstance(outcome, InvalidEvent)
        assert orjson.loads(outcome.properties) == props


def test_a_long_digit_string_is_not_a_number() -> None:
    props = {"phone": "0031201234567890123456"}
    for outcome in _both({**BASE, "properties": props}):
        assert not isinstance(outcome, InvalidEvent)
        assert orjson.loads(outcome.properties) == props


def test_deep_nesting_is_invalid_or_kept_never_a_crash() -> None:
    deep: Any = 1
    for _ in range(5_000):
        deep = [deep]
    text = b'{"event_id":"e","channel":"web","type":"x","occurred_at":"2026-11-02T09:15:00Z",'
    text += b'"anonymous_id":"a","properties":{"d":' + b"[" * 5_000 + b"]" * 5_000 + b"}}"
    with pytest.raises(InvalidEvent):
        parse_event(text)
    with pytest.raises(InvalidEvent):
        validate_event({**BASE, "properties": {"d": deep}})


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=12,
)
times = st.one_of(
    st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
    st.sampled_from(
        ["9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00", "2026-11-02T09:15:00Z"]
    ),
    json_values,
)
events = st.fixed_dictionaries(
    {},
    optional={
        "event_id": st.one_of(st.text(max_size=5), json_values),
        "channel": st.one_of(st.sampled_from(["web", "email", "order", "sales"]), json_values),
        "type": st.one_of(st.sampled_from(["order_placed", "add_to_cart", "x"]), json_values),
        "occurred_at": times,
        "anonymous_id": st.one_of(st.text(max_size=5), json_values),
        "email": st.one_of(st.sampled_from(["a@b.nl", "x@gmail.com", "nope"]), json_values),
        "account_id": json_values,
        "properties": json_values,
        "context": json_values,
    },
)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(value=st.one_of(events, json_values))
def test_no_exception_but_invalid_event_escapes_validation(value: Any) -> None:
    for outcome in _both(value) if isinstance(value, dict) else []:
        assert not isinstance(outcome, Exception) or isinstance(outcome, InvalidEvent)
    try:
        parse_event(json.dumps(value).encode())
    except InvalidEvent:
        pass


@settings(max_examples=200, deadline=None)
@given(raw=st.binary(max_size=200))
def test_arbitrary_bytes_are_invalid_or_an_event(raw: bytes) -> None:
    try:
        parse_event(raw)
    except InvalidEvent:
        pass
