"""The collector's request handlers: Segment tracking API, email and order webhooks.

Each handler checks the caller (write key or provider signature), maps the
payload to contract events with the pure functions of `segment` and
`webhooks`; `sort_items` validates them into records and dead letters, and
`store` publishes both together and answers only once the publisher
returned (Kafka acknowledged).

Two kinds of bad input, two answers:

- The request itself is wrong (not JSON, not the documented shape, a known
  Segment field of the wrong JSON type, too many items, too large): 400
  (413 for the body limit) with the reason; nothing is stored. The OpenAPI
  description says exactly what passes this gate.
- The request is well formed but an event in it is invalid (no identity, a
  time out of range, NaN, ...): the request is answered 200 with the
  counts and the reasons (`errors`), the valid events are kept and every
  invalid one is stored as a dead letter. This is Segment's own rule (it
  answers 200 unless the JSON or its size is wrong), and providers retry
  every non-2xx answer (Shopify 8 times, then it may drop the
  subscription) while an invalid event stays invalid: its dead letter is
  the durable answer.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any
from urllib.parse import parse_qsl

import orjson
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram

from journeys.producers.collect import segment, webhooks
from journeys.producers.collect.guard import (
    Network,
    RateLimiter,
    Rejected,
    apply_privacy,
    check_write_key,
    client_ip,
)
from journeys.producers.collect.limits import (
    MAX_LISTED_ERRORS,
    WEBHOOK_MAX_BODY,
    Budget,
    Hold,
    dead_letter,
    item_bytes,
    parse_json,
    read_body,
    unrepresentable,
)
from journeys.producers.collect.publisher import Publisher
from journeys.producers.collect.replay import SeenRequests, check_timestamp, signed_key
from journeys.schemas.errors import InvalidEvent
from journeys.schemas.event import validate_event
from journeys.schemas.record import EventRecord
from journeys.schemas.rows import DeadLetterRow
from journeys.schemas.settings import Settings

#: What a failing mapping or validation of one event may raise; each becomes its dead letter.
EVENT_ERRORS = (InvalidEvent, ValueError, TypeError, KeyError, OverflowError, RecursionError)


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
    """What every handler needs: settings, the publisher, metrics, and the per-process guards."""

    settings: Settings
    publisher: Publisher
    metrics: Metrics
    limiter: RateLimiter
    budget: Budget
    seen: SeenRequests
    #: Proxies whose X-Forwarded-For is believed (`collect_trusted_proxies`).
    proxies: tuple[Network, ...] = ()

    @property
    def skew_tolerance(self) -> timedelta:
        """How far an SDK's clock may be off before its times are corrected."""
        return timedelta(milliseconds=self.settings.collect_skew_tolerance)


COLLECTOR = web.AppKey("collector", Collector)
#: The request's share of the budget, made by the middleware, grown as the body is read.
HOLD = web.RequestKey("hold", Hold)


@dataclass(slots=True)
class Item:
    """One payload of a request: how it becomes a contract event, and its bytes for a dead letter.

    `raw` is computed only when needed (a dead letter, a size check); `strict`
    is False for items of a body that only Python's parser could read.
    """

    value: Any
    build: Callable[[], Any]
    raw: bytes | None = None
    strict: bool = True

    def payload(self) -> bytes:
        """The item's bytes: as received for a whole body, re-serialised for a batch item."""
        if self.raw is None:
            self.raw = item_bytes(self.value, self.strict)
        return self.raw


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def _same(value: Any) -> Any:
    return value


def _event(collector: Collector, item: Item, ip: str | None, size_limit: int | None) -> EventRecord:
    """One item as a validated record; raises one of EVENT_ERRORS with the reason."""
    if size_limit is not None and len(item.payload()) > size_limit:
        raise ValueError(f"event of {len(item.payload())} bytes over the limit of {size_limit}")
    if not item.strict:
        problem = unrepresentable(item.value)
        if problem:
            raise ValueError(problem)
    mapped = item.build()
    if isinstance(mapped, dict):
        mapped = apply_privacy(collector.settings, mapped, ip)
    return validate_event(mapped)


@dataclass
class Sorted:
    """A request's items sorted into records and dead letters, with the first reasons."""

    source: str
    records: list[EventRecord]
    dead: list[DeadLetterRow]
    problems: list[dict[str, Any]]


