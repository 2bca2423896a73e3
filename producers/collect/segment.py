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
- Clock skew: `timestamp = receivedAt - (sentAt - timestamp)` when the SDK
  sent `sentAt`, as Segment does.
- `traits.dmu_role` / `traits.segment` (or the same in `context`) fill the
  event's context (a role outside the contract's six is left out);
  `context.ip` is kept as `context.ip` (the collector may truncate it).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
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


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def occurred_at(message: dict[str, Any], received: datetime) -> str:
    """Event time with Segment's clock-skew correction, as ISO 8601 UTC."""
    stamp = _time(message.get("timestamp")) or _time(message.get("originalTimestamp"))
    sent = _time(message.get("sentAt"))
    if stamp is None:
        moment = received
    elif sent is not None:
        moment = received - (sent - stamp)
    else:
        moment = stamp
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return str(value)
    return value if isinstance(value, str) and value.strip() else None


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
        quantity = product.get("quantity", 1)
        item: dict[str, Any] = {
            "sku": sku or "unknown",
            "quantity": quantity
            if isinstance(quantity, int) and not isinstance(quantity, bool) and quantity >= 0
            else 1,
        }
        price = product.get("price")
        if isinstance(price, int | float) and not isinstance(price, bool):
            item["price"] = price
        items.append(item)
    return items


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
    message: dict[str, Any], received: datetime, call: str | None = None
) -> dict[str, Any]:
    """One Segment message as a contract event (not yet validated)."""
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
        "occurred_at": occurred_at(message, received),
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
            }.items()
            if v is not None
        },
    }
    message_id = _text(message.get("messageId"))
    if message_id:
        event["event_id"] = message_id
    return {k: v for k, v in event.items() if v is not None}
