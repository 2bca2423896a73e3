"""The collector's request handlers: Segment tracking API, email and order webhooks.

Each handler checks the caller (write key or provider signature), maps the
payload to contract events with the pure functions of `segment` and
`webhooks`, and hands them to `accept`, which validates them, publishes the
valid ones and the dead letters together, and answers only once the
publisher returned (Kafka acknowledged).

Invalid input: a single Segment call or a single order event is answered 400
with the reason; in a batch, and in every provider webhook, the valid events
are kept and the invalid ones are answered in the summary and stored as dead
letters. Providers retry every non-2xx answer (Shopify 8 times, then it may
drop the subscription), and an event that is invalid stays invalid: its dead
letter is the durable answer.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any
from urllib.parse import parse_qsl

import orjson
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram

from journeys.producers.collect import segment, webhooks
from journeys.producers.collect.guard import (
    RateLimiter,
    Rejected,
    apply_privacy,
    check_write_key,
    client_ip,
)
from journeys.producers.collect.publisher import Publisher
from journeys.schemas.errors import InvalidEvent
from journeys.schemas.event import validate_event
from journeys.schemas.record import EventRecord
from journeys.schemas.rows import DeadLetterRow
from journeys.schemas.settings import Settings

#: A payload's original bytes and how to map it to a contract event (may raise).
Item = tuple[bytes, Callable[[], Any]]


@dataclass
class Metrics:
    """The collector's Prometheus metrics, in a registry of its own."""

    registry: CollectorRegistry
    requests: Counter
    accepted: Counter
    rejected: Counter
    latency: Histogram

    @classmethod
    def create(cls) -> Metrics:
        """Fresh metrics (one set per app, so tests never share counters)."""
        registry = CollectorRegistry()
        return cls(
            registry=registry,
            requests=Counter(
                "journeys_collect_requests", "HTTP requests", ["route", "status"], registry=registry
            ),
            accepted=Counter(
                "journeys_collect_events_accepted", "Events stored", ["source"], registry=registry
            ),
            rejected=Counter(
                "journeys_collect_events_rejected",
                "Events sent to dead letters",
                ["source"],
                registry=registry,
            ),
            latency=Histogram(
                "journeys_collect_request_seconds", "Request latency", ["route"], registry=registry
            ),
        )


@dataclass
class Collector:
    """What every handler needs: settings, the publisher, metrics and the rate limiter."""

    settings: Settings
    publisher: Publisher
    metrics: Metrics
    limiter: RateLimiter


