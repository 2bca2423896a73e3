"""The collector's aiohttp application: routes, error answers, metrics, lifecycle.

Every accepted request is answered only after its events are durably stored
(the publisher returns once Kafka acknowledged them); when that is not
certain the answer is 503 with Retry-After, never 200. Errors are JSON
bodies `{"error": "..."}`:

    400 malformed JSON, a body of the wrong shape, too many items, an event
        over the size limit, bad gzip
    401 no or unknown write key, a bad, stale or missing webhook signature
    404 unknown path, or an unknown write key's analytics.js settings
    405 wrong method (with `Allow`)      408 the body did not arrive in time
    409 the same signed webhook is being stored right now (retry)
    413 body over the limit          429 over the write key's rate
    503 Kafka did not acknowledge, is known to be down, or the collector
        holds too many body bytes (Retry-After)
    499 (counted in the metrics only) the client left before its body arrived

Browsers read `Retry-After` and the rate-limit header only because every
`/v1/` answer lists them in `Access-Control-Expose-Headers`.

aiohttp was chosen because it is mature, async (one process keeps many
slow SDK connections open cheaply) and already installed with
faust-streaming; it undoes gzip Content-Encoding, which the SDKs use, and
enforces the body limit on the decoded size.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from journeys.producers.collect import handlers, privacy
from journeys.producers.collect.analytics_js import api_host, settings_document
from journeys.producers.collect.guard import RateLimiter, Rejected, known_key, trusted_networks
from journeys.producers.collect.handlers import COLLECTOR, HOLD, Collector, Metrics
from journeys.producers.collect.limits import WEBHOOK_MAX_BODY, Budget, Hold, ServerLog
from journeys.producers.collect.openapi import openapi_document
from journeys.producers.collect.publisher import Publisher
from journeys.producers.collect.replay import SeenRequests
from journeys.schemas.errors import BrokerError
from journeys.schemas.settings import Settings

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: Seconds a client is asked to wait before retrying when Kafka did not acknowledge.
RETRY_AFTER = 5
#: Answer headers a browser script may read (analytics.js reads Retry-After on a 429).
EXPOSED = "Retry-After, X-RateLimit-Reset"
#: How long a client still sending its body after an early answer is read before closing.
LINGER_SECONDS = 2.0


def _error(status: int, message: str, **extra: Any) -> web.Response:
    retry_after = extra.pop("retry_after", None)
    headers = None
    if retry_after is not None:  # analytics.js reads X-RateLimit-Reset, HTTP clients Retry-After
        headers = {"Retry-After": str(retry_after), "X-RateLimit-Reset": str(retry_after)}
    return web.json_response(
        {"error": message, **extra},
        status=status,
        headers=headers,
        dumps=lambda v: orjson.dumps(v).decode(),
    )


def _route(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


async def _answer(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The handler's answer, or the JSON error its failure means."""
    try:
        return await handler(request)
    except Rejected as exc:
        response = _error(exc.status, exc.message, **exc.extra)
        if exc.close:
            response.force_close()
        return response
    except web.HTTPRequestEntityTooLarge as exc:
        return _error(413, f"body over the limit: {exc.text}")
    except web.HTTPException as exc:
        allow = exc.headers.get("Allow")
        response = _error(exc.status, exc.reason, **({"allow": allow} if allow else {}))
        if allow is not None:
            response.headers["Allow"] = allow
        return response
    except BrokerError as exc:
        log.warning("events not stored: %s", exc)
        return _error(503, f"events not stored: {exc}", retry_after=RETRY_AFTER)
    except Exception:
        log.exception("collector failure on %s %s", request.method, request.path)
        return _error(500, "internal error; the events were not stored")