def sort_items(
    collector: Collector, source: str, items: list[Item], ip: str | None = None, sized: bool = False
) -> Sorted:
    """Validate mapped events into records and dead letters (`sized`: check each item against
    the event size limit, as for a batch's items)."""
    max_event = collector.settings.collect_max_event
    now = int(time.time() * 1000)
    done = Sorted(source, [], [], [])
    for index, item in enumerate(items):
        try:
            done.records.append(_event(collector, item, ip, max_event if sized else None))
        except EVENT_ERRORS as exc:
            reason = str(exc) or type(exc).__name__
            payload = item.payload()
            done.dead.append(dead_letter(payload, reason, f"collect:{source}", now, max_event))
            if len(done.problems) < MAX_LISTED_ERRORS:
                done.problems.append({"index": index, "error": reason})
    return done


async def store(collector: Collector, done: Sorted) -> web.Response:
    """Publish the records and the dead letters; answer the summary once Kafka acknowledged.

    Callers drop the parsed body before awaiting this: while Kafka is slow,
    a waiting request holds only its records.
    """
    await collector.publisher.publish(done.records, done.dead)
    collector.metrics.accepted.labels(done.source).inc(len(done.records))
    collector.metrics.rejected.labels(done.source).inc(len(done.dead))
    answer = {
        "success": True,
        "accepted": len(done.records),
        "rejected": len(done.dead),
        "errors": done.problems,
    }
    return web.json_response(answer, dumps=_dumps)


def _cap(collector: Collector, items: list[Any], what: str) -> None:
    """`Rejected(400)` for an array with more items than one request may carry."""
    limit = collector.settings.collect_max_batch_items
    if len(items) > limit:
        raise Rejected(
            400, f"{what} holds {len(items)} items; at most {limit} per request (split it)"
        )


async def _read_limited(request: web.Request, settings: Settings) -> bytes:
    """The body of a write-key request, at most `collect_max_body` bytes (413 otherwise, before
    reading when Content-Length already says so), held against the budget as it arrives."""
    return await read_body(request, settings, request[HOLD], settings.collect_max_body)


async def _read_webhook(request: web.Request, settings: Settings) -> bytes:
    """The body of a provider webhook (signature precondition already checked), at most
    `WEBHOOK_MAX_BODY` bytes, held against the budget as it arrives."""
    hold = request[HOLD]
    hold.verify()
    return await read_body(request, settings, hold, WEBHOOK_MAX_BODY)


async def _authorised_json(request: web.Request) -> tuple[str, Any, bytes, bool]:
    """Write key, parsed body, raw bytes and strictness of a Segment-style call.

    A key in the basic-auth header is checked before the body is read; a body
    without one is read as unverified (a small share of the budget) and its
    `writeKey` checked once parsed.
    """
    collector = request.app[COLLECTOR]
    authorization = request.headers.get("Authorization")
    hold = request[HOLD]
    try:
        key = check_write_key(collector.settings, authorization)
    except Rejected:
        raw = await _read_limited(request, collector.settings)
        try:
            body, strict = parse_json(raw)
        except Rejected:
            body, strict = None, True
        key = check_write_key(collector.settings, authorization, body)  # writeKey in the body
        hold.verify()
        return key, body, raw, strict
    hold.verify()
    raw = await _read_limited(request, collector.settings)
    body, strict = parse_json(raw)
    return key, body, raw, strict


def _segment_ip(request: web.Request) -> str | None:
    proxies = request.app[COLLECTOR].proxies
    return client_ip(request.headers.get("X-Forwarded-For"), request.remote, proxies)


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
    collector = request.app[COLLECTOR]
    call = request.match_info["call"]
    call = SHORT_CALLS.get(call, call)
    key, body, raw, strict = await _authorised_json(request)
    if not isinstance(body, dict):
        raise Rejected(400, "a Segment call body must be a JSON object")
    if len(raw) > collector.settings.collect_max_event:
        raise Rejected(
            400,
            f"a call of {len(raw)} bytes is over the limit of "
            f"{collector.settings.collect_max_event} per event",
        )
    problem = segment.shape_error(body)
    if problem:
        raise Rejected(400, problem)
    collector.limiter.take(key, 1)
    received = datetime.now(UTC)
    build = partial(segment.to_event, body, received, call, collector.skew_tolerance)
    done = sort_items(
        collector, f"/v1/{call}", [Item(body, build, raw=raw, strict=strict)], _segment_ip(request)
    )
    del body, build
    return await store(collector, done)


