"""Segment's tracking spec mapped to the contract's event (pure functions).

Any Segment or RudderStack SDK can point at the collector unchanged:

- `messageId` → `event_id`; `anonymousId` → `anonymous_id`; `userId` →
  `contact_id`; `traits.email` (or `context.traits.email`) → `email`;
  `groupId` (or `context.groupId`) → `account_id`.
- `track`: Segment's e-commerce and B2B event names map to contract types
  (`Product Viewed` → `product_view`, `Order Completed` → `order_placed`, …);
  a name that already is a contract type once snake-cased maps to itself; any
  other name is kept, snake-cased, as an unknown type (stored, moves no phase).
- `page` / `screen` → `page_view`; `identify` → `identify`; `group` →
  `group` (it links the user to the account); `alias` → `alias`, with
  `previousId` as the anonymous id it links to `userId`. These identity calls
  are stored as web events of those (unknown) types: they count as the
  account's activity and carry the identity links, but move no phase. They
  are not mapped to `login`: websites call `identify` on every page load of a
  known user, which would make every page a login. A sign-up is the
  `Signed Up` track call (→ `signup`), a login `Signed In` (→ `login`).
- Clock skew: when the SDK's clock (its `sentAt`) is off from the
  collector's by more than a tolerance (`collect_skew_tolerance`, 5 s),
  `timestamp = receivedAt - (sentAt - timestamp)`, as Segment does; within
  the tolerance `timestamp` is kept as sent, so one browser's calls keep
  their order and a retried call keeps its time.
- Times are ISO 8601 strings. A number (seconds or milliseconds?), a text
  that is not a time, or a time the correction pushes out of the calendar
  is refused with a reason: the event becomes a dead letter.
- Request shape: `FIELDS` names the JSON types each known field may have
  (`null` always allowed); the OpenAPI description is built from it and
  `shape_error` enforces it, so the two cannot drift apart.
- `traits.dmu_role` / `traits.segment` (or the same in `context`) fill the
  event's context (a role outside the contract's six is left out);
  `context.ip` is kept as `context.ip` (the collector may truncate it).
- `context.consent.categoryPreferences` (analytics-next's consent wrapper)
  is kept as it came, so the privacy gate can honour it
  (`journeys.schemas.privacy`).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from journeys.schemas.record import DMU_ROLES, KNOWN_TYPES

#: Segment spec event names (e-commerce, B2B SaaS) → (channel, type).
TRACK_NAMES: dict[str, tuple[str, str]] = {
    "products searched": ("web", "search"),
    "product list viewed": ("web", "search"),
    "product list filtered": ("web", "search"),
    "product clicked": ("web", "product_view"),
    "product viewed": ("web", "product_view"),
    "product added": ("web", "add_to_cart"),
    "product removed": ("web", "remove_from_cart"),
    "checkout started": ("web", "checkout_started"),
    "order completed": ("order", "order_placed"),
    "order updated": ("order", "order_updated"),
    "order refunded": ("order", "order_returned"),
    "order cancelled": ("order", "order_cancelled"),
    "product reviewed": ("web", "review_view"),
    "reviews viewed": ("web", "review_view"),
    "products compared": ("web", "compare"),
    "pricing viewed": ("web", "pricing_view"),
    "pricing page viewed": ("web", "pricing_view"),
    "content viewed": ("web", "content_view"),
    "signed up": ("web", "signup"),
    "signed in": ("web", "login"),
    "form submitted": ("web", "form_submit"),
    "lead form submitted": ("web", "form_submit"),
    "demo requested": ("web", "form_submit"),
    "quote requested": ("order", "quote_requested"),
    "survey submitted": ("web", "survey_response"),
    "email opened": ("email", "open"),
    "email link clicked": ("email", "click"),
}
_OWNER = {t: c for c, types in KNOWN_TYPES.items() for t in types}
_SNAKE = re.compile(r"[^a-z0-9]+")


def snake(name: str) -> str:
    """`Product Viewed` → `product_viewed`."""
    return _SNAKE.sub("_", name.strip().lower()).strip("_")[:64] or "unnamed"


#: Known fields of a Segment message and the JSON types each may have (`null` always may).
FIELDS: dict[str, tuple[str, ...]] = {
    "type": ("string",),
    "event": ("string",),
    "name": ("string",),
    "category": ("string",),
    "messageId": ("string",),
    "anonymousId": ("string", "number"),
    "userId": ("string", "number"),
    "groupId": ("string", "number"),
    "previousId": ("string", "number"),
    "timestamp": ("string",),
    "originalTimestamp": ("string",),
    "sentAt": ("string",),
    "properties": ("object",),
    "traits": ("object",),
    "context": ("object",),
    "integrations": ("object",),
    "writeKey": ("string",),
}
#: Fields a batch body may have beside `batch`, shared by its items.
BATCH_FIELDS: dict[str, tuple[str, ...]] = {
    "context": ("object",),
    "sentAt": ("string",),
    "writeKey": ("string",),
    "integrations": ("object",),
}
_PYTHON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "number": (int, float),
    "object": (dict,),
    "array": (list,),
}
#: No skew tolerance: every sentAt corrects (Segment's own rule).
NO_TOLERANCE = timedelta(0)


def shape_error(message: dict[str, Any], fields: dict[str, tuple[str, ...]] = FIELDS) -> str | None:
    """Why a message's known fields have the wrong JSON types (None when they are right)."""
    for name, kinds in fields.items():
        value = message.get(name)
        if value is None:
            continue
        allowed = tuple(t for kind in kinds for t in _PYTHON_TYPES[kind])
        if isinstance(value, bool) or not isinstance(value, allowed):
            return f"{name} must be {' or '.join(kinds)}, not {_json_type(value)}"
    return None


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    for kind, types in _PYTHON_TYPES.items():
        if isinstance(value, types):
            return kind
    return "null" if value is None else type(value).__name__