COLLECTOR = web.AppKey("collector", Collector)


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def parse_json(raw: bytes) -> Any:
    """The parsed body; `Rejected(400)` with the parser's reason when it is not JSON."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise Rejected(400, f"malformed JSON: {exc}") from exc


def _same(value: Any) -> Any:
    return value


def _raw(item: Any) -> bytes:
    """The bytes kept with a dead letter for one item of an already-parsed array."""
    return orjson.dumps(item, option=orjson.OPT_NON_STR_KEYS)


async def accept(
    request: web.Request, source: str, items: list[Item], single: bool, ip: str | None = None
) -> web.Response:
    """Validate mapped events; publish the valid ones and the dead letters; answer a summary."""
    collector = request.app[COLLECTOR]
    now = int(time.time() * 1000)
    records: list[EventRecord] = []
    dead: list[DeadLetterRow] = []
    problems: list[dict[str, Any]] = []
    for index, (raw, build) in enumerate(items):
        try:
            mapped = build()
            if isinstance(mapped, dict):
                mapped = apply_privacy(collector.settings, mapped, ip)
            records.append(validate_event(mapped))
        except (InvalidEvent, ValueError, TypeError, KeyError) as exc:
            reason = str(exc) or type(exc).__name__
            dead.append(DeadLetterRow.of(raw, reason, f"collect:{source}", now))
            problems.append({"index": index, "error": reason})
    await collector.publisher.publish(records, dead)
    collector.metrics.accepted.labels(source).inc(len(records))
    collector.metrics.rejected.labels(source).inc(len(dead))
    if single and dead:
        raise Rejected(400, f"invalid event: {problems[0]['error']}")
    return web.json_response(
        {"success": True, "accepted": len(records), "rejected": len(dead), "errors": problems},
        dumps=_dumps,
    )


async def _authorised_json(request: web.Request) -> tuple[str, Any, bytes]:
    """Write key, parsed body and raw bytes of a Segment-style call (key checked first)."""
    settings = request.app[COLLECTOR].settings
    raw = await request.read()
    authorization = request.headers.get("Authorization")
    try:
        key = check_write_key(settings, authorization)
    except Rejected:
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        key = check_write_key(settings, authorization, body)  # writeKey in the body
        return key, body, raw
    return key, parse_json(raw), raw


def _segment_ip(request: web.Request) -> str | None:
    return client_ip(request.headers.get("X-Forwarded-For"), request.remote)


#: analytics.js posts single calls to one-letter paths (`/v1/t`, `/v1/p`, ...).
SHORT_CALLS = {
    "t": "track",
    "p": "page",
    "s": "screen",
    "i": "identify",
    "g": "group",
    "a": "alias",
}
CALLS = ("track", "page", "screen", "identify", "group", "alias")


async def segment_call(request: web.Request) -> web.Response:
    """POST /v1/{track,page,screen,identify,group,alias} (analytics.js: /v1/t, ...): one call."""
    call = request.match_info["call"]
    call = SHORT_CALLS.get(call, call)
    key, body, raw = await _authorised_json(request)
    if not isinstance(body, dict):
        raise Rejected(400, "a Segment call body must be a JSON object")
    request.app[COLLECTOR].limiter.take(key, 1)
    received = datetime.now(UTC)
    item: Item = (raw, lambda: segment.to_event(body, received, call))
    return await accept(request, f"/v1/{call}", [item], single=True, ip=_segment_ip(request))


def _batch_message(message: Any, body: dict[str, Any]) -> dict[str, Any]:
    """A batch item with the batch's shared `context` and `sentAt` folded in."""
    if not isinstance(message, dict):
        raise ValueError("a batch item must be a JSON object")
    shared = body.get("context")
    if isinstance(shared, dict) and shared:
        own = message.get("context")
        message = {**message, "context": {**shared, **(own if isinstance(own, dict) else {})}}
    if "sentAt" not in message and "sentAt" in body:
        message = {**message, "sentAt": body["sentAt"]}
    return message


async def segment_batch(request: web.Request) -> web.Response:
    """POST /v1/batch (and /v1/import, analytics.js's /v1/b): `{"batch": [calls]}`, each call
    with its own `type`."""
    key, body, _ = await _authorised_json(request)
    batch = body.get("batch") if isinstance(body, dict) else None
    if not isinstance(batch, list):
        raise Rejected(400, "a batch body must be an object with a `batch` array")
    request.app[COLLECTOR].limiter.take(key, len(batch))
    received = datetime.now(UTC)

    def item(message: Any) -> Item:
        return _raw(message), lambda: segment.to_event(_batch_message(message, body), received)

    return await accept(
        request, "/v1/batch", [item(m) for m in batch], single=False, ip=_segment_ip(request)
    )


async def orders(request: web.Request) -> web.Response:
    """POST /webhooks/orders: the contract's event JSON, one object or an array (write key)."""
    collector = request.app[COLLECTOR]
    key = check_write_key(collector.settings, request.headers.get("Authorization"))
    raw = await request.read()
    body = parse_json(raw)
    if isinstance(body, list):
        collector.limiter.take(key, len(body))
        items: list[Item] = [(_raw(e), partial(_same, e)) for e in body]
        return await accept(request, "/webhooks/orders", items, single=False)
    collector.limiter.take(key, 1)
    return await accept(request, "/webhooks/orders", [(raw, lambda: body)], single=True)


