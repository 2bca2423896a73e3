"""Properties of the Segment → contract mapping (pure functions, no server)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from journeys.producers.collect.segment import TRACK_NAMES, dmu_role, occurred_at, snake, to_event
from journeys.schemas.errors import InvalidEvent
from journeys.schemas.event import validate_event
from journeys.schemas.record import KNOWN_TYPES

RECEIVED = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
ids = st.text(
    st.characters(codec="utf-8", exclude_categories=["Cs", "Cc", "Z"]), min_size=1, max_size=20
)
moments = st.datetimes(
    min_value=datetime(2000, 1, 1),  # noqa: DTZ001 (hypothesis wants naive bounds)
    max_value=datetime(2090, 1, 1),  # noqa: DTZ001
    timezones=st.just(UTC),
)
names_with_case = st.sampled_from(sorted(TRACK_NAMES)).flatmap(
    lambda name: st.sampled_from([name, name.title(), name.upper(), f"  {name.title()} "])
)
OWNER = {t: c for c, types in KNOWN_TYPES.items() for t in types}


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


@given(names_with_case, ids, ids)
def test_spec_names_map_to_their_contract_type(
    name: str, anonymous_id: str, message_id: str
) -> None:
    message = {
        "type": "track",
        "event": name,
        "anonymousId": anonymous_id,
        "messageId": message_id,
        "timestamp": "2026-11-02T09:15:00Z",
    }
    record = validate_event(to_event(message, RECEIVED))
    assert (record.channel, record.type) == TRACK_NAMES[name.strip().lower()]
    assert record.event_id == message_id.strip()
    assert record.anonymous_id == anonymous_id.strip()


@given(st.sampled_from(sorted(OWNER)), st.sampled_from(["plain", "upper", "title", "padded"]))
def test_a_contract_type_as_event_name_maps_to_itself(type_: str, spelling: str) -> None:
    name = {
        "plain": type_,
        "upper": type_.upper(),
        "title": type_.replace("_", " ").title(),
        "padded": f"  {type_} ",
    }[spelling]
    message = {"type": "track", "event": name, "userId": "c-1", "timestamp": "2026-11-02T09:15:00Z"}
    record = validate_event(to_event(message, RECEIVED))
    assert (record.channel, record.type) == (OWNER[type_], type_)


@given(st.text(max_size=80))
def test_any_other_name_is_kept_snake_cased_and_valid(name: str) -> None:
    message = {"type": "track", "event": name, "userId": 42, "timestamp": "2026-11-02T09:15:00Z"}
    record = validate_event(to_event(message, RECEIVED))
    assert record.contact_id == "42"
    if name.strip().lower() not in TRACK_NAMES:
        assert record.type == snake(name)
        assert record.channel == OWNER.get(snake(name), "web")
    assert 1 <= len(record.type) <= 64


@given(st.text(max_size=40))
def test_snake_is_idempotent(name: str) -> None:
    assert snake(snake(name)) == snake(name)


@given(moments, moments, st.integers(-86_400_000, 86_400_000))
def test_clock_skew_correction(stamp: datetime, received: datetime, skew_ms: int) -> None:
    """timestamp = receivedAt - (sentAt - timestamp): the device clock's error is removed."""
    sent = stamp + timedelta(milliseconds=skew_ms)  # sentAt by the same (wrong) device clock
    message = {"timestamp": _iso(stamp), "sentAt": _iso(sent)}
    result = datetime.fromisoformat(occurred_at(message, received))
    assert result == received - (sent - stamp)
    assert datetime.fromisoformat(occurred_at({"timestamp": _iso(stamp)}, received)) == stamp
    assert datetime.fromisoformat(occurred_at({"sentAt": _iso(sent)}, received)) == received