@web.middleware
async def answer_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every failure into a JSON answer; give back the body bytes the request held
    against the budget (handlers hold them as they read); count requests and time them."""
    collector = request.app[COLLECTOR]
    metrics = collector.metrics
    started = time.perf_counter()
    hold = request[HOLD] = Hold(collector.budget)
    response: web.StreamResponse
    if request.method == "POST" and not collector.publisher.available:
        response = _error(503, "events not stored: Kafka is down; retry", retry_after=RETRY_AFTER)
        response.force_close()  # answered before the body is read
    else:
        try:
            response = await _answer(request, handler)
        finally:
            hold.release()
    if request.path.startswith("/v1/"):  # browsers post from the website's own origin
        response.headers["Access-Control-Allow-Origin"] = "*"
        response.headers["Access-Control-Expose-Headers"] = EXPOSED
    route = _route(request)
    metrics.requests.labels(route, str(response.status)).inc()
    metrics.latency.labels(route).observe(time.perf_counter() - started)
    return response


async def preflight(request: web.Request) -> web.Response:
    """OPTIONS /v1/...: CORS preflight, for browsers that send headers beyond a simple POST."""
    asked = request.headers.get("Access-Control-Request-Headers", "Content-Type, Authorization")
    return web.Response(
        status=204,
        headers={
            "Access-Control-Allow-Methods": "POST, OPTIONS",
            "Access-Control-Allow-Headers": asked,
            "Access-Control-Max-Age": "86400",
        },
    )


async def health(request: web.Request) -> web.Response:
    """GET /health: the process serves (200 even while Kafka is down: restarting the collector
    would not bring Kafka back; `kafka` says whether requests are answered 503 now)."""
    up = request.app[COLLECTOR].publisher.available
    return web.json_response({"status": "ok", "kafka": "up" if up else "down"})


#: What a `Host` header may hold to be echoed into the settings: a name or address, a port.
_HOST = re.compile(r"^(?:[A-Za-z0-9.-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?$")


async def analytics_settings(request: web.Request) -> web.Response:
    """GET /v1/projects/{writeKey}/settings: analytics.js's settings, pointing at the collector;
    404 for a write key the collector does not take.

    With `collect_public_url` set the answer names it and may be cached by
    anyone (`public`). Without it the collector can only guess its address
    from the request's `Host` (and `X-Forwarded-Proto`), which the client
    chooses: that answer is `private, no-store` with `Vary`, so no shared
    cache keeps one client's guess for another (cache poisoning), and a
    `Host` that is not a host name or address is a 400.
    """
    settings = request.app[COLLECTOR].settings
    key = request.match_info["writeKey"]
    if not settings.write_key_set or not known_key(settings.write_key_set, key):
        raise Rejected(404, "unknown write key")
    cache = {"Cache-Control": "public, max-age=300"}
    if not settings.collect_public_url:
        if not _HOST.match(request.host):
            raise Rejected(
                400, "the Host header is not a host name; set JOURNEYS_COLLECT_PUBLIC_URL"
            )
        cache = {"Cache-Control": "private, no-store", "Vary": "Host, X-Forwarded-Proto"}
    forwarded = request.headers.get("X-Forwarded-Proto", "").split(",", 1)[0].strip().lower()
    scheme = forwarded if forwarded in ("http", "https") else request.scheme
    protocol, host = api_host(settings.collect_public_url, scheme, request.host)
    return web.json_response(
        settings_document(key, protocol, host),
        headers=cache,
        dumps=lambda v: orjson.dumps(v).decode(),
    )


async def metrics(request: web.Request) -> web.Response:
    """GET /metrics: Prometheus text format."""
    body = generate_latest(request.app[COLLECTOR].metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def openapi(request: web.Request) -> web.Response:
    """GET /openapi.json: the API description."""
    document = openapi_document(request.app[COLLECTOR].settings)
    return web.Response(body=orjson.dumps(document), content_type="application/json")


def create_app(
    settings: Settings, publisher: Publisher, follow_suppressions: bool = False
) -> web.Application:
    """The collector's aiohttp application; the publisher starts and closes with it, behind
    the privacy gate (`privacy.screened`: consent, the suppression list, followed on Kafka
    with `follow_suppressions`, and POST /v1/privacy/forget).

    The server closes a connection that has not completed a request within
    `collect_read_timeout` (its keep-alive timer, which also runs before the
    first request), and reads at most `LINGER_SECONDS` of a body it did not need.
    """
    app = web.Application(
        middlewares=[answer_errors],
        client_max_size=max(settings.collect_max_body, WEBHOOK_MAX_BODY),
        handler_args={
            "keepalive_timeout": settings.collect_read_timeout / 1000,
            "lingering_time": LINGER_SECONDS,
            "logger": ServerLog(logging.getLogger("aiohttp.server")),
        },
    )
    counters = Metrics.create()
    publisher = privacy.screened(app, settings, publisher, counters.registry, follow_suppressions)
    app[COLLECTOR] = Collector(
        settings=settings,
        publisher=publisher,
        metrics=counters,
        limiter=RateLimiter(settings.collect_rate_limit),
        budget=Budget(settings.collect_max_inflight),
        seen=SeenRequests(),
        proxies=trusted_networks(settings.collect_trusted_proxies),
    )
    for path in ("/v1/batch", "/v1/import", "/v1/b"):
        app.router.add_post(path, handlers.segment_batch)
        app.router.add_route("OPTIONS", path, preflight)
    calls = "|".join((*handlers.CALLS, *handlers.SHORT_CALLS))
    app.router.add_post(f"/v1/{{call:{calls}}}", handlers.segment_call)
    app.router.add_route("OPTIONS", f"/v1/{{call:{calls}}}", preflight)
    app.router.add_post("/webhooks/orders", handlers.orders)
    app.router.add_post("/webhooks/sendgrid", handlers.sendgrid)
    app.router.add_post("/webhooks/mandrill", handlers.mandrill)
    app.router.add_get("/webhooks/mandrill", handlers.mandrill)  # and HEAD: Mandrill's URL check
    app.router.add_post("/webhooks/shopify", handlers.shopify)
    app.router.add_get("/v1/projects/{writeKey}/settings", analytics_settings)
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/openapi.json", openapi)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await publisher.start()
        try:
            yield
        finally:
            await publisher.close()

    app.cleanup_ctx.append(lifecycle)
    return app