async def sendgrid(request: web.Request) -> web.Response:
    """POST /webhooks/sendgrid: SendGrid's Event Webhook, ECDSA-signed."""
    settings = request.app[COLLECTOR].settings
    raw = await request.read()
    if not settings.sendgrid_public_key:
        raise Rejected(401, "SendGrid is not configured (JOURNEYS_SENDGRID_PUBLIC_KEY)")
    signature = request.headers.get("X-Twilio-Email-Event-Webhook-Signature", "")
    timestamp = request.headers.get("X-Twilio-Email-Event-Webhook-Timestamp", "")
    if not webhooks.verify_sendgrid(settings.sendgrid_public_key, signature, timestamp, raw):
        raise Rejected(401, "bad SendGrid signature")
    body = parse_json(raw)
    if not isinstance(body, list):
        raise Rejected(400, "SendGrid posts a JSON array of events")
    items: list[Item] = [(_raw(e), partial(webhooks.sendgrid_event, e)) for e in body]
    return await accept(request, "/webhooks/sendgrid", items, single=False)


def _mandrill_url(settings: Settings, request: web.Request) -> str:
    """The URL Mandrill signs: the configured public URL, else the URL this request came to."""
    return settings.mandrill_webhook_url or str(request.url)


async def mandrill(request: web.Request) -> web.Response:
    """POST /webhooks/mandrill: form field `mandrill_events`, HMAC-SHA1-signed.

    HEAD (and GET) answer 200: Mandrill checks the URL that way when the webhook is added.
    """
    if request.method in ("HEAD", "GET"):
        return web.Response(status=200)
    settings = request.app[COLLECTOR].settings
    raw = await request.read()
    if settings.mandrill_webhook_key is None:
        raise Rejected(401, "Mandrill is not configured (JOURNEYS_MANDRILL_WEBHOOK_KEY)")
    try:
        form = dict(parse_qsl(raw.decode(), keep_blank_values=True))
    except UnicodeDecodeError as exc:
        raise Rejected(400, "the form body is not UTF-8") from exc
    expected = webhooks.mandrill_signature(
        settings.mandrill_webhook_key.get_secret_value(), _mandrill_url(settings, request), form
    )
    if not webhooks.signatures_match(expected, request.headers.get("X-Mandrill-Signature")):
        raise Rejected(
            401,
            "bad Mandrill signature (is JOURNEYS_MANDRILL_WEBHOOK_URL the URL Mandrill posts to?)",
        )
    events = parse_json(form.get("mandrill_events", "").encode())
    if not isinstance(events, list):
        raise Rejected(400, "mandrill_events must be a JSON array")
    items: list[Item] = [(_raw(e), partial(webhooks.mandrill_event, e)) for e in events]
    return await accept(request, "/webhooks/mandrill", items, single=False)


async def shopify(request: web.Request) -> web.Response:
    """POST /webhooks/shopify: orders/create and checkouts/create, HMAC-SHA256-signed.

    Other topics are answered 200 and ignored, so a subscription to more
    topics than the collector maps does not make Shopify retry and give up.
    """
    settings = request.app[COLLECTOR].settings
    raw = await request.read()
    if settings.shopify_secret is None:
        raise Rejected(401, "Shopify is not configured (JOURNEYS_SHOPIFY_SECRET)")
    expected = webhooks.shopify_signature(settings.shopify_secret.get_secret_value(), raw)
    if not webhooks.signatures_match(expected, request.headers.get("X-Shopify-Hmac-Sha256")):
        raise Rejected(401, "bad Shopify signature")
    body = parse_json(raw)
    topic = request.headers.get("X-Shopify-Topic", "")
    if topic not in webhooks.SHOPIFY_TOPICS:
        return web.json_response(
            {"success": True, "accepted": 0, "rejected": 0, "errors": [], "ignored": topic},
            dumps=_dumps,
        )
    event_id = request.headers.get("X-Shopify-Event-Id") or request.headers.get(
        "X-Shopify-Webhook-Id"
    )
    item: Item = (raw, lambda: webhooks.shopify_event(topic, body, event_id))
    return await accept(request, "/webhooks/shopify", [item], single=False)
