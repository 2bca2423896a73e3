"""One decode and validation per event, in C: the event's JSON straight to an `EventRecord`.

msgspec reads the JSON text into a typed `Struct` (a `Literal` channel,
strings where the contract says strings, the per-channel typed properties)
in one pass, then a few lines of Python normalise what msgspec cannot
(identities stripped, the email lower-cased, the time taken to UTC
milliseconds) and canonicalise the free `properties` and `context`.

The answer is the same `EventRecord` that the reference validator
(`schemas.event.Event`, pydantic) builds, or None: msgspec never rejects on
its own. Anything it does not take (malformed JSON, a wrong type, a time in
an unusual but valid form, a missing `event_id`, a 70-bit integer) goes to the
reference, which decides and, for invalid input, gives the one dead-letter
reason every reader of input reports. Tests check both paths agree on
generated inputs, so the reasons stay the reference's wording.

`decode_line` is for JSON text (replay, ingest); `decode_object` for a
Python object built in-process (the collector's mapped events, simulators).
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import msgspec
import orjson

from journeys.schemas.record import EARLIEST_MS, LATEST_MS, EventRecord, new_record

_MS = timedelta(milliseconds=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: The common, unambiguous form of a time; other forms pydantic may still accept go there.
_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,6})?(?:Z|[+-]\d\d:\d\d)\Z")
_SORT = orjson.OPT_SORT_KEYS
Number = int | float


class _Item(msgspec.Struct, gc=False):
    """One line of a cart, quote or order (`schemas.event.LineItem`)."""

    sku: str
    quantity: Annotated[int, msgspec.Meta(ge=0)]
    price: Number | None = None


class _Web(msgspec.Struct, gc=False):
    """Typed web properties (`schemas.event.WebProperties`); other keys are free."""

    url: str | None = None
    title: str | None = None
    referrer: str | None = None
    query: str | None = None
    sku: str | None = None
    cart_id: str | None = None
    items: list[_Item] | None = None


class _Email(msgspec.Struct, gc=False):
    """Typed email properties (`schemas.event.EmailProperties`)."""

    campaign_id: str | None = None
    message_id: str | None = None
    subject: str | None = None
    url: str | None = None


class _Order(msgspec.Struct, gc=False):
    """Typed order properties (`schemas.event.OrderProperties`)."""

    order_id: str | None = None
    quote_id: str | None = None
    cart_id: str | None = None
    amount: Number | None = None
    currency: Annotated[str, msgspec.Meta(min_length=3, max_length=3)] | None = None
    items: list[_Item] | None = None
    payment_terms: Literal["immediate", "invoice"] | None = None


class _Sales(msgspec.Struct, gc=False):
    """Typed sales properties (`schemas.event.SalesProperties`)."""

    deal_id: str | None = None
    stage: str | None = None
    owner: str | None = None
    amount: Number | None = None


_PROPERTIES: dict[str, type[msgspec.Struct]] = {
    "web": _Web,
    "email": _Email,
    "order": _Order,
    "sales": _Sales,
}
#: The typed text properties per channel, and every other typed property of any channel.
_TEXTS: dict[str, frozenset[str]] = {
    channel: frozenset(f.name for f in msgspec.structs.fields(cls) if f.type == str | None)
    for channel, cls in _PROPERTIES.items()
}
_SPECIAL = frozenset(
    name for cls in _PROPERTIES.values() for name in cls.__struct_fields__
) - frozenset().union(*_TEXTS.values())


Identity = Annotated[str, msgspec.Meta(max_length=256)]


class _Wire(msgspec.Struct, gc=False):
    """The event as its JSON carries it; unknown top-level keys are ignored."""

    channel: Literal["web", "email", "order", "sales"]
    type: str
    occurred_at: str
    event_id: Annotated[str, msgspec.Meta(max_length=128)] | None = None
    anonymous_id: Identity | None = None
    contact_id: Identity | None = None
    email: str | None = None
    account_id: Identity | None = None
    properties: dict[str, Any] | None = None
    context: dict[str, Any] | None = None


_DECODER = msgspec.json.Decoder(_Wire)
_ROLES = frozenset(("initiator", "gatekeeper", "influencer", "decider", "buyer", "user"))
#: What makes the decoder hand an input to the reference (which says why it is invalid).
_ERRORS = (msgspec.ValidationError, msgspec.DecodeError, RecursionError)


def decode_line(raw: bytes | str) -> EventRecord | None:
    """The record of one plain, valid event's JSON text; None when the reference decides."""
    try:
        wire = _DECODER.decode(raw)
    except _ERRORS:
        return None
    return _finish(wire)


def decode_object(data: Any) -> EventRecord | None:
    """The record of a plain, valid event given as Python objects; None when the reference
    decides. The caller has refused NaN, Infinity and integers beyond 64 bits inside."""
    if type(data) is not dict:
        return None
    try:
        wire = msgspec.convert(data, _Wire)
    except _ERRORS:
        return None
    return _finish(wire)


