"""Email and order webhooks: payload mappings and signature checks (pure functions).

- SendGrid Event Webhook: a JSON array; `sg_event_id` is the dedupe key;
  signed with ECDSA P-256/SHA-256 over `timestamp + body`
  (`X-Twilio-Email-Event-Webhook-Signature` / `-Timestamp`).
- Mandrill: form field `mandrill_events` (a JSON array); `X-Mandrill-Signature`
  is base64(HMAC-SHA1(key, URL + every POST key and value, keys sorted)).
- Shopify: `orders/create` → `order_placed`, `checkouts/create` →
  `checkout_started`; `X-Shopify-Hmac-Sha256` is base64(HMAC-SHA256(secret,
  raw body)). The dedupe key comes from what the HMAC covers: the topic and
  the order's (checkout's) id in the body, else a hash of the whole body.
  `X-Shopify-Event-Id` is not signed, so a captured webhook replayed with a
  new one must still be the same event. `X-Shopify-Topic` is not signed
  either: `shopify_topic_mismatch` checks it against the signed body (an
  order has `order_number`, `financial_status`, ...; a checkout has
  `abandoned_checkout_url` and none of those), so a captured order cannot
  be replayed as a new `checkout_started`, nor a checkout as an order.
- Provider times are Unix seconds (SendGrid `timestamp`, Mandrill `ts`), as
  the providers document; anything else (a text, milliseconds, a time
  outside the calendar) is refused with the reason.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key

from journeys.producers.collect.segment import quantity

SENDGRID_TYPES = {
    "processed": "sent",
    "delivered": "delivered",
    "open": "open",
    "click": "click",
    "bounce": "bounce",
    "dropped": "bounce",
    "spamreport": "spam_report",
    "unsubscribe": "unsubscribe",
    "group_unsubscribe": "unsubscribe",
    "deferred": "deferred",
}
MANDRILL_TYPES = {
    "send": "sent",
    "deferral": "deferred",
    "hard_bounce": "bounce",
    "soft_bounce": "bounce",
    "open": "open",
    "click": "click",
    "spam": "spam_report",
    "unsub": "unsubscribe",
    "reject": "bounce",
}
SHOPIFY_TOPICS = {"orders/create": "order_placed", "checkouts/create": "checkout_started"}
#: Fields of Shopify's Order that a Checkout never has, and the reverse.
SHOPIFY_ORDER_FIELDS = (
    "order_number",
    "financial_status",
    "order_status_url",
    "confirmation_number",
    "checkout_id",
)
SHOPIFY_CHECKOUT_FIELDS = ("abandoned_checkout_url",)
#: Custom arguments a sender may attach to an email to name the contact or account.
IDENTITY_ARGS = ("contact_id", "account_id", "anonymous_id")


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _iso_from_unix(value: Any, name: str) -> str | None:
    """Unix seconds as ISO 8601 UTC; None when absent; ValueError for anything else."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be Unix seconds (a number), not {value!r:.40}")
    try:
        moment = datetime.fromtimestamp(float(value), tz=UTC)
    except (ValueError, OverflowError, OSError):
        raise ValueError(f"{name} {value!r:.40} is not a time in Unix seconds") from None
    return moment.isoformat().replace("+00:00", "Z")


def _sendgrid_key_der(public_key: str) -> bytes:
    """The key's DER bytes from SendGrid's base64 text, with or without PEM armour."""
    lines = [line for line in public_key.strip().splitlines() if not line.startswith("-----")]
    return base64.b64decode("".join(lines), validate=True)


def verify_sendgrid(public_key: str, signature_b64: str, timestamp: str, body: bytes) -> bool:
    """SendGrid's ECDSA (P-256, SHA-256) signature over timestamp + raw body.

    `public_key` is the verification key as SendGrid's settings page shows it
    (base64 of the DER public key); a PEM block works too.
    """
    try:
        key = load_der_public_key(_sendgrid_key_der(public_key))
        if not isinstance(key, ec.EllipticCurvePublicKey):
            return False
        key.verify(
            base64.b64decode(signature_b64), timestamp.encode() + body, ec.ECDSA(hashes.SHA256())
        )
        return True
    except (InvalidSignature, ValueError, TypeError):
        return False


def mandrill_signature(key: str, url: str, form: dict[str, str]) -> str:
    """What Mandrill puts in X-Mandrill-Signature for this URL and form."""
    signed = url + "".join(k + form[k] for k in sorted(form))
    return base64.b64encode(hmac.new(key.encode(), signed.encode(), hashlib.sha1).digest()).decode()


def shopify_signature(secret: str, body: bytes) -> str:
    """What Shopify puts in X-Shopify-Hmac-Sha256 for this body."""
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def signatures_match(expected: str, given: str | None) -> bool:
    """Constant-time comparison of two signatures."""
    return given is not None and hmac.compare_digest(expected.encode(), given.strip().encode())