def _time(message: dict[str, Any], name: str) -> datetime | None:
    """The field as an aware time; None when absent or empty; ValueError when it is not a time."""
    value = message.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValueError(f"{name} must be an ISO 8601 time (a string), not {_json_type(value)}")
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    except ValueError:
        raise ValueError(f"{name} is not an ISO 8601 time: {value[:64]!r}") from None


def _utc_text(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def occurred_at(
    message: dict[str, Any], received: datetime, tolerance: timedelta = NO_TOLERANCE
) -> str:
    """Event time, as ISO 8601 UTC, corrected for the SDK's clock when it is off by more than
    `tolerance`; ValueError (never OverflowError) when the times make no calendar sense."""
    stamp = _time(message, "timestamp") or _time(message, "originalTimestamp")
    sent = _time(message, "sentAt")
    try:
        if stamp is None:
            return _utc_text(received)
        if sent is not None and abs(sent - received) > tolerance:
            return _utc_text(received - (sent - stamp))
        return _utc_text(stamp)
    except OverflowError:
        raise ValueError(
            f"timestamp {message.get('timestamp') or message.get('originalTimestamp')!r} "
            f"with sentAt {message.get('sentAt')!r} is outside the calendar"
        ) from None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return str(value)
    return value if isinstance(value, str) and value.strip() else None


#: The largest quantity a line item may have (a signed 64-bit integer).
MAX_QUANTITY = 2**63 - 1


def quantity(value: Any) -> int:
    """A line item's quantity: 1 when absent, a whole number from 0 as given (also as digits or
    a whole float); ValueError for anything else, never a silent 1."""
    if value is None:
        return 1
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_QUANTITY:
        raise ValueError(f"quantity must be a whole number from 0 to 2^63-1, not {value!r:.40}")
    return value


def _items(products: Any) -> list[dict[str, Any]] | None:
    if not isinstance(products, list):
        return None
    items = []
    for product in products:
        if not isinstance(product, dict):
            continue
        sku = (
            _text(product.get("sku"))
            or _text(product.get("product_id"))
            or _text(product.get("id"))
        )
        item: dict[str, Any] = {
            "sku": sku or "unknown",
            "quantity": quantity(product.get("quantity")),
        }
        price = product.get("price")
        if isinstance(price, int | float) and not isinstance(price, bool):
            item["price"] = price
        items.append(item)
    return items


def _consent(value: Any) -> dict[str, Any] | None:
    """`context.consent` as analytics-next's consent wrapper sends it, reduced to the
    category preferences (a category -> true/false object) the privacy gate reads."""
    preferences = _dict(value).get("categoryPreferences")
    if not isinstance(preferences, dict):
        return None
    return {
        "categoryPreferences": {str(k): v for k, v in preferences.items() if isinstance(v, bool)}
    }


def dmu_role(value: Any) -> str | None:
    """A DMU role trait, lower-cased; a value outside the contract's roles is left out
    (a CRM's own role names should not cost the event)."""
    if not isinstance(value, str):
        return None
    role = value.strip().lower()
    return role if role in DMU_ROLES else None


def _track(message: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    name = str(message.get("event") or "")
    properties = dict(_dict(message.get("properties")))
    channel, type_ = TRACK_NAMES.get(name.strip().lower(), ("", ""))
    if not type_:
        type_ = snake(name)
        channel = _OWNER.get(type_, "web")
    if "products" in properties and "items" not in properties:
        properties["items"] = _items(properties.pop("products"))
    elif type_ in ("add_to_cart", "remove_from_cart") and "items" not in properties:
        single = _items([properties])
        if single and single[0]["sku"] != "unknown":
            properties["items"] = single
    if channel == "order":
        total = properties.get("total", properties.get("revenue"))
        if (
            "amount" not in properties
            and isinstance(total, int | float)
            and not isinstance(total, bool)
        ):
            properties["amount"] = total
        if isinstance(properties.get("currency"), str):
            properties["currency"] = properties["currency"].upper()
        for key in ("order_id", "quote_id", "cart_id"):
            if key in properties:
                properties[key] = _text(properties[key])
        if properties.get("payment_terms") not in (None, "immediate", "invoice"):
            properties.pop("payment_terms")
    return channel, type_, properties


def to_event(
    message: dict[str, Any],
    received: datetime,
    call: str | None = None,
    tolerance: timedelta = NO_TOLERANCE,
) -> dict[str, Any]:
    """One Segment message as a contract event (not yet validated); ValueError with the reason
    when it cannot be one."""
    problem = shape_error(message)
    if problem:
        raise ValueError(problem)
    kind = (call or str(message.get("type") or "")).lower()
    context = _dict(message.get("context"))
    traits = {**_dict(context.get("traits")), **_dict(message.get("traits"))}
    properties: dict[str, Any]
    if kind == "track":
        channel, type_, properties = _track(message)
    elif kind in ("page", "screen"):
        channel, type_ = "web", "page_view"
        properties = dict(_dict(message.get("properties")))
        page = _dict(context.get("page"))
        properties.setdefault("url", page.get("url"))
        properties.setdefault("title", page.get("title") or message.get("name"))
        properties = {k: v for k, v in properties.items() if v is not None}
    elif kind in ("identify", "group", "alias"):
        channel, type_, properties = "web", kind, {}
        if kind == "group" and traits.get("name"):
            properties["company"] = traits["name"]
    else:
        raise ValueError(f"unknown Segment call type {kind!r}")

    email = traits.get("email") or _dict(message.get("properties")).get("email")
    group = message.get("groupId") if kind == "group" else None
    event: dict[str, Any] = {
        "channel": channel,
        "type": type_,
        "occurred_at": occurred_at(message, received, tolerance),
        "anonymous_id": _text(
            message.get("previousId") if kind == "alias" else message.get("anonymousId")
        ),
        "contact_id": _text(message.get("userId")),
        "email": email if isinstance(email, str) else None,
        "account_id": _text(group) or _text(context.get("groupId")),
        "properties": properties,
        "context": {
            k: v
            for k, v in {
                "dmu_role": dmu_role(traits.get("dmu_role") or context.get("dmu_role")),
                "segment": _text(traits.get("segment") or context.get("segment")),
                "library": _dict(context.get("library")).get("name"),
                "ip": _text(context.get("ip")),
                "consent": _consent(context.get("consent")),
            }.items()
            if v is not None
        },
    }
    message_id = _text(message.get("messageId"))
    if message_id:
        event["event_id"] = message_id
    return {k: v for k, v in event.items() if v is not None}
