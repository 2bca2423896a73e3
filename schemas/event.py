"""The event: the one JSON object every channel produces (contract section 1).

`Event` validates and normalises one event straight from bytes or a dict:
emails lower-cased, identities stripped, times converted to UTC, per-channel
properties typed. `EventRecord` is the lean, already-validated form the
journey engine and the writers handle on the hot path.

Errors raised here are `InvalidEvent` (see `schemas.errors`), whose message is
the reason stored with the dead letter.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
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

from schemas.errors import InvalidEvent

Channel = Literal["web", "email", "order", "sales"]
DmuRole = Literal["initiator", "gatekeeper", "influencer", "decider", "buyer", "user"]

CHANNELS: tuple[str, ...] = ("web", "email", "order", "sales")
DMU_ROLES: tuple[str, ...] = ("initiator", "gatekeeper", "influencer", "decider", "buyer", "user")
IDENTITY_FIELDS: tuple[str, ...] = ("anonymous_id", "contact_id", "email", "account_id")

#: Event types the default journey rules know, per channel (contract section 1).
KNOWN_TYPES: dict[str, frozenset[str]] = {
    "web": frozenset(
        {
            "page_view", "content_view", "search", "product_view", "pricing_view",
            "review_view", "compare", "add_to_cart", "remove_from_cart",
            "checkout_started", "signup", "login", "form_submit", "survey_response",
        }
    ),
    "email": frozenset(
        {"sent", "delivered", "open", "click", "bounce", "unsubscribe", "spam_report", "reply"}
    ),
    "order": frozenset(
        {
            "quote_requested", "quote_sent", "quote_accepted", "quote_rejected",
            "order_placed", "order_shipped", "order_delivered", "order_returned",
            "invoice_sent", "invoice_paid",
        }
    ),
    "sales": frozenset(
        {"meeting", "call", "demo", "deal_stage_changed", "deal_won", "deal_lost"}
    ),
}


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

    @field_validator("occurred_at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return value.astimezone(UTC)

    @field_validator("properties", mode="before")
    @classmethod
    def _properties(cls, value: Any) -> Any:
        return {} if value is None else value

    @field_validator("context", mode="before")
    @classmethod
    def _context(cls, value: Any) -> Any:
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
            ts=_to_ms(self.occurred_at),
            anonymous_id=self.anonymous_id,
            contact_id=self.contact_id,
            email=self.email,
            account_id=self.account_id,
            dmu_role=self.context.dmu_role,
            segment=self.context.segment,
            properties=orjson.dumps(self.properties, default=str, option=orjson.OPT_SORT_KEYS).decode(),
            context=orjson.dumps(
                self.context.model_dump(exclude_none=True), default=str, option=orjson.OPT_SORT_KEYS
            ).decode(),
        )


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def _to_ms(moment: datetime) -> int:
    return (moment - _EPOCH) // _MS


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
    digest = hashlib.sha256(orjson.dumps(content, default=str, option=orjson.OPT_SORT_KEYS))
    return "ev_" + digest.hexdigest()[:32]


@dataclass(slots=True, frozen=True)
class EventRecord:
    """A validated event in the compact form used on the hot path.

    `ts` is milliseconds since the epoch, UTC. `properties` and `context` are
    canonical JSON text, stored as given.
    """

    event_id: str
    channel: str
    type: str
    ts: int
    anonymous_id: str | None = None
    contact_id: str | None = None
    email: str | None = None
    account_id: str | None = None
    dmu_role: str | None = None
    segment: str | None = None
    properties: str = "{}"
    context: str = "{}"

    @property
    def occurred_at(self) -> datetime:
        """Event time as an aware UTC datetime."""
        return datetime.fromtimestamp(self.ts / 1000, tz=UTC)

    def to_json(self) -> bytes:
        """The contract's JSON form of this event (what producers send)."""
        body: dict[str, Any] = {
            "event_id": self.event_id,
            "channel": self.channel,
            "type": self.type,
            "occurred_at": format_ms(self.ts),
        }
        for name in IDENTITY_FIELDS:
            value = getattr(self, name)
            if value is not None:
                body[name] = value
        body["properties"] = orjson.Fragment(self.properties)
        body["context"] = orjson.Fragment(self.context)
        return orjson.dumps(body)


_DATES: dict[int, str] = {}


def format_ms(ts: int) -> str:
    """ISO 8601 UTC with milliseconds, as the contract writes times."""
    day, rest = divmod(ts, 86_400_000)
    date = _DATES.get(day)
    if date is None:
        date = _DATES[day] = (_EPOCH + timedelta(days=day)).strftime("%Y-%m-%d")
    seconds, millis = divmod(rest, 1000)
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{date}T{hours:02d}:{minutes:02d}:{seconds:02d}.{millis:03d}Z"


def parse_event(raw: bytes | str) -> EventRecord:
    """Validate one event from its JSON bytes; raise `InvalidEvent` with the reason."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        data = None
    else:
        record = fast_record(data)
        if record is not None:
            return record
    try:
        return Event.model_validate_json(raw).to_record()
    except ValidationError as exc:
        raise InvalidEvent(_reason(exc)) from exc


def validate_event(data: Any) -> EventRecord:
    """Validate one event from an already-parsed object (collectors, simulators)."""
    record = fast_record(data)
    if record is not None:
        return record
    return reference_record(data)


def reference_record(data: Any) -> EventRecord:
    """Validate with the reference (pydantic) validator only."""
    try:
        return Event.model_validate(data).to_record()
    except ValidationError as exc:
        raise InvalidEvent(_reason(exc)) from exc


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


from schemas.fastpath import fast_record  # noqa: E402  (the fast path builds EventRecords)
