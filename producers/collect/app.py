"""The collector's HTTP API (aiohttp): Segment tracking API, email and order webhooks.

Every accepted request is answered only after its events are durably stored
(the publisher returns once Kafka acknowledged them); when that is not
certain the answer is 503 with Retry-After. Rejected input is answered with
a JSON body saying what is wrong and stored as a dead letter with its reason;
in a batch, the valid events are kept.

    401 no or unknown write key, or a bad webhook signature
    413 body over the limit        429 over the write key's rate
    400 malformed JSON, or an invalid single event
    503 Kafka did not acknowledge
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

import orjson
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from producers.collect import segment, webhooks
from producers.collect.openapi import OPENAPI
from producers.collect.publisher import Publisher
from schemas.errors import BrokerError, InvalidEvent
from schemas.event import EventRecord, validate_event
from schemas.rows import DeadLetterRow
from schemas.settings import Settings
from streams.replay import dead_letter

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PUBLISHER = web.AppKey("publisher", Publisher)
SETTINGS = web.AppKey("settings", Settings)
METRICS = web.AppKey("metrics", dict)
BUCKETS = web.AppKey("buckets", dict)


class Rejected(Exception):
    """A request answered with an error status and a JSON body."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.message, self.extra = status, message, extra


def _error(status: int, message: str, **extra: Any) -> web.Response:
    headers = {"Retry-After": str(extra.pop("retry_after"))} if "retry_after" in extra else None
    return web.json_response({"error": message, **extra}, status=status, headers=headers, dumps=_dumps)


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every failure into a JSON answer; count requests and time them."""
    metrics = request.app[METRICS]
    started = time.perf_counter()
    route = request.match_info.route.resource.canonical if request.match_info.route.resource else "unmatched"
    try:
        response = await handler(request)
    except Rejected as exc:
        response = _error(exc.status, exc.message, **exc.extra)
    except web.HTTPRequestEntityTooLarge:
        response = _error(413, f"body over the limit of {request.app[SETTINGS].collect_max_body} bytes")
    except web.HTTPException as exc:
        response = _error(exc.status, exc.reason)
    except BrokerError as exc:
        response = _error(503, f"events not stored: {exc}", retry_after=5)
    metrics["requests"].labels(route, str(response.status)).inc()
    metrics["latency"].labels(route).observe(time.perf_counter() - started)
    return response


async def _body(request: web.Request) -> bytes:
    """The request body; aiohttp has already undone gzip/deflate Content-Encoding."""
    return await request.read()


def _json(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise Rejected(400, f"malformed JSON: {exc}") from exc


def _write_key(request: web.Request, body: Any = None) -> str:
    keys = request.app[SETTINGS].write_key_set
    given = ""
    auth = request.headers.get("Authorization", "")
    if auth.lower().startswith("basic "):
        try:
            given = base64.b64decode(auth[6:]).decode().split(":", 1)[0]
        except (ValueError, UnicodeDecodeError):
            given = ""
    if not given and isinstance(body, dict) and isinstance(body.get("writeKey"), str):
        given = body["writeKey"]
    if not keys:
        raise Rejected(401, "the collector has no write keys configured (JOURNEYS_WRITE_KEYS)")
    if given not in keys:
        raise Rejected(401, "missing or unknown write key (send it as the basic-auth user)")
    return given


def _limit(request: web.Request, key: str, events: int) -> None:
    rate = request.app[SETTINGS].collect_rate_limit
    if not rate:
        return
    buckets = request.app[BUCKETS]
    now = time.monotonic()
    tokens, last = buckets.get(key, (rate * 2, now))
    tokens = min(rate * 2, tokens + (now - last) * rate)
    if tokens < events:
        buckets[key] = (tokens, now)
        raise Rejected(429, "rate limit exceeded for this write key", retry_after=max(1, int((events - tokens) / rate) + 1))
    buckets[key] = (tokens - events, now)


def _privacy(settings: Settings, event: dict[str, Any], ip: str | None) -> dict[str, Any]:
    if settings.collect_hash_emails and isinstance(event.get("email"), str) and "@" in event["email"]:
        local, _, domain = event["email"].lower().rpartition("@")
        event["email"] = hashlib.sha256(local.encode()).hexdigest()[:32] + "@" + domain
    if ip:
        if settings.collect_truncate_ip:
            try:
                network = ipaddress.ip_network(f"{ip}/{24 if ':' not in ip else 48}", strict=False)
                ip = str(network.network_address)
            except ValueError:
                ip = None
        if ip:
            event.setdefault("context", {})["ip"] = ip
    return event


async def _accept(
    request: web.Request, source: str, items: list[tuple[bytes, Callable[[], dict[str, Any]]]], single: bool
) -> web.Response:
    """Validate mapped events; store valid ones and dead letters; answer with a summary."""
    settings, metrics = request.app[SETTINGS], request.app[METRICS]
    now = int(time.time() * 1000)
    records: list[EventRecord] = []
    dead: list[DeadLetterRow] = []
    errors_: list[dict[str, Any]] = []
    ip = request.remote if request.remote not in (None, "127.0.0.1", "::1") else None
    for index, (raw, build) in enumerate(items):
        try:
            records.append(validate_event(_privacy(settings, build(), ip)))
        except (InvalidEvent, ValueError, TypeError, KeyError) as exc:
            reason = str(exc)
            dead.append(dead_letter(raw, reason, f"collect:{source}", now))
            errors_.append({"index": index, "error": reason})
    await request.app[PUBLISHER].publish(records, dead)
    metrics["accepted"].labels(source).inc(len(records))
    metrics["rejected"].labels(source).inc(len(dead))
    if single and dead:
        raise Rejected(400, f"invalid event: {errors_[0]['error']}")
    return web.json_response(
        {"success": True, "accepted": len(records), "rejected": len(dead), "errors": errors_}, dumps=_dumps
    )


def _raw(item: Any) -> bytes:
    return orjson.dumps(item, option=orjson.OPT_NON_STR_KEYS) if not isinstance(item, bytes) else item


async def segment_call(request: web.Request) -> web.Response:
    """POST /v1/{track,page,screen,identify,group,alias}."""
    call = request.match_info["call"]
    raw = await _body(request)
    body = _json(raw)
    key = _write_key(request, body)
    if not isinstance(body, dict):
        raise Rejected(400, "a Segment call body must be a JSON object")
    _limit(request, key, 1)
    received = datetime.now(UTC)
    return await _accept(request, f"/v1/{call}", [(raw, lambda: segment.to_event(body, received, call))], single=True)


async def segment_batch(request: web.Request) -> web.Response:
    """POST /v1/batch (and /v1/import): many calls, each with its own `type`."""
    raw = await _body(request)
    body = _json(raw)
    key = _write_key(request, body)
    batch = body.get("batch") if isinstance(body, dict) else None
    if not isinstance(batch, list):
        raise Rejected(400, "a batch body must be an object with a `batch` array")
    _limit(request, key, len(batch))
    received = datetime.now(UTC)
    shared = body.get("context") if isinstance(body.get("context"), dict) else {}

    def builder(message: Any) -> Callable[[], dict[str, Any]]:
        def build() -> dict[str, Any]:
            if not isinstance(message, dict):
                raise ValueError("a batch item must be a JSON object")
            merged = {**message, "context": {**shared, **(message.get("context") or {})}} if shared else message
            if "sentAt" not in merged and "sentAt" in body:
                merged = {**merged, "sentAt": body["sentAt"]}
            return segment.to_event(merged, received)

        return build

    return await _accept(request, "/v1/batch", [(_raw(m), builder(m)) for m in batch], single=False)


async def orders(request: web.Request) -> web.Response:
    """POST /webhooks/orders: the contract's event JSON, one object or an array."""
    raw = await _body(request)
    body = _json(raw)
    _write_key(request)
    items = body if isinstance(body, list) else [body]
    return await _accept(
        request, "/webhooks/orders", [(_raw(i), (lambda i=i: i)) for i in items], single=not isinstance(body, list)
    )