@given(ids, ids, st.sampled_from(["track", "page", "screen", "identify", "group", "alias"]))
def test_identities_are_carried_by_every_call(anonymous_id: str, user_id: str, call: str) -> None:
    message = {
        "type": call,
        "event": "Product Viewed",
        "anonymousId": anonymous_id,
        "previousId": anonymous_id,
        "userId": user_id,
        "groupId": "erp-1",
        "timestamp": "2026-11-02T09:15:00Z",
        "traits": {"email": "Jan@Acme.NL"},
        "context": {"traits": {"email": "other@acme.nl"}},
    }
    record = validate_event(to_event(message, RECEIVED))
    assert (record.anonymous_id, record.contact_id) == (anonymous_id.strip(), user_id.strip())
    assert record.email == "jan@acme.nl"  # the call's own traits win over context.traits
    assert record.account_id == ("erp-1" if call == "group" else None)
    expected_type = {"track": "product_view", "page": "page_view", "screen": "page_view"}.get(
        call, call
    )
    assert (record.channel, record.type) == ("web", expected_type)


def test_context_group_and_traits_fill_account_role_and_segment() -> None:
    message = {
        "type": "page",
        "anonymousId": "a",
        "timestamp": "2026-11-02T09:15:00Z",
        "context": {
            "groupId": "kwekerij-x",
            "page": {"url": "https://x/p", "title": "P"},
            "traits": {"dmu_role": "Decider", "segment": "tomato growers"},
            "ip": "1.2.3.4",
        },
    }
    record = validate_event(to_event(message, RECEIVED))
    assert (record.account_id, record.dmu_role, record.segment) == (
        "kwekerij-x",
        "decider",
        "tomato growers",
    )
    assert orjson.loads(record.properties) == {"url": "https://x/p", "title": "P"}
    assert orjson.loads(record.context)["ip"] == "1.2.3.4"


def test_a_role_outside_the_contract_is_left_out() -> None:
    assert [dmu_role(v) for v in ("Buyer", " user ", "ceo", 3, None)] == [
        "buyer",
        "user",
        None,
        None,
        None,
    ]


def test_cart_products_become_items_and_orders_carry_amount_and_currency() -> None:
    added = to_event(
        {
            "type": "track",
            "event": "Product Added",
            "userId": "c",
            "properties": {"sku": "KAS-200", "quantity": 3, "price": 9.5},
        },
        RECEIVED,
    )
    assert added["properties"]["items"] == [{"sku": "KAS-200", "quantity": 3, "price": 9.5}]
    refunded = to_event(
        {
            "type": "track",
            "event": "Order Refunded",
            "userId": "c",
            "properties": {"order_id": 7, "revenue": 12, "currency": "eur"},
        },
        RECEIVED,
    )
    assert (refunded["channel"], refunded["type"]) == ("order", "order_returned")
    assert refunded["properties"] == {
        "order_id": "7",
        "revenue": 12,
        "amount": 12,
        "currency": "EUR",
    }


def test_unknown_call_types_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown Segment call type"):
        to_event({"type": "bogus", "userId": "c"}, RECEIVED)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3)
    ),
    max_leaves=10,
)
messages = st.fixed_dictionaries(
    {},
    optional={
        k: json_values
        for k in (
            "type",
            "event",
            "messageId",
            "anonymousId",
            "userId",
            "groupId",
            "previousId",
            "timestamp",
            "sentAt",
            "properties",
            "traits",
            "context",
            "name",
        )
    },
)


@given(messages)
@settings(max_examples=300)
def test_arbitrary_messages_map_or_fail_with_a_reason(message: dict[str, object]) -> None:
    """Garbage never escapes as anything but ValueError (mapping) or InvalidEvent (validation)."""
    try:
        event = to_event(message, RECEIVED)
    except ValueError as exc:
        assert str(exc)
        return
    try:
        validate_event(event)
    except InvalidEvent as exc:
        assert str(exc)


TOLERANCE = timedelta(seconds=5)


