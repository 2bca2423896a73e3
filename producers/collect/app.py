"""The collector's aiohttp application: routes, error answers, metrics, lifecycle.

Every accepted request is answered only after its events are durably stored
(the publisher returns once Kafka acknowledged them); when that is not
certain the answer is 503 with Retry-After, never 200. Errors are JSON
bodies `{"error": "..."}`:

    400 malformed JSON, or an invalid single event      401 no or unknown
    write key, or a bad webhook signature               413 body over the
    limit    429 over the write key's rate (Retry-After)    503 Kafka did not
    acknowledge (Retry-After)

aiohttp was chosen because it is mature, async (one process keeps many
slow SDK connections open cheaply) and already installed with
faust-streaming; it undoes gzip Content-Encoding, which the SDKs use, and
enforces the body limit on the decoded size.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from journeys.producers.collect import handlers
from journeys.producers.collect.guard import RateLimiter, Rejected
from journeys.producers.collect.handlers import COLLECTOR, Collector, Metrics
from journeys.producers.collect.openapi import OPENAPI
from journeys.producers.collect.publisher import Publisher
from journeys.schemas.errors import BrokerError
from journeys.schemas.settings import Settings

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: Seconds a client is asked to wait before retrying when Kafka did not acknowledge.
RETRY_AFTER = 5


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


@web.middleware
async def answer_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every failure into a JSON answer; count requests and time them."""
    metrics = request.app[COLLECTOR].metrics
    started = time.perf_counter()
    try:
        response = await handler(request)
    except Rejected as exc:
        response = _error(exc.status, exc.message, **exc.extra)
    except web.HTTPRequestEntityTooLarge:
        limit = request.app[COLLECTOR].settings.collect_max_body
        response = _error(413, f"body over the limit of {limit} bytes")
    except web.HTTPException as exc:
        response = _error(
            exc.status,
            exc.reason,
            **({"allow": exc.headers["Allow"]} if "Allow" in exc.headers else {}),
        )
    except BrokerError as exc:
        log.warning("events not stored: %s", exc)
        response = _error(503, f"events not stored: {exc}", retry_after=RETRY_AFTER)
    except Exception:
        log.exception("collector failure on %s %s", request.method, request.path)
        response = _error(500, "internal error; the events were not stored")
    if request.path.startswith("/v1/"):  # browsers post from the website's own origin
        response.headers["Access-Control-Allow-Origin"] = "*"
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
    """GET /health: the process serves (it does not probe Kafka; a 503 on POST says that)."""
    return web.json_response({"status": "ok"})


async def metrics(request: web.Request) -> web.Response:
    """GET /metrics: Prometheus text format."""
    body = generate_latest(request.app[COLLECTOR].metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def openapi(request: web.Request) -> web.Response:
    """GET /openapi.json: the API description."""
    return web.Response(body=orjson.dumps(OPENAPI), content_type="application/json")


def create_app(settings: Settings, publisher: Publisher) -> web.Application:
    """The collector's aiohttp application; the publisher starts and closes with it."""
    app = web.Application(middlewares=[answer_errors], client_max_size=settings.collect_max_body)
    app[COLLECTOR] = Collector(
        settings=settings,
        publisher=publisher,
        metrics=Metrics.create(),
        limiter=RateLimiter(settings.collect_rate_limit),
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
