"""The event record: the lean, already-validated form of an event on the hot path.

The floor of the schemas package: the closed vocabularies of the contract
(channels, DMU roles, known types) and `EventRecord`, which the validators
(`journeys.schemas.event`, `journeys.schemas.decode`), the engine, the
codecs and the writers share. It imports nothing of the project.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields, make_dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

CHANNELS: tuple[str, ...] = ("web", "email", "order", "sales")
DMU_ROLES: tuple[str, ...] = ("initiator", "gatekeeper", "influencer", "decider", "buyer", "user")
IDENTITY_FIELDS: tuple[str, ...] = ("anonymous_id", "contact_id", "email", "account_id")

#: Event types the default journey rules know, per channel (contract section 1).
KNOWN_TYPES: dict[str, frozenset[str]] = {
    "web": frozenset(
        {
            "page_view",
            "content_view",
            "search",
            "product_view",
            "pricing_view",
            "review_view",
            "compare",
            "add_to_cart",
            "remove_from_cart",
            "checkout_started",
            "signup",
            "login",
            "form_submit",
            "survey_response",
        }
    ),
    "email": frozenset(
        {"sent", "delivered", "open", "click", "bounce", "unsubscribe", "spam_report", "reply"}
    ),
    "order": frozenset(
        {
            "quote_requested",
            "quote_sent",
            "quote_accepted",
            "quote_rejected",
            "order_placed",
            "order_shipped",
            "order_delivered",
            "order_returned",
            "invoice_sent",
            "invoice_paid",
        }
    ),
    "sales": frozenset({"meeting", "call", "demo", "deal_stage_changed", "deal_won", "deal_lost"}),
}

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def to_ms(moment: datetime) -> int:
    """Milliseconds since the epoch of an aware datetime."""
    return (moment - _EPOCH) // _MS


#: Event times the contract accepts: 1970-01-01 (inclusive) .. 2200-01-01 (exclusive), UTC.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)
EARLIEST_MS = 0
LATEST_MS = to_ms(LATEST)


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


def _draft_field(spec: Any) -> tuple[str, Any] | tuple[str, Any, Any]:
    if spec.default is MISSING:
        return spec.name, spec.type
    return spec.name, spec.type, field(default=spec.default)


#: A mutable twin of `EventRecord` with the same slots, in the same order.
_Draft: Any = make_dataclass("_Draft", [_draft_field(f) for f in fields(EventRecord)], slots=True)
assert _Draft.__slots__ == EventRecord.__slots__


def new_record(*values: Any) -> EventRecord:
    """`EventRecord(*values)` at a quarter of the cost, for the decoders of the hot path.

    A frozen dataclass's `__init__` stores each field through `object.__setattr__`,
    which costs more than decoding the event's JSON; the twin stores its slots
    directly, then becomes an `EventRecord` (same slots, so the same layout): equal,
    hashed and frozen like any other.
    """
    draft = _Draft(*values)
    draft.__class__ = EventRecord
    return draft


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
