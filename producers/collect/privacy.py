"""The collector's privacy: consent and suppression on every event, and the forget endpoint.

- `ScreeningPublisher` wraps the publisher: every accepted event passes
  `journeys.schemas.privacy.PrivacyGate.screen` before it is published, so
  an event that denies consent or carries a forgotten person's identifier
  never reaches Kafka. Withheld events are counted in
  `journeys_collect_events_withheld_total{reason}` (`suppressed`,
  `consent_dropped`, `consent_anonymised`); the client is answered 200 as
  for any accepted event (a browser cannot do anything else with it).
  With `follow` the gate follows the suppression topic
  (`journeys.producers.suppressions`); until it has read the list to its
  end the publisher says it is unavailable, so events are answered 503
  rather than screened against half a list.
- `POST /v1/privacy/forget`: the admin endpoint of `journeys forget`. Only
  `Authorization: Bearer <JOURNEYS_ADMIN_KEY>` opens it (compared in
  constant time); no bearer token, or another one, a write key included, is
  401; with no admin key set, or one equal to a write key, the endpoint is
  off (403 to any bearer token).
  Body: one of `{"email": ...}`, `{"contact_id": ...}`,
  `{"anonymous_id": ...}`, `{"account_id": ...}`. The erasure runs against
  ClickHouse (`JOURNEYS_CLICKHOUSE_URL`) on a thread; the hashes are
  suppressed in this collector at once and published for the others.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import orjson
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter

from journeys.privacy_service import Outcome, forget_and_publish
from journeys.producers.collect.guard import Rejected
from journeys.producers.collect.publisher import Publisher
from journeys.producers.suppressions import SuppressionFollower
from journeys.schemas.errors import BrokerError, SinkUnavailable
from journeys.schemas.privacy import IDENTIFIER_KINDS, PrivacyGate
from journeys.schemas.record import EventRecord
from journeys.schemas.rows import DeadLetterRow
from journeys.schemas.settings import Settings
from journeys.sinks.clickhouse.forget import ForgetRequest

log = logging.getLogger(__name__)

FORGET_PATH = "/v1/privacy/forget"
#: Seconds between attempts to read the suppression list while Kafka cannot give it.
FOLLOW_RETRY = 5.0
#: The largest forget request body, bytes.
MAX_FORGET_BODY = 4096

Forget = Callable[[Settings, ForgetRequest, bool], Outcome]


class ScreeningPublisher:
    """A publisher that screens events through the privacy gate first (see the module)."""

    def __init__(
        self,
        inner: Publisher,
        gate: PrivacyGate,
        withheld: Counter,
        follower: SuppressionFollower | None = None,
    ) -> None:
        self.inner, self.gate, self.withheld, self.follower = inner, gate, withheld, follower
        self._following: asyncio.Task[None] | None = None

    @property
    def available(self) -> bool:
        """Kafka is up and the suppression list (when followed) has been read."""
        return self.inner.available and (self.follower is None or self.follower.ready)

    async def start(self) -> None:
        """Start the publisher and read the suppression list before the collector serves
        (when Kafka cannot give it now: keep trying in the background, answering 503)."""
        await self.inner.start()
        if self.follower is not None:
            if not await self._read(self.follower):
                self._following = asyncio.create_task(self._follow(self.follower))

    @staticmethod
    async def _read(follower: SuppressionFollower) -> bool:
        try:
            await asyncio.to_thread(follower.start)
        except BrokerError as exc:
            log.warning("suppression list not read yet (events get 503): %s", exc)
            return False
        return True

    async def _follow(self, follower: SuppressionFollower) -> None:
        while not await self._read(follower):
            await asyncio.sleep(FOLLOW_RETRY)

    async def publish(
        self, records: Sequence[EventRecord], dead_letters: Sequence[DeadLetterRow]
    ) -> None:
        """Publish the events the gate lets through (some anonymised); count the others."""
        counts: dict[str, int] = {}
        kept = self.gate.screen_all(records, counts)
        letters = [d for d in dead_letters if not self.gate.payload_suppressed(d.payload)]
        if len(letters) < len(dead_letters):
            counts["suppressed"] = counts.get("suppressed", 0) + len(dead_letters) - len(letters)
        for reason, count in counts.items():
            self.withheld.labels(reason).inc(count)
        await self.inner.publish(kept, letters)

    async def close(self) -> None:
        """Stop following, then close the publisher."""
        if self._following is not None:
            self._following.cancel()
            await asyncio.gather(self._following, return_exceptions=True)
        if self.follower is not None:
            await asyncio.to_thread(self.follower.close)
        await self.inner.close()


@dataclass
class Privacy:
    """What the forget endpoint needs: the settings, the gate, how to forget."""

    settings: Settings
    gate: PrivacyGate
    forget: Forget
    publish: bool


PRIVACY = web.AppKey("privacy", Privacy)


def screened(
    app: web.Application,
    settings: Settings,
    publisher: Publisher,
    registry: CollectorRegistry,
    follow: bool,
) -> ScreeningPublisher:
    """Wrap the app's publisher in the gate and route the forget endpoint; `follow`: read
    and follow the suppression topic (the real collector; tests without Kafka do not)."""
    gate = PrivacyGate(settings.consent_category, settings.consent_mode)
    withheld = Counter(
        "journeys_collect_events_withheld",
        "Events not stored because of consent or the suppression list",
        ["reason"],
        registry=registry,
    )
    follower = None
    if follow:
        from journeys.sinks.privacy_salt import privacy_salt

        gate.salt = privacy_salt(settings)
        follower = SuppressionFollower(settings, gate)
    app[PRIVACY] = Privacy(settings, gate, forget_and_publish, follow)
    app.router.add_post(FORGET_PATH, forget)
    app.router.add_route("OPTIONS", FORGET_PATH, refuse_preflight)
    return ScreeningPublisher(publisher, gate, withheld, follower)


def check_admin(settings: Settings, authorization: str | None) -> None:
    """Let the request through only with the admin key as its bearer token."""
    scheme, _, token = (authorization or "").strip().partition(" ")
    given = token.strip() if scheme.lower() == "bearer" else ""
    if not given:
        raise Rejected(401, "this endpoint needs the admin key as a bearer token")
    key = settings.admin_key.get_secret_value() if settings.admin_key is not None else ""
    if not key or key in settings.write_key_set:
        raise Rejected(403, "the admin endpoints are off: set JOURNEYS_ADMIN_KEY (not a write key)")
    expected = hashlib.sha256(key.encode()).digest()
    if not hmac.compare_digest(
        hashlib.sha256(given.encode(errors="surrogatepass")).digest(), expected
    ):
        raise Rejected(401, "this endpoint needs the admin key as a bearer token")


def forget_request(body: bytes) -> ForgetRequest:
    """The request a forget body asks for; 400 unless it names exactly one identifier."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise Rejected(400, "the body is not JSON") from None
    if not isinstance(data, dict):
        raise Rejected(400, "the body must be a JSON object")
    given = [(k, v) for k in IDENTIFIER_KINDS if (v := data.get(k)) is not None]
    if len(given) != 1 or not isinstance(given[0][1], str) or not given[0][1].strip():
        raise Rejected(400, f"give exactly one of {', '.join(IDENTIFIER_KINDS)} as a string")
    kind, value = given[0]
    return ForgetRequest(kind, value, "http")


