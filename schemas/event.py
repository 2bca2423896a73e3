"""The event: the one JSON object every channel produces (contract section 1).

`Event` validates and normalises one event straight from bytes or a dict:
emails lower-cased, identities stripped, times converted to UTC, per-channel
properties typed. `EventRecord` is the lean, already-validated form the
journey engine and the writers handle on the hot path.

Errors raised here are `InvalidEvent` (see `schemas.errors`), whose message is
the reason stored with the dead letter.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

import orjson
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from journeys.schemas.decode import content_id, decode_line, decode_object
from journeys.schemas.errors import InvalidEvent
from journeys.schemas.record import EARLIEST, IDENTITY_FIELDS, LATEST, EventRecord, to_ms

#: Integers a JSON number may hold and still be stored exactly (int64 .. uint64).
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1

Channel = Literal["web", "email", "order", "sales"]
DmuRole = Literal["initiator", "gatekeeper", "influencer", "decider", "buyer", "user"]


class _Open(BaseModel):
    """Base for free objects with a few typed, checked fields; other keys are kept."""

    model_config = ConfigDict(extra="allow", frozen=True)


class LineItem(_Open):
    """One line of a cart, quote or order."""

    sku: str
    quantity: int = Field(ge=0)
    price: Decimal | None = None


class OrderProperties(_Open):
    """Typed order-channel properties (contract section 1)."""

    order_id: str | None = None
    quote_id: str | None = None
    cart_id: str | None = None
    amount: Decimal | None = None
    currency: str | None = Field(default=None, min_length=3, max_length=3)
    items: list[LineItem] | None = None
    payment_terms: Literal["immediate", "invoice"] | None = None

    @field_validator("currency")
    @classmethod
    def _upper(cls, value: str | None) -> str | None:
        return value.upper() if value else value


class WebProperties(_Open):
    """Typed web-channel properties; carts on the web carry the order fields too."""

    url: str | None = None
    title: str | None = None
    referrer: str | None = None
    query: str | None = None
    sku: str | None = None
    cart_id: str | None = None
    items: list[LineItem] | None = None


class EmailProperties(_Open):
    """Typed email-channel properties."""

    campaign_id: str | None = None
    message_id: str | None = None
    subject: str | None = None
    url: str | None = None


class SalesProperties(_Open):
    """Typed sales-channel properties."""

    deal_id: str | None = None
    stage: str | None = None
    owner: str | None = None
    amount: Decimal | None = None


_PROPERTY_MODELS: dict[str, type[_Open]] = {
    "web": WebProperties,
    "email": EmailProperties,
    "order": OrderProperties,
    "sales": SalesProperties,
}


class Context(_Open):
    """Who acted and in which segment; other context keys are kept as given."""

    dmu_role: DmuRole | None = None
    segment: str | None = None


def _blank_to_none(value: Any) -> Any:
    if isinstance(value, str):
        value = value.strip()
        return value or None
    return value


class Event(BaseModel):
    """One event, validated and normalised (contract section 1)."""

    model_config = ConfigDict(frozen=True, extra="ignore", str_strip_whitespace=True)

    event_id: str | None = Field(default=None, max_length=128)
    channel: Channel
    type: str = Field(min_length=1, max_length=64)
    occurred_at: AwareDatetime
    anonymous_id: str | None = Field(default=None, max_length=256)
    contact_id: str | None = Field(default=None, max_length=256)
    email: str | None = Field(default=None, max_length=320)
    account_id: str | None = Field(default=None, max_length=256)
    properties: dict[str, Any] = Field(default_factory=dict)
    context: Context = Field(default_factory=Context)

    @field_validator("event_id", "anonymous_id", "contact_id", "account_id", mode="before")
    @classmethod
    def _strip(cls, value: Any) -> Any:
        return _blank_to_none(value)

    @field_validator("email", mode="before")
    @classmethod
    def _email(cls, value: Any) -> Any:
        value = _blank_to_none(value)
        if value is None or not isinstance(value, str):
            return value
        value = value.lower()
        local, at, domain = value.rpartition("@")
        if not at or not local or "." not in domain or " " in value:
            raise ValueError(f"not an email address: {value!r}")
        return value

    @field_validator("type", mode="before")
    @classmethod
    def _type(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("occurred_at", mode="before")
    @classmethod
    def _time_text(cls, value: Any) -> Any:
        if isinstance(value, int | float | Decimal):  # bool is an int too
            raise ValueError(
                "give an ISO 8601 time with a zone (2026-11-02T09:15:00Z), not a number"
            )
        return value

    @field_validator("occurred_at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        try:
            value = value.astimezone(UTC)
        except OverflowError:  # year 1 or 9999 shifted past the calendar's ends
            value = EARLIEST - timedelta(days=1)
        if not EARLIEST <= value < LATEST:
            raise ValueError("time outside 1970-01-01T00:00:00Z .. 2200-01-01T00:00:00Z")
        return value

    @field_validator("properties", mode="before")
    @classmethod
    def _properties(cls, value: Any) -> Any:
        check_numbers(value)
        return {} if value is None else value

    @field_validator("context", mode="before")
    @classmethod
    def _context(cls, value: Any) -> Any:
        check_numbers(value)
        return {} if value is None else value

    @model_validator(mode="after")
    def _identity_and_id(self) -> Event:
        if not any(getattr(self, name) for name in IDENTITY_FIELDS):
            raise ValueError(
                "no identity: give at least one of anonymous_id, contact_id, email, account_id"
            )
        try:
            _PROPERTY_MODELS[self.channel].model_validate(self.properties)
        except ValidationError as exc:
            raise ValueError(f"{self.channel} properties: {_reason(exc)}") from exc
        if self.event_id is None:
            object.__setattr__(self, "event_id", derive_event_id(self))
        return self

    def to_record(self) -> EventRecord:
        """The lean form the engine and the writers use."""
        return EventRecord(
            event_id=self.event_id or derive_event_id(self),
            channel=self.channel,
            type=self.type,
            ts=to_ms(self.occurred_at),
            anonymous_id=self.anonymous_id,
            contact_id=self.contact_id,
            email=self.email,
            account_id=self.account_id,
            dmu_role=self.context.dmu_role,
            segment=self.context.segment,
            properties=orjson.dumps(
                self.properties, default=str, option=orjson.OPT_SORT_KEYS
            ).decode(),
            context=orjson.dumps(
                self.context.model_dump(exclude_none=True), default=str, option=orjson.OPT_SORT_KEYS
            ).decode(),
        )


def derive_event_id(event: Event) -> str:
    """A deterministic id from the content, so a resent event without an id is one event."""
    content = {
        "channel": event.channel,
        "type": event.type,
        "occurred_at": event.occurred_at.isoformat(),
        "anonymous_id": event.anonymous_id,
        "contact_id": event.contact_id,
        "email": event.email,
        "account_id": event.account_id,
        "properties": event.properties,
        "context": event.context.model_dump(exclude_none=True),
    }
    return content_id(content)


def parse_event(raw: bytes | str) -> EventRecord:
    """Validate one event from its JSON bytes; raise `InvalidEvent` with the reason.

    A leading UTF-8 byte order mark (what some editors and exports put first in a
    file) is not part of the JSON and is ignored, as RFC 8259 allows.
    """
    raw = _without_bom(raw)
    record = decode_line(raw)
    if record is not None:
        return record
    try:
        return _record(Event.model_validate_json(raw))
    except ValidationError as exc:
        raise InvalidEvent(_reason(exc)) from exc


def _without_bom(raw: bytes | str) -> bytes | str:
    if isinstance(raw, bytes):
        return raw[3:] if raw.startswith(b"\xef\xbb\xbf") else raw
    return raw[1:] if raw.startswith("\ufeff") else raw


def validate_event(data: Any) -> EventRecord:
    """Validate one event from an already-parsed object (collectors, simulators)."""
    if isinstance(data, dict):  # Python objects may hold what JSON text cannot: NaN, huge ints
        for name in ("properties", "context"):
            try:
                check_numbers(data.get(name))
            except ValueError as exc:
                raise InvalidEvent(f"{name}: {exc}") from None
    record = decode_object(data)
    if record is not None:
        return record
    return reference_record(data)


def reference_record(data: Any) -> EventRecord:
    """Validate with the reference (pydantic) validator only."""
    try:
        return _record(Event.model_validate(data))
    except ValidationError as exc:
        raise InvalidEvent(_reason(exc)) from exc


def _record(event: Event) -> EventRecord:
    """The record of a validated event; what cannot be stored is invalid, never a crash."""
    try:
        return event.to_record()
    except (TypeError, ValueError, OverflowError, RecursionError) as exc:
        raise InvalidEvent(f"cannot be stored: {exc}") from None


def check_numbers(value: Any) -> None:
    """Refuse NaN, Infinity and integers beyond 64 bits anywhere inside `value`.

    JSON has no NaN or Infinity, and ClickHouse and most consumers cannot hold
    such integers: storing them would silently turn them into null or lose digits.
    Walks without recursion, so any nesting depth is safe.
    """
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise ValueError("NaN or Infinity is not a JSON number")
        elif isinstance(item, int) and not isinstance(item, bool):
            if not _INT_MIN <= item <= _INT_MAX:
                raise ValueError(f"integer {_digits(item)} does not fit in 64 bits")
        elif isinstance(item, Decimal) and not item.is_finite():
            raise ValueError("NaN or Infinity is not a JSON number")


def _digits(value: int) -> str:
    text = str(value) if value.bit_length() < 4000 else "with thousands of digits"
    return text if len(text) <= 24 else text[:10] + "..." + text[-4:]


def _reason(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors(include_url=False, include_input=False):
        where = ".".join(str(p) for p in error["loc"])
        if error["type"] == "json_invalid":
            parts.append(f"invalid JSON: {error['msg']}")
        elif error["type"] == "model_type" and not error["loc"]:
            parts.append("not a JSON object")
        elif not error["loc"]:
            parts.append(error["msg"].removeprefix("Value error, "))
        else:
            parts.append(f"{where}: {error['msg'].removeprefix('Value error, ')}")
    return "; ".join(parts)[:1000]


def event_json_schema() -> dict[str, Any]:
    """The JSON Schema of the event, for producers written in other languages."""
    schema = Event.model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "journeys event"
    return schema