async def sendgrid(request: web.Request) -> web.Response:
    """POST /webhooks/sendgrid: SendGrid's Event Webhook, ECDSA-signed."""
    raw = await _body(request)
    settings = request.app[SETTINGS]
    if not settings.sendgrid_public_key:
        raise Rejected(401, "SendGrid is not configured (JOURNEYS_SENDGRID_PUBLIC_KEY)")
    signature = request.headers.get("X-Twilio-Email-Event-Webhook-Signature", "")
    timestamp = request.headers.get("X-Twilio-Email-Event-Webhook-Timestamp", "")
    if not webhooks.verify_sendgrid(settings.sendgrid_public_key, signature, timestamp, raw):
        raise Rejected(401, "bad SendGrid signature")
    body = _json(raw)
    if not isinstance(body, list):
        raise Rejected(400, "SendGrid posts a JSON array of events")
    return await _accept(
        request, "/webhooks/sendgrid", [(_raw(i), (lambda i=i: webhooks.sendgrid_event(i))) for i in body], single=False
    )


async def mandrill(request: web.Request) -> web.Response:
    """POST /webhooks/mandrill: form field `mandrill_events`, HMAC-SHA1-signed. HEAD answers 200."""
    if request.method == "HEAD":
        return web.Response(status=200)
    raw = await _body(request)
    settings = request.app[SETTINGS]
    if settings.mandrill_webhook_key is None:
        raise Rejected(401, "Mandrill is not configured (JOURNEYS_MANDRILL_WEBHOOK_KEY)")
    try:
        form = dict(parse_qsl(raw.decode(), keep_blank_values=True, strict_parsing=False))
    except UnicodeDecodeError as exc:
        raise Rejected(400, "form body is not UTF-8") from exc
    url = settings.mandrill_webhook_url or str(request.url)
    expected = webhooks.mandrill_signature(settings.mandrill_webhook_key.get_secret_value(), url, form)
    if not webhooks.signatures_match(expected, request.headers.get("X-Mandrill-Signature")):
        raise Rejected(401, "bad Mandrill signature (is JOURNEYS_MANDRILL_WEBHOOK_URL the URL Mandrill posts to?)")
    events = _json(form.get("mandrill_events", "").encode())
    if not isinstance(events, list):
        raise Rejected(400, "mandrill_events must be a JSON array")
    return await _accept(
        request, "/webhooks/mandrill", [(_raw(i), (lambda i=i: webhooks.mandrill_event(i))) for i in events], single=False
    )