async def forget(request: web.Request) -> web.Response:
    """POST /v1/privacy/forget: erase and suppress a person or company (see the module)."""
    privacy = request.app[PRIVACY]
    check_admin(privacy.settings, request.headers.get("Authorization"))
    if (request.content_length or 0) > MAX_FORGET_BODY:
        raise Rejected(413, f"a forget request is at most {MAX_FORGET_BODY} bytes")
    asked = forget_request(await request.content.read(MAX_FORGET_BODY + 1))
    try:
        outcome = await asyncio.to_thread(privacy.forget, privacy.settings, asked, privacy.publish)
    except (SinkUnavailable, BrokerError) as exc:
        raise Rejected(503, f"nothing erased yet: {exc}", retry_after=30) from exc
    if not privacy.gate.salt:  # a collector that does not follow the list hashes now
        from journeys.sinks.privacy_salt import privacy_salt

        privacy.gate.salt = privacy_salt(privacy.settings)
    privacy.gate.suppress(outcome.hashes)
    result = outcome.result
    body = {
        "request_id": result.request_id,
        "status": result.status,
        "identifiers": result.identifiers,
        "erased": result.erased,
        "accounts_recomputed": result.accounts_recomputed,
        "warning": outcome.warning,
    }
    return web.json_response(body, dumps=lambda v: orjson.dumps(v).decode())


def forget_path_item() -> dict[str, object]:
    """The OpenAPI description of the forget endpoint (served in /openapi.json)."""
    one_of = [
        {
            "type": "object",
            "required": [kind],
            "properties": {kind: {"type": "string", "minLength": 1}},
            "additionalProperties": False,
        }
        for kind in IDENTIFIER_KINDS
    ]
    answers = {
        "200": {"description": "erased; the rows erased per table"},
        "400": {"description": "not exactly one identifier"},
        "401": {"description": "no admin key as the bearer token"},
        "403": {"description": "admin endpoints are off (no JOURNEYS_ADMIN_KEY)"},
        "413": {"description": "body over 4 KiB"},
        "503": {"description": "ClickHouse or Kafka unreachable: nothing erased yet, retry"},
    }
    refused = {"summary": "no CORS: browsers may not call it", "responses": {"403": answers["403"]}}
    return {
        "post": {
            "summary": "Erase a person or company and suppress their identifiers (GDPR art. 17)",
            "security": [{"adminKey": []}],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"oneOf": one_of}}},
            },
            "responses": answers,
        },
        "options": refused,
    }


ADMIN_SCHEME = {"type": "http", "scheme": "bearer", "description": "JOURNEYS_ADMIN_KEY"}


async def refuse_preflight(request: web.Request) -> web.Response:
    """OPTIONS on the forget endpoint: no CORS, so no web page can send it the admin key."""
    raise Rejected(403, "admin endpoints are not for browsers")