def _batch_message(message: Any, body: dict[str, Any]) -> dict[str, Any]:
    """A batch item with the batch's shared `context` and `sentAt` folded in."""
    if not isinstance(message, dict):
        raise ValueError("a batch item must be a JSON object")
    shared = body.get("context")
    if isinstance(shared, dict) and shared:
        own = message.get("context")
        message = {**message, "context": {**shared, **(own if isinstance(own, dict) else {})}}
    if "sentAt" not in message and body.get("sentAt") is not None:
        message = {**message, "sentAt": body["sentAt"]}
    return message


def _batch_event(
    message: Any, body: dict[str, Any], received: datetime, tolerance: timedelta
) -> dict[str, Any]:
    return segment.to_event(_batch_message(message, body), received, None, tolerance)


async def segment_batch(request: web.Request) -> web.Response:
    """POST /v1/batch (and /v1/import, analytics.js's /v1/b): `{"batch": [calls]}`, each call
    with its own `type`."""
    collector = request.app[COLLECTOR]
    key, body, raw, strict = await _authorised_json(request)
    batch = body.get("batch") if isinstance(body, dict) else None
    if not isinstance(body, dict) or not isinstance(batch, list):
        raise Rejected(400, "a batch body must be an object with a `batch` array")
    _cap(collector, batch, "the batch")
    problem = segment.shape_error(body, segment.BATCH_FIELDS)
    if problem:
        raise Rejected(400, problem)
    collector.limiter.take(key, len(batch))
    received = datetime.now(UTC)
    tolerance = collector.skew_tolerance
    items = [
        Item(m, partial(_batch_event, m, body, received, tolerance), strict=strict) for m in batch
    ]
    sized = len(raw) > collector.settings.collect_max_event
    done = sort_items(collector, "/v1/batch", items, _segment_ip(request), sized)
    del body, batch, items
    return await store(collector, done)


async def orders(request: web.Request) -> web.Response:
    """POST /webhooks/orders: the contract's event JSON, one object or an array (write key)."""
    collector = request.app[COLLECTOR]
    key = check_write_key(collector.settings, request.headers.get("Authorization"))
    request[HOLD].verify()
    raw = await _read_limited(request, collector.settings)
    body, strict = parse_json(raw)
    if isinstance(body, list):
        _cap(collector, body, "the array")
        collector.limiter.take(key, len(body))
        sized = len(raw) > collector.settings.collect_max_event
        items = [Item(e, partial(_same, e), strict=strict) for e in body]
        done = sort_items(collector, "/webhooks/orders", items, sized=sized)
        del body, items
        return await store(collector, done)
    if not isinstance(body, dict):
        raise Rejected(400, "send one event (a JSON object) or an array of them")
    if len(raw) > collector.settings.collect_max_event:
        raise Rejected(
            400,
            f"an event of {len(raw)} bytes is over the limit of "
            f"{collector.settings.collect_max_event}",
        )
    collector.limiter.take(key, 1)
    done = sort_items(
        collector, "/webhooks/orders", [Item(body, partial(_same, body), raw, strict)]
    )
    del body
    return await store(collector, done)


async def _refuse_with_dead_letter(
    collector: Collector, raw: bytes, reason: str, source: str
) -> None:
    """Keep the request as a dead letter, then refuse it: `Rejected(400)` with the reason."""
    now = int(time.time() * 1000)
    row = dead_letter(raw, reason, f"collect:{source}", now, collector.settings.collect_max_event)
    await collector.publisher.publish([], [row])
    collector.metrics.rejected.labels(source).inc()
    raise Rejected(400, reason)


def _duplicate() -> web.Response:
    return web.json_response(
        {"success": True, "accepted": 0, "rejected": 0, "errors": [], "duplicate": True},
        dumps=_dumps,
    )