async def shopify(request: web.Request) -> web.Response:
    """POST /webhooks/shopify: orders/create and checkouts/create, HMAC-SHA256-signed."""
    raw = await _body(request)
    settings = request.app[SETTINGS]
    if settings.shopify_secret is None:
        raise Rejected(401, "Shopify is not configured (JOURNEYS_SHOPIFY_SECRET)")
    expected = webhooks.shopify_signature(settings.shopify_secret.get_secret_value(), raw)
    if not webhooks.signatures_match(expected, request.headers.get("X-Shopify-Hmac-Sha256")):
        raise Rejected(401, "bad Shopify signature")
    body = _json(raw)
    topic = request.headers.get("X-Shopify-Topic", "")
    event_id = request.headers.get("X-Shopify-Event-Id") or request.headers.get("X-Shopify-Webhook-Id")
    return await _accept(
        request, "/webhooks/shopify", [(raw, lambda: webhooks.shopify_event(topic, body, event_id))], single=True
    )


async def health(request: web.Request) -> web.Response:
    """GET /health."""
    return web.json_response({"status": "ok"})


async def metrics(request: web.Request) -> web.Response:
    """GET /metrics (Prometheus)."""
    body = generate_latest(request.app[METRICS]["registry"])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def openapi(request: web.Request) -> web.Response:
    """GET /openapi.json."""
    return web.Response(text=json.dumps(OPENAPI), content_type="application/json")


def _metrics() -> dict[str, Any]:
    registry = CollectorRegistry()
    return {
        "registry": registry,
        "requests": Counter("journeys_collect_requests", "HTTP requests", ["route", "status"], registry=registry),
        "accepted": Counter("journeys_collect_events_accepted", "Events stored", ["source"], registry=registry),
        "rejected": Counter("journeys_collect_events_rejected", "Events sent to dead letters", ["source"], registry=registry),
        "latency": Histogram("journeys_collect_request_seconds", "Request latency", ["route"], registry=registry),
    }


def create_app(settings: Settings, publisher: Publisher) -> web.Application:
    """The collector's aiohttp application."""
    app = web.Application(middlewares=[errors], client_max_size=settings.collect_max_body)
    app[SETTINGS] = settings
    app[PUBLISHER] = publisher
    app[METRICS] = _metrics()
    app[BUCKETS] = {}
    app.router.add_post("/v1/batch", segment_batch)
    app.router.add_post("/v1/import", segment_batch)
    app.router.add_post("/v1/{call:track|page|screen|identify|group|alias}", segment_call)
    app.router.add_post("/webhooks/orders", orders)
    app.router.add_post("/webhooks/sendgrid", sendgrid)
    app.router.add_route("*", "/webhooks/mandrill", mandrill)
    app.router.add_post("/webhooks/shopify", shopify)
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/openapi.json", openapi)

    async def lifecycle(app: web.Application) -> Any:
        await app[PUBLISHER].start()
        yield
        await app[PUBLISHER].close()

    app.cleanup_ctx.append(lifecycle)
    return app