def sendgrid_event(item: Any) -> dict[str, Any]:
    """One SendGrid event as a contract event (not yet validated)."""
    if not isinstance(item, dict):
        raise ValueError("a SendGrid event must be a JSON object")
    kind = str(item.get("event", ""))
    event: dict[str, Any] = {
        "channel": "email",
        "type": SENDGRID_TYPES.get(kind, kind or "unknown"),
        "occurred_at": _iso_from_unix(item.get("timestamp"), "timestamp"),
        "email": item.get("email"),
        "properties": {
            k: item[k]
            for k in ("sg_message_id", "url", "reason", "status", "category", "useragent")
            if k in item
        }
        | (
            {"message_id": item["sg_message_id"]}
            if isinstance(item.get("sg_message_id"), str)
            else {}
        )
        | (
            {"campaign_id": str(item["marketing_campaign_id"])}
            if "marketing_campaign_id" in item
            else {}
        ),
    }
    for name in IDENTITY_ARGS:
        if isinstance(item.get(name), str):
            event[name] = item[name]
    if item.get("sg_event_id"):
        event["event_id"] = f"sendgrid:{item['sg_event_id']}"
    return {k: v for k, v in event.items() if v is not None}


def mandrill_event(item: Any) -> dict[str, Any]:
    """One Mandrill event as a contract event (not yet validated)."""
    if not isinstance(item, dict):
        raise ValueError("a Mandrill event must be a JSON object")
    msg = _obj(item.get("msg"))
    kind = str(item.get("event", ""))
    metadata = _obj(msg.get("metadata"))
    event: dict[str, Any] = {
        "channel": "email",
        "type": MANDRILL_TYPES.get(kind, kind or "unknown"),
        "occurred_at": _iso_from_unix(item.get("ts"), "ts"),
        "email": msg.get("email"),
        "properties": {
            k: v
            for k, v in {
                "message_id": msg.get("_id") or item.get("_id"),
                "subject": msg.get("subject"),
                "url": item.get("url"),
                "campaign_id": metadata.get("campaign_id"),
            }.items()
            if isinstance(v, str)
        },
    }
    for name in IDENTITY_ARGS:
        if isinstance(metadata.get(name), str):
            event[name] = metadata[name]
    # Mandrill's _id names the message; one message has several events.
    key = f"{item.get('_id') or msg.get('_id')}:{kind}:{item.get('ts')}:{item.get('url', '')}"
    event["event_id"] = "mandrill:" + hashlib.sha256(key.encode()).hexdigest()[:32]
    return {k: v for k, v in event.items() if v is not None}


def _money(value: Any) -> float | None:
    try:
        return float(value) if value is not None and not isinstance(value, bool) else None
    except (TypeError, ValueError):
        return None


def shopify_topic_mismatch(topic: str, body: Any) -> str | None:
    """Why the (unsigned) topic does not fit the signed body; None when it fits or the body
    shows neither kind (a body that is no object is left to the mapping's own reason)."""
    if not isinstance(body, dict):
        return None
    order = [name for name in SHOPIFY_ORDER_FIELDS if name in body]
    checkout = [name for name in SHOPIFY_CHECKOUT_FIELDS if name in body]
    if topic == "orders/create" and checkout:
        return f"X-Shopify-Topic is orders/create but the signed body is a checkout ({checkout[0]})"
    if topic == "checkouts/create" and order:
        return f"X-Shopify-Topic is checkouts/create but the signed body is an order ({order[0]})"
    return None


def shopify_event_id(topic: str, body: dict[str, Any], raw: bytes) -> str:
    """An event id from the signed body: topic and order (checkout) id, else the body's hash."""
    ident = body.get("id")
    if topic == "checkouts/create":
        ident = body.get("token") or ident
    text = str(ident) if isinstance(ident, str | int) and not isinstance(ident, bool) else ""
    if text.strip() and len(text) <= 64:
        return f"shopify:{topic}:{text.strip()}"
    return f"shopify:{topic}:sha256:{hashlib.sha256(raw).hexdigest()[:32]}"


def shopify_event(topic: str, body: Any, raw: bytes) -> dict[str, Any]:
    """A Shopify order or checkout as a contract event (not yet validated); `raw` is the signed
    body, from which the event id is derived."""
    if topic not in SHOPIFY_TOPICS:
        raise ValueError(
            f"unsupported Shopify topic {topic!r}; send orders/create or checkouts/create"
        )
    if not isinstance(body, dict):
        raise ValueError("a Shopify webhook body must be a JSON object")
    customer = _obj(body.get("customer"))
    items = []
    for line in body.get("line_items") or []:
        if isinstance(line, dict):
            item: dict[str, Any] = {
                "sku": str(
                    line.get("sku") or line.get("variant_id") or line.get("product_id") or "unknown"
                ),
                "quantity": quantity(line.get("quantity")),
            }
            price = _money(line.get("price"))
            if price is not None:
                item["price"] = price
            items.append(item)
    order = topic == "orders/create"
    properties: dict[str, Any] = {
        "items": items,
        "amount": _money(body.get("total_price")),
        "currency": body.get("currency") if isinstance(body.get("currency"), str) else None,
    }
    if order:
        properties["order_id"] = str(body.get("id")) if body.get("id") is not None else None
        terms = body.get("payment_terms")
        properties["payment_terms"] = "invoice" if terms else "immediate"
    else:
        properties["cart_id"] = str(body.get("token") or body.get("cart_token") or "") or None
    event = {
        "channel": "order" if order else "web",
        "type": SHOPIFY_TOPICS[topic],
        "occurred_at": body.get("created_at"),
        "email": body.get("email") or customer.get("email"),
        "contact_id": f"shopify:{customer['id']}" if customer.get("id") is not None else None,
        "properties": {k: v for k, v in properties.items() if v is not None},
    }
    event["event_id"] = shopify_event_id(topic, body, raw)
    return {k: v for k, v in event.items() if v is not None}
