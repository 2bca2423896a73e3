"""A fast path for validating events that have the plain, common shape.

`Event` (pydantic) is the reference validator and gives every error message.
Most traffic is plain: string identities, an ISO 8601 time with a `Z` or
`±hh:mm` zone, a few typed properties. `fast_record` accepts exactly such an
event and builds the same `EventRecord` the reference would, several times
faster; for anything else it returns None and the caller asks the reference.
It never rejects: its only answers are "the same record" or "ask pydantic".
Tests check both paths agree on generated inputs.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from journeys.schemas.record import DMU_ROLES, EARLIEST_MS, LATEST_MS, EventRecord

_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,6})?(?:Z|[+-]\d\d:\d\d)\Z")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_CHANNELS = frozenset({"web", "email", "order", "sales"})
_ROLES = frozenset(DMU_ROLES)
_NUMBER = (int, float)
_INF = float("inf")
#: Typed string properties per channel (anything else in properties is free).
_STRINGS = {
    "web": ("url", "title", "referrer", "query", "sku", "cart_id"),
    "email": ("campaign_id", "message_id", "subject", "url"),
    "order": ("order_id", "quote_id", "cart_id"),
    "sales": ("deal_id", "stage", "owner"),
}
_AMOUNTS = {"order": ("amount",), "sales": ("amount",)}
_SORT = orjson.OPT_SORT_KEYS


def _identity(value: Any, limit: int) -> str | None | bool:
    """The normalised identity, None when absent or blank, False when unusual."""
    if value is None:
        return None
    if type(value) is not str:
        return False
    value = value.strip()
    if not value:
        return None
    return value if len(value) <= limit else False


def _is_number(value: Any) -> bool:
    return type(value) in _NUMBER


def _items_ok(items: Any) -> bool:
    if items is None:
        return True
    if type(items) is not list:
        return False
    for item in items:
        if type(item) is not dict or type(item.get("sku")) is not str:
            return False
        quantity = item.get("quantity")
        if type(quantity) is not int or quantity < 0:
            return False
        price = item.get("price")
        if price is not None and not _is_number(price):
            return False
    return True


def _plain_numbers(value: Any) -> bool:
    """No NaN, Infinity or integer beyond 64 bits anywhere inside (orjson would hide them)."""
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is dict:
            stack.extend(item.values())
        elif kind is list or kind is tuple:
            stack.extend(item)
        elif kind is float:
            if item != item or item in (_INF, -_INF):
                return False
        elif kind is int and not -(2**63) <= item < 2**64:
            return False
    return True


def _properties_ok(channel: str, props: dict[str, Any]) -> bool:
    for name in _STRINGS[channel]:
        value = props.get(name)
        if value is not None and type(value) is not str:
            return False
    for name in _AMOUNTS.get(channel, ()):
        value = props.get(name)
        if value is not None and not _is_number(value):
            return False
    if channel == "order":
        currency = props.get("currency")
        if currency is not None and (type(currency) is not str or len(currency) != 3):
            return False
        if props.get("payment_terms") not in (None, "immediate", "invoice"):
            return False
        if currency is not None and currency != currency.upper():
            return False
    if channel in ("web", "order"):
        return _items_ok(props.get("items"))
    return True


def fast_record(data: Any, from_json: bool = False) -> EventRecord | None:
    """The record for a plain, valid event; None when the reference validator must decide.

    `from_json` says `data` came from orjson, which never yields NaN, Infinity or integers
    beyond 64 bits; other Python objects are checked for them first.
    """
    if type(data) is not dict:
        return None
    channel = data.get("channel")
    if type(channel) is not str or channel not in _CHANNELS:
        return None
    event_id = _identity(data.get("event_id"), 128)
    if not event_id:
        return None  # absent ids are derived by the reference
    type_ = data.get("type")
    if type(type_) is not str:
        return None
    type_ = type_.strip().lower()
    if not 0 < len(type_) <= 64:
        return None
    when = data.get("occurred_at")
    if type(when) is not str or not _TIME.match(when):
        return None
    try:
        moment = datetime.fromisoformat(when)
    except ValueError:
        return None
    if not 1970 <= moment.year <= 2200:
        return None
    ts = (moment - _EPOCH) // _MS
    if not EARLIEST_MS <= ts < LATEST_MS:
        return None  # the reference says why
    anonymous_id = _identity(data.get("anonymous_id"), 256)
    contact_id = _identity(data.get("contact_id"), 256)
    account_id = _identity(data.get("account_id"), 256)
    email = _identity(data.get("email"), 320)
    if anonymous_id is False or contact_id is False or account_id is False or email is False:
        return None
    if email is not None:
        email = email.lower()  # type: ignore[union-attr]
        local, at, domain = email.rpartition("@")
        if not at or not local or "." not in domain or " " in email:
            return None
    if not (anonymous_id or contact_id or account_id or email):
        return None
    props = data.get("properties")
    if props is None:
        props = {}
    elif type(props) is not dict or not _properties_ok(channel, props):
        return None
    context = data.get("context")
    if context is None:
        context = {}
    elif type(context) is not dict:
        return None
    role = context.get("dmu_role")
    segment = context.get("segment")
    if (role is not None and (type(role) is not str or role not in _ROLES)) or (
        segment is not None and type(segment) is not str
    ):
        return None
    if not from_json and not (_plain_numbers(props) and _plain_numbers(context)):
        return None
    try:
        properties_json = orjson.dumps(props, option=_SORT).decode()
        context_json = orjson.dumps(
            {k: v for k, v in context.items() if v is not None}, option=_SORT
        ).decode()
    except TypeError:
        return None
    return EventRecord(
        event_id=event_id,  # type: ignore[arg-type]
        channel=channel,
        type=type_,
        ts=ts,
        anonymous_id=anonymous_id,  # type: ignore[arg-type]
        contact_id=contact_id,  # type: ignore[arg-type]
        email=email,
        account_id=account_id,  # type: ignore[arg-type]
        dmu_role=role,
        segment=segment,
        properties=properties_json,
        context=context_json,
    )
