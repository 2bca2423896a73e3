"""Alert delivery against the real broker and a local webhook receiver that fails at first.

The receiver (aiohttp on 127.0.0.1) answers 503 or 500 to the first attempts
of every message, checks each signature, and records what it accepted. The
notifier must get every alert through once per idempotency key, in order per
alert, commit only what it delivered, and dead-letter (with the reason) what
a receiver refuses or what keeps failing past the give-up time.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from aiohttp import web
from kafka import KafkaConsumer, KafkaProducer

from journeys.producers.topics import ensure_topics
from journeys.schemas.codec import alert_json
from journeys.schemas.rows import AlertRow
from journeys.schemas.settings import Settings
from journeys.sinks.alert_webhooks import verify
from journeys.sinks.notifier import NotifierProgress, run_notifier

pytestmark = [pytest.mark.kafka, pytest.mark.integration]

SECRET = "s3cret-for-tests"
DAY = 86_400_000


@dataclass
class Receiver:
    """A webhook receiver on loopback: fails the first `fail` attempts of each key per path."""

    fail: dict[str, int]
    port: int = 0
    accepted: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    attempts: Counter[tuple[str, str]] = field(default_factory=Counter)
    bad_signatures: int = 0
    _loop: asyncio.AbstractEventLoop | None = None
    _runner: web.AppRunner | None = None
    _thread: threading.Thread | None = None

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        path, key = request.path, request.headers.get("Idempotency-Key", "")
        signature = request.headers.get("X-Journeys-Signature", "")
        stamp = request.headers.get("X-Journeys-Timestamp", "")
        if not verify(SECRET.encode(), stamp, body, signature, time.time()):
            self.bad_signatures += 1
            return web.Response(status=401)
        self.attempts[(path, key)] += 1
        if path == "/refuse":
            return web.Response(status=400, text="no thanks")
        if path == "/down" or self.attempts[(path, key)] <= self.fail.get(path, 0):
            status = 503 if self.attempts[(path, key)] % 2 else 500
            return web.Response(
                status=status, headers={"Retry-After": "0"} if status == 503 else {}
            )
        self.accepted.append((path, key, orjson.loads(body)))
        return web.json_response({"ok": True})

    def start(self) -> None:
        ready = threading.Event()

        def serve() -> None:
            self._loop = asyncio.new_event_loop()
            app = web.Application()
            app.router.add_post("/{tail:.*}", self.handle)
            self._runner = web.AppRunner(app)
            self._loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            self._loop.run_until_complete(site.start())
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            ready.set()
            self._loop.run_forever()
            self._loop.close()

        self._thread = threading.Thread(target=serve, daemon=True)
        self._thread.start()
        assert ready.wait(10)

    def stop(self) -> None:
        loop, runner = self._loop, self._runner
        assert loop is not None and runner is not None
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        assert self._thread is not None
        self._thread.join(10)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@pytest.fixture()
def receiver() -> Iterator[Callable[[dict[str, int]], Receiver]]:
    started: list[Receiver] = []

    def make(fail: dict[str, int]) -> Receiver:
        r = Receiver(fail)
        r.start()
        started.append(r)
        return r

    yield make
    for r in started:
        r.stop()


def _settings(bootstrap: str, prefix: str, routes: str, give_up: str = "30s") -> Settings:
    settings = Settings.model_validate(
        {
            "kafka_bootstrap": bootstrap,
            "topic_prefix": prefix,
            "alert_webhooks": routes,
            "alert_webhook_secret": SECRET,
            "alert_retry_max": "1s",
            "alert_give_up_after": give_up,
            "alert_allow_private": True,  # the receiver is on loopback
            "topic_partitions": 2,
        }
    )
    ensure_topics(settings, {"alerts": 2, "dead-letters": 1})
    return settings


def _publish(settings: Settings, alerts: list[AlertRow]) -> None:
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    for alert in alerts:
        producer.send(
            settings.topic("alerts"), key=alert.account_id.encode(), value=alert_json(alert)
        )
    producer.flush(timeout=30)
    producer.close()


def _run_until(
    settings: Settings, done: Callable[[], bool], timeout: float = 60.0
) -> NotifierProgress:
    """Run the notifier in a thread until `done()` holds (or time runs out), then stop it."""
    stop = threading.Event()
    result: list[NotifierProgress] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            result.append(run_notifier(settings, stop=stop, first_retry=0.05))
        except BaseException as exc:  # surfaced to the test below
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not done() and thread.is_alive():
        time.sleep(0.1)
    time.sleep(1.0)  # anything more that would arrive (there should be nothing)
    stop.set()
    thread.join(30)
    assert not errors, errors
    assert result, "the notifier did not stop"
    return result[0]


def _dead_letters(settings: Settings, at_least: int) -> list[dict[str, Any]]:
    consumer = KafkaConsumer(
        settings.topic("dead-letters"),
        bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=10_000,
    )
    found = []
    for message in consumer:
        found.append(orjson.loads(message.value))
        if len(found) >= at_least:
            break
    consumer.close()
    return found


def _alerts() -> list[AlertRow]:
    cart = (
        '{"cart_started_at":"2026-03-01T08:00:00.000Z",'
        '"last_cart_activity_at":"2026-03-01T08:05:00.000Z"}'
    )
    deal = '{"phase":"decision","open_since":"2026-03-01T08:00:00.000Z","last_activity_at":null}'
    return [
        AlertRow("al_cart1", "cart_abandoned", "acme.nl", 10 * DAY, cart, 1),
        AlertRow("al_cart1", "cart_abandoned", "acme.nl", 10 * DAY, cart, 2, resolved_at=11 * DAY),
        AlertRow("al_deal1", "deal_stalled", "erp-1", 12 * DAY, deal, 1),
        AlertRow("al_cart2", "cart_abandoned", "kwekerij.nl", 13 * DAY, cart, 1),
        AlertRow("al_cart2", "cart_abandoned", "kwekerij.nl", 13 * DAY, cart, 2, withdrawn=True),
        AlertRow("al_reorder1", "reorder_due", "erp-2", 14 * DAY, '{"median_days":21}', 1),
    ]


def test_each_alert_arrives_once_per_key_after_failed_attempts(
    kafka_bootstrap: str,
    topic_prefix: Callable[[], str],
    receiver: Callable[[dict[str, int]], Receiver],
) -> None:
    r = receiver({"/cart": 2, "/slack": 1, "/all": 3})
    routes = (
        f"cart_abandoned={r.url('/cart')},deal_stalled=slack+{r.url('/slack')},*={r.url('/all')}"
    )
    settings = _settings(kafka_bootstrap, topic_prefix(), routes)
    alerts = _alerts()
    _publish(settings, alerts)

    progress = _run_until(settings, lambda: len(r.accepted) >= len(alerts))

    keys = [key for _, key, _ in r.accepted]
    assert Counter(keys) == Counter(
        [
            "al_cart1:1:raised",
            "al_cart1:2:resolved",
            "al_deal1:1:raised",
            "al_cart2:1:raised",
            "al_cart2:2:withdrawn",
            "al_reorder1:1:raised",
        ]
    )  # every key exactly once, though each took several attempts
    assert r.bad_signatures == 0
    assert (
        r.attempts[("/cart", "al_cart1:1:raised")] == 3
        and r.attempts[("/all", "al_reorder1:1:raised")] == 4
    )
    paths = {key: path for path, key, _ in r.accepted}
    assert paths["al_deal1:1:raised"] == "/slack" and paths["al_reorder1:1:raised"] == "/all"
    assert paths["al_cart1:1:raised"] == "/cart"
    # One alert's messages arrive in topic order; the withdrawal is a correction.
    assert keys.index("al_cart1:1:raised") < keys.index("al_cart1:2:resolved")
    assert keys.index("al_cart2:1:raised") < keys.index("al_cart2:2:withdrawn")
    bodies = {key: body for _, key, body in r.accepted}
    withdrawn = bodies["al_cart2:2:withdrawn"]
    assert withdrawn["correction"] is True and withdrawn["event"] == "alert.withdrawn"
    assert withdrawn["alert"]["status"] == "withdrawn" and "Correction" in withdrawn["text"]
    assert bodies["al_cart1:1:raised"]["alert"]["alert_id"] == "al_cart1"
    assert (
        "blocks" in bodies["al_deal1:1:raised"]
        and "decision" in bodies["al_deal1:1:raised"]["text"]
    )
    assert progress.dead_letters == 0 and progress.delivered == len(alerts)

    # Offsets were committed after delivery: a restart sends nothing again, only what is new.
    extra = AlertRow("al_deal2", "deal_stalled", "erp-3", 20 * DAY, "{}", 1)
    _publish(settings, [extra])
    before = len(r.accepted)
    _run_until(settings, lambda: len(r.accepted) > before)
    assert [key for _, key, _ in r.accepted[before:]] == ["al_deal2:1:raised"]


def test_refused_and_undeliverable_alerts_go_to_dead_letters_with_the_reason(
    kafka_bootstrap: str,
    topic_prefix: Callable[[], str],
    receiver: Callable[[dict[str, int]], Receiver],
) -> None:
    r = receiver({})
    routes = f"cart_abandoned={r.url('/refuse')},deal_stalled={r.url('/down')},*={r.url('/ok')}"
    settings = _settings(kafka_bootstrap, topic_prefix(), routes, give_up="3s")
    cart, deal, other = _alerts()[0], _alerts()[2], _alerts()[5]
    _publish(settings, [cart, deal, other])

    progress = _run_until(settings, lambda: False, timeout=8)

    assert [key for _, key, _ in r.accepted] == ["al_reorder1:1:raised"]
    assert r.attempts[("/refuse", "al_cart1:1:raised")] == 1  # a 4xx is not retried
    assert r.attempts[("/down", "al_deal1:1:raised")] >= 3  # retried until the give-up time
    dead = {d["source"]: d for d in _dead_letters(settings, 2)}
    refused = dead[f"notify:{r.url('/refuse')}"]
    assert "refused alert al_cart1:1:raised" in refused["reason"] and "400" in refused["reason"]
    assert orjson.loads(refused["payload"])["alert_id"] == "al_cart1"
    down = dead[f"notify:{r.url('/down')}"]
    assert "gave up on alert al_deal1:1:raised" in down["reason"] and "attempts" in down["reason"]
    assert progress.dead_letters == 2

    # Given up is committed, not lost: a restart does not try them again.
    attempts = sum(r.attempts.values())
    _run_until(settings, lambda: False, timeout=3)
    assert sum(r.attempts.values()) == attempts