def _ms(text: str) -> int | None:
    """UTC milliseconds of a time in the contract's form and range, else None.

    The form producers use (`2026-11-02T09:15:00.123Z`) is recognised by its shape,
    any other by the strict pattern: Python's parser alone accepts more than the
    contract (week dates, no zone, an hour-only offset). (Reading the fields through
    lookup tables instead was measured slower than the C parser.)"""
    if not (len(text) == 24 and text[4:20:3] == "--T::." and text[23] == "Z") and not (
        _TIME.match(text)
    ):
        return None
    try:
        ts = (datetime.fromisoformat(text) - _EPOCH) // _MS
    except ValueError:
        return None
    return ts if EARLIEST_MS <= ts < LATEST_MS else None


def _email(value: str) -> str | None:
    """The stripped, lower-cased address; None when blank, "" when unusual (the reference
    decides)."""
    value = value.strip().lower()
    if not value:
        return None
    local, at, domain = value.rpartition("@")
    if not at or not local or "." not in domain or " " in value or len(value) > 320:
        return ""
    return value


def _properties_ok(channel: str, props: dict[str, Any]) -> bool:
    """Whether the typed properties of `channel` have their types (other keys are free).

    Text fields are checked here; an event with any other typed field (amounts,
    items, currency, payment terms) is checked whole by msgspec."""
    texts = _TEXTS[channel]
    for key, value in props.items():
        if key in texts:
            if value is not None and type(value) is not str:
                return False
        elif key in _SPECIAL:
            try:
                msgspec.convert(props, _PROPERTIES[channel])
            except _ERRORS:
                return False
            return True
    return True


def _context(context: dict[str, Any]) -> tuple[str | None, str | None, str] | None:
    """The DMU role, segment and stored context (canonical JSON without nulls), None when
    the reference must decide."""
    role = context.get("dmu_role")
    segment = context.get("segment")
    if (role is not None and (type(role) is not str or role not in _ROLES)) or (
        segment is not None and type(segment) is not str
    ):
        return None
    if None in context.values():
        context = {k: v for k, v in context.items() if v is not None}
    try:
        return role, segment, orjson.dumps(context, option=_SORT).decode()
    except TypeError:  # an integer beyond 64 bits, or an object JSON cannot hold
        return None


def _finish(wire: _Wire) -> EventRecord | None:
    """The normalised record of a decoded event, or None when the reference must decide."""
    ts = _ms(wire.occurred_at)
    type_ = wire.type.strip().lower()
    if ts is None or not type_ or len(type_) > 64:
        return None
    anonymous_id, contact_id, account_id, email = (
        wire.anonymous_id,
        wire.contact_id,
        wire.account_id,
        wire.email,
    )
    if anonymous_id is not None:
        anonymous_id = anonymous_id.strip() or None
    if contact_id is not None:
        contact_id = contact_id.strip() or None
    if account_id is not None:
        account_id = account_id.strip() or None
    if email is not None:
        email = _email(email)
        if email == "":
            return None
    if not (anonymous_id or contact_id or account_id or email):
        return None
    props = wire.properties
    if props:
        if not _properties_ok(wire.channel, props):
            return None
        try:
            properties_json = orjson.dumps(props, option=_SORT).decode()
        except TypeError:  # an integer beyond 64 bits, or an object JSON cannot hold
            return None
    else:
        properties_json = "{}"
    role = segment = None
    context_json = "{}"
    if wire.context:
        found = _context(wire.context)
        if found is None:
            return None
        role, segment, context_json = found
    event_id = wire.event_id
    if event_id is not None:
        event_id = event_id.strip() or None
    if event_id is None:
        event_id = _derived_id(wire, type_, anonymous_id, contact_id, email, account_id)
    return new_record(
        event_id,
        wire.channel,
        type_,
        ts,
        anonymous_id,
        contact_id,
        email,
        account_id,
        role,
        segment,
        properties_json,
        context_json,
    )


def _derived_id(
    wire: _Wire,
    type_: str,
    anonymous_id: Any,
    contact_id: Any,
    email: Any,
    account_id: Any,
) -> str:
    """The content-derived id of an event sent without one (`schemas.event.derive_event_id`)."""
    moment = datetime.fromisoformat(wire.occurred_at).astimezone(UTC)
    context = wire.context or {}
    return content_id(
        {
            "channel": wire.channel,
            "type": type_,
            "occurred_at": moment.isoformat(),
            "anonymous_id": anonymous_id,
            "contact_id": contact_id,
            "email": email,
            "account_id": account_id,
            "properties": wire.properties or {},
            "context": {k: v for k, v in context.items() if v is not None},
        }
    )


def content_id(content: dict[str, Any]) -> str:
    """The id of an event derived from its normalised content, so a resent event without an
    id is one event: `ev_` and 32 hex digits of the SHA-256 of its canonical JSON."""
    digest = hashlib.sha256(orjson.dumps(content, default=str, option=_SORT))
    return "ev_" + digest.hexdigest()[:32]