@given(moments, st.integers(-5000, 5000), st.integers(0, 4000))
def test_a_clock_within_the_tolerance_keeps_its_times(
    stamp: datetime, skew_ms: int, latency_ms: int
) -> None:
    """Within the tolerance `timestamp` is kept as sent: whatever the latency, a retry of the
    same call gets the same time."""
    received = stamp + timedelta(milliseconds=latency_ms)
    sent = received + timedelta(milliseconds=skew_ms)
    message = {"timestamp": _iso(stamp), "sentAt": _iso(sent)}
    assert datetime.fromisoformat(occurred_at(message, received, TOLERANCE)) == stamp


def test_a_redelivery_is_the_same_event_at_the_same_time() -> None:
    """analytics.js resends a call after a 429 with a new sentAt; it stays one event."""
    call = {
        "type": "track",
        "event": "Product Viewed",
        "anonymousId": "a",
        "messageId": "m-7",
        "timestamp": "2026-11-02T09:59:59.900Z",
    }
    first = to_event({**call, "sentAt": "2026-11-02T09:59:59.950Z"}, RECEIVED, None, TOLERANCE)
    later = RECEIVED + timedelta(seconds=3)
    retry = to_event({**call, "sentAt": "2026-11-02T10:00:02.990Z"}, later, None, TOLERANCE)
    assert (first["event_id"], first["occurred_at"]) == (retry["event_id"], retry["occurred_at"])
    assert first["occurred_at"] == "2026-11-02T09:59:59.900000Z"


def test_calls_of_one_tick_keep_their_order() -> None:
    """A view and the order right after it, sent in two requests: the order stays after."""
    view = {"type": "track", "event": "Product Viewed", "anonymousId": "a"}
    order = {"type": "track", "event": "Order Completed", "anonymousId": "a"}
    first = to_event(
        {**view, "timestamp": "2026-11-02T10:00:00.001Z", "sentAt": "2026-11-02T10:00:00.002Z"},
        RECEIVED + timedelta(milliseconds=900),  # a slow first request
        None,
        TOLERANCE,
    )
    second = to_event(
        {**order, "timestamp": "2026-11-02T10:00:00.002Z", "sentAt": "2026-11-02T10:00:00.003Z"},
        RECEIVED + timedelta(milliseconds=40),
        None,
        TOLERANCE,
    )
    assert first["occurred_at"] < second["occurred_at"]


def test_a_clock_off_by_more_than_the_tolerance_is_corrected() -> None:
    message = {"timestamp": "2026-11-02T09:00:00Z", "sentAt": "2026-11-02T09:00:06Z"}
    received = datetime(2026, 11, 2, 9, 0, 0, tzinfo=UTC)  # the device is 6 s ahead
    assert occurred_at(message, received, TOLERANCE) == "2026-11-02T08:59:54Z"


extreme_times = st.one_of(
    st.sampled_from(
        [
            "9999-12-31T23:59:59-14:00",
            "0001-01-01T00:00:00+14:00",
            "0001-01-01T00:00:00Z",
            "9999-12-31T23:59:59.999999Z",
            "",
            "abc",
            "2026-02-30T00:00:00Z",
        ]
    ),
    st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
    st.integers(),
    st.floats(),
    st.none(),
)


@given(extreme_times, extreme_times, extreme_times)
@settings(max_examples=300)
def test_no_time_makes_the_mapping_raise_anything_but_value_error(
    timestamp: object, sent: object, original: object
) -> None:
    message = {
        "type": "page",
        "anonymousId": "a",
        "timestamp": timestamp,
        "sentAt": sent,
        "originalTimestamp": original,
    }
    for tolerance in (timedelta(0), TOLERANCE):
        try:
            event = to_event(message, RECEIVED, None, tolerance)
        except ValueError as exc:
            assert str(exc)
            continue
        try:
            validate_event(event)
        except InvalidEvent as exc:
            assert str(exc)