async def sendgrid(request: web.Request) -> web.Response:
    """POST /webhooks/sendgrid: SendGrid's Event Webhook, ECDSA-signed, fresh and not replayed."""
    collector = request.app[COLLECTOR]
    settings = collector.settings
    if not settings.sendgrid_public_key:
        raise Rejected(401, "SendGrid is not configured (JOURNEYS_SENDGRID_PUBLIC_KEY)")
    signature = request.headers.get("X-Twilio-Email-Event-Webhook-Signature", "")
    timestamp = request.headers.get("X-Twilio-Email-Event-Webhook-Timestamp", "")
    tolerance = settings.collect_signature_tolerance / 1000
    moment = check_timestamp(timestamp, time.time(), tolerance, "SendGrid")
    if not signature.strip():
        raise Rejected(401, "bad SendGrid signature")
    raw = await _read_webhook(request, settings)
    if not webhooks.verify_sendgrid(settings.sendgrid_public_key, signature, timestamp, raw):
        raise Rejected(401, "bad SendGrid signature")
    body, strict = parse_json(raw)
    if not isinstance(body, list):
        raise Rejected(400, "SendGrid posts a JSON array of events")
    key = signed_key(timestamp, raw)
    seen = collector.seen.begin(key, moment + tolerance, time.time())
    if seen == "stored":
        return _duplicate()
    if seen == "in flight":
        raise Rejected(409, "the same signed request is being stored; retry", retry_after=1)
    items = [Item(e, partial(webhooks.sendgrid_event, e), strict=strict) for e in body]
    done = sort_items(collector, "/webhooks/sendgrid", items, sized=True)
    del body, items
    try:
        response = await store(collector, done)
    except BaseException:
        collector.seen.forget(key)
        raise
    collector.seen.stored(key)
    return response


def _mandrill_url(settings: Settings, request: web.Request) -> str:
    """The URL Mandrill signs: the configured public URL, else the URL this request came to."""
    return settings.mandrill_webhook_url or str(request.url)


async def mandrill(request: web.Request) -> web.Response:
    """POST /webhooks/mandrill: form field `mandrill_events`, HMAC-SHA1-signed.

    HEAD (and GET) answer 200: Mandrill checks the URL that way when the webhook is added.
    """
    if request.method in ("HEAD", "GET"):
        return web.Response(status=200)
    collector = request.app[COLLECTOR]
    settings = collector.settings
    if settings.mandrill_webhook_key is None:
        raise Rejected(401, "Mandrill is not configured (JOURNEYS_MANDRILL_WEBHOOK_KEY)")
    if not request.headers.get("X-Mandrill-Signature", "").strip():
        raise Rejected(401, "bad Mandrill signature (none sent)")
    raw = await _read_webhook(request, settings)
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
    events, strict = parse_json(form.get("mandrill_events", "").encode())
    if not isinstance(events, list):
        raise Rejected(400, "mandrill_events must be a JSON array")
    items = [Item(e, partial(webhooks.mandrill_event, e), strict=strict) for e in events]
    done = sort_items(collector, "/webhooks/mandrill", items, sized=True)
    del events, items, form
    return await store(collector, done)


async def shopify(request: web.Request) -> web.Response:
    """POST /webhooks/shopify: orders/create and checkouts/create, HMAC-SHA256-signed.

    Other topics are answered 200 and ignored, so a subscription to more
    topics than the collector maps does not make Shopify retry and give up.
    """
    collector = request.app[COLLECTOR]
    settings = collector.settings
    if settings.shopify_secret is None:
        raise Rejected(401, "Shopify is not configured (JOURNEYS_SHOPIFY_SECRET)")
    signature = request.headers.get("X-Shopify-Hmac-Sha256")
    if not (signature or "").strip():
        raise Rejected(401, "bad Shopify signature (none sent)")
    raw = await _read_webhook(request, settings)
    expected = webhooks.shopify_signature(settings.shopify_secret.get_secret_value(), raw)
    if not webhooks.signatures_match(expected, signature):
        raise Rejected(401, "bad Shopify signature")
    body, strict = parse_json(raw)
    topic = request.headers.get("X-Shopify-Topic", "")
    if topic not in webhooks.SHOPIFY_TOPICS:
        return web.json_response(
            {"success": True, "accepted": 0, "rejected": 0, "errors": [], "ignored": topic},
            dumps=_dumps,
        )
    mismatch = webhooks.shopify_topic_mismatch(topic, body)
    if mismatch:
        await _refuse_with_dead_letter(collector, raw, mismatch, "/webhooks/shopify")
    item = Item(body, partial(webhooks.shopify_event, topic, body, raw), raw=raw, strict=strict)
    done = sort_items(collector, "/webhooks/shopify", [item])
    del body, item
    return await store(collector, done)
