"""The alert notifier against hostile receivers, events and webhook URLs (issue 16).

Receivers are aiohttp servers on 127.0.0.1 in a thread of their own. Each
test is an attack that worked before: a receiver that hangs held every
route; `Retry-After: 0` made a hot loop; a 307 sent the signed body to
another host; `<!channel>` in an account id pinged a Slack channel; webhook
URLs reached loopback, link-local, private and metadata addresses.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from aiokafka import TopicPartition
from click.testing import CliRunner
from kafka import KafkaConsumer, KafkaProducer

from journeys.cli import main as cli
from journeys.kafka_broker import broker_running, ensure_broker, stop_broker
from journeys.producers.topics import ensure_topics
from journeys.schemas.codec import alert_json
from journeys.schemas.errors import ConfigError
from journeys.schemas.rows import AlertRow
from journeys.schemas.settings import Settings
from journeys.sinks.alert_webhooks import Alert, Target, message
from journeys.sinks.notifier import Ledger, Notifier, NotifierProgress, run_notifier
from journeys.sinks.webhook_delivery import Courier, GiveUp, open_session

DAY = 86_400_000
CART = '{"cart_started_at":"2026-03-01T08:00:00.000Z","last_cart_activity_at":"2026-03-01T08:05Z"}'


class Receiver:
    """A webhook receiver on loopback whose behaviour depends on the path."""

    def __init__(self, redirect_to: str = "") -> None:
        self.redirect_to = redirect_to
        self.hits: list[tuple[str, str, float]] = []
        self.accepted: list[tuple[str, str]] = []
        self.hanging = True
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._release: asyncio.Event | None = None
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._ready = threading.Event()

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        self.hits.append((request.path, request.headers.get("Idempotency-Key", ""), time.time()))
        if request.path == "/hang" and self.hanging:
            assert self._release is not None
            await self._release.wait()
            return web.Response(status=503)
        if request.path in ("/busy429", "/busy503"):
            return web.Response(status=int(request.path[-3:]), headers={"Retry-After": "0"})
        if request.path == "/redirect":
            return web.Response(status=307, headers={"Location": self.redirect_to})
        self.accepted.append((request.path, request.headers.get("Idempotency-Key", "")))
        return web.json_response({"ok": True})

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._release = asyncio.Event()
        app = web.Application()
        app.router.add_post("/{tail:.*}", self.handle)
        self._runner = web.AppRunner(app, shutdown_timeout=1.0)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._ready.set()
        self._loop.run_forever()
        self._loop.close()

    def start(self) -> Receiver:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def release(self) -> None:
        """Hanging requests end (503) and later ones to /hang succeed."""
        self.hanging = False
        assert self._release is not None
        self._loop.call_soon_threadsafe(self._release.set)

    def stop(self) -> None:
        self.release()
        assert self._runner is not None
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def count(self, path: str) -> int:
        return sum(1 for p, _, _ in self.hits if p == path)


@pytest.fixture()
def receivers() -> Iterator[Callable[..., Receiver]]:
    started: list[Receiver] = []

    def make(redirect_to: str = "") -> Receiver:
        started.append(Receiver(redirect_to).start())
        return started[-1]

    yield make
    for r in started:
        r.stop()


@pytest.fixture(scope="module")
def bootstrap() -> Iterator[str]:
    """The running broker (started for this module if none answers)."""
    settings = Settings()
    started = not broker_running(settings)
    yield ensure_broker(settings)
    if started:
        stop_broker(settings)


def _settings(bootstrap: str, routes: str, give_up: str = "60s", **more: Any) -> Settings:
    import uuid

    settings = Settings.model_validate(
        {
            "kafka_bootstrap": bootstrap,
            "topic_prefix": f"t{uuid.uuid4().hex[:10]}.",
            "alert_webhooks": routes,
            "alert_retry_max": "5s",
            "alert_give_up_after": give_up,
            "alert_allow_private": True,  # the receivers are on loopback
            "topic_partitions": 1,
            **more,
        }
    )
    ensure_topics(settings, {"alerts": 1, "dead-letters": 1})
    return settings


def _publish(settings: Settings, *alerts: AlertRow) -> None:
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    for alert in alerts:
        producer.send(settings.topic("alerts"), value=alert_json(alert))
    producer.flush(timeout=30)
    producer.close()


@contextmanager
def _running(settings: Settings) -> Iterator[NotifierProgress]:
    """The notifier in a thread for the `with` block; its progress, filled in as it goes."""
    stop = threading.Event()
    out: list[NotifierProgress] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            out.append(run_notifier(settings, stop=stop, first_retry=0.05))
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    progress = NotifierProgress()
    try:
        yield progress
    finally:
        stop.set()
        thread.join(30)
    assert not errors, errors
    assert out, "the notifier did not stop"
    progress.__dict__.update(out[0].__dict__)


def _until(done: Callable[[], bool], timeout: float) -> float:
    """Seconds until `done()` held (inf if it never did within `timeout`)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if done():
            return time.monotonic() - started
        time.sleep(0.05)
    return float("inf")


def _alert(alert_id: str, kind: str = "cart_abandoned", account: str = "acme.nl") -> AlertRow:
    return AlertRow(alert_id, kind, account, 10 * DAY, CART, 1)


@pytest.mark.kafka
@pytest.mark.integration
def test_a_hanging_receiver_delays_only_its_own_route(
    bootstrap: str, receivers: Callable[..., Receiver]
) -> None:
    r = receivers()
    settings = _settings(bootstrap, f"cart_abandoned={r.url('/hang')},*={r.url('/ok')}")
    with _running(settings):
        _publish(settings, _alert("al_hang"))
        assert _until(lambda: r.count("/hang") >= 1, 30) < 30
        _publish(settings, _alert("al_ok", "deal_stalled"))
        took = _until(lambda: r.count("/ok") >= 1, 8)
    # Before: the second alert waited for the hanging route to give up (the give-up time).
    assert took < 5, f"the healthy route waited {took:.1f}s for the hanging one"

    # At least once: the hanging alert was not committed, so the next run delivers it.
    r.release()
    with _running(settings):
        assert _until(lambda: ("/hang", "al_hang:1:raised") in r.accepted, 20) < 20
    assert ("/ok", "al_ok:1:raised") in r.accepted


def test_commits_stop_at_the_first_alert_a_target_has_not_finished() -> None:
    """The at-least-once rule with one queue per target: what is committed is done everywhere."""
    tp = TopicPartition("journeys.alerts", 0)
    ledger = Ledger()
    slow, fast = ledger.add(tp, 5, 2), ledger.add(tp, 6, 1)
    ledger.add(tp, 7, 0)  # no route: done at once
    assert ledger.positions() == {tp: 5} and ledger.pending == 2
    ledger.done(fast)
    ledger.done(slow)
    assert ledger.positions() == {tp: 5}  # offset 5 still has a target to go
    ledger.done(slow)
    assert ledger.positions() == {tp: 8} and ledger.pending == 0
    # A partition given away and back: a late finish from before does not count.
    old = ledger.add(tp, 8, 1)
    ledger.forget([tp])
    ledger.add(tp, 8, 1)
    ledger.done(old)
    assert ledger.positions() == {tp: 8} and ledger.pending == 1


@pytest.mark.kafka
@pytest.mark.integration
def test_retry_after_zero_does_not_make_a_hot_loop(
    bootstrap: str, receivers: Callable[..., Receiver]
) -> None:
    r = receivers()
    settings = _settings(
        bootstrap, f"cart_abandoned={r.url('/busy429')},deal_stalled={r.url('/busy503')}"
    )
    with _running(settings):
        _publish(settings, _alert("al_429"), _alert("al_503", "deal_stalled"))
        _until(lambda: r.count("/busy429") >= 1 and r.count("/busy503") >= 1, 30)
        time.sleep(4)
    # Before: tens of thousands of attempts in seconds. Now at least 1 s apart.
    assert 1 <= r.count("/busy429") <= 6 and 1 <= r.count("/busy503") <= 6, Counter(
        p for p, _, _ in r.hits
    )


def _dead_letters(settings: Settings, at_least: int) -> list[dict[str, Any]]:
    consumer = KafkaConsumer(
        settings.topic("dead-letters"),
        bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=10_000,
    )
    found = [orjson.loads(m.value) for _, m in zip(range(at_least), consumer, strict=False)]
    consumer.close()
    return found


@pytest.mark.kafka
@pytest.mark.integration
def test_a_redirect_is_a_failed_delivery_and_is_not_followed(
    bootstrap: str, receivers: Callable[..., Receiver]
) -> None:
    elsewhere = receivers()
    r = receivers(redirect_to=elsewhere.url("/steal?token=x"))
    settings = _settings(
        bootstrap, f"*={r.url('/redirect')}", alert_webhook_secret="signing-key-for-tests"
    )
    with _running(settings) as progress:
        _publish(settings, _alert("al_redirect"))
        _until(lambda: r.count("/redirect") >= 1, 30)
        time.sleep(1)
    assert r.count("/redirect") == 1 and elsewhere.hits == []  # the signed body stayed home
    assert progress.dead_letters == 1
    (dead,) = _dead_letters(settings, 1)
    assert "redirect" in dead["reason"] and "307" in dead["reason"]
    assert elsewhere.url("/steal") in dead["reason"] and "token" not in dead["reason"]


def test_slack_messages_show_event_values_as_text() -> None:
    details = '{"note":"<https://evil.example|click here> & <@U123>"}'
    alert = Alert.parse(
        alert_json(AlertRow("al_<!here>", "reorder_due", "<!channel>", 10 * DAY, details, 1))
    )
    body = orjson.loads(message(alert, Target("https://hooks.slack.com/x", "slack")))
    shown = [body["text"], body["blocks"][0]["text"]["text"], body["blocks"][1]["elements"][0]]
    text = orjson.dumps(shown).decode()
    assert "<" not in text and ">" not in text  # no mention, no link, no special command
    assert "&lt;!channel&gt;" in body["text"] and "&lt;https://evil.example|click here&gt;" in text
    assert "&amp; &lt;@U123&gt;" in body["text"] and "&lt;!here&gt;" in text
    # Generic JSON receivers get the values as they are.
    plain = orjson.loads(message(alert, Target("https://crm.example/x")))
    assert plain["alert"]["account_id"] == "<!channel>" and "<!channel>" in plain["text"]


REFUSED = [
    "http://127.0.0.1:8124/x",
    "http://localhost/x",
    "http://app.localhost/x",
    "http://[::1]/x",
    "http://127.1/x",
    "http://2130706433/x",
    "http://[::ffff:127.0.0.1]/x",
    "http://0.0.0.0/x",
    "http://169.254.10.1/x",
    "http://[fe80::1]/x",
    "http://10.0.0.5/x",
    "http://172.16.3.4/x",
    "http://192.168.1.1/x",
    "http://[fc00::1]/x",
    "http://169.254.169.254/latest/meta-data/",
    "http://metadata.google.internal/computeMetadata/v1/",
]


@pytest.mark.parametrize("url", REFUSED)
def test_webhooks_to_non_public_addresses_are_refused_at_start(url: str) -> None:
    settings = Settings(alert_webhooks=f"*={url}")
    with pytest.raises(ConfigError, match="refused"):
        Notifier(settings)


@pytest.mark.parametrize("url", ["file:///etc/passwd", "gopher://evil/x", "ftp://x/y"])
def test_only_http_schemes(url: str) -> None:
    with pytest.raises(ConfigError, match="not an http"):
        Notifier(Settings(alert_webhooks=f"*={url}", alert_allow_private=True))


def test_the_setting_allows_private_addresses_but_never_metadata() -> None:
    assert Notifier(Settings(alert_webhooks="*=http://127.0.0.1:9/x", alert_allow_private=True))
    for url in ("http://169.254.169.254/x", "http://metadata.google.internal/x"):
        with pytest.raises(ConfigError, match="metadata"):
            Notifier(Settings(alert_webhooks=f"*={url}", alert_allow_private=True))


def test_journeys_notify_refuses_a_loopback_webhook_with_a_clear_error() -> None:
    result = CliRunner().invoke(
        cli, ["notify", "--alert-webhooks", "*=http://127.0.0.1:8124/x"], env={}
    )
    assert result.exit_code == 2
    assert "loopback" in result.output and "JOURNEYS_ALERT_ALLOW_PRIVATE" in result.output


class _Rebinding(AbstractResolver):
    """DNS that says `rebind.example` is 127.0.0.1 (as a hostile name server would)."""

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            {
                "hostname": host,
                "host": "127.0.0.1",
                "port": port,
                "family": socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
        ]

    async def close(self) -> None:
        return None


async def _deliver_via_rebinding(port: int, allow_private: bool) -> str | None:
    """Deliver to http://rebind.example:<port>/ok; the give-up reason, or None if delivered."""
    alert = Alert.parse(alert_json(_alert("al_rebind")))
    async with open_session(allow_private, resolver=_Rebinding()) as http:
        courier = Courier(http, b"k", 1.0, 5.0, NotifierProgress(), first_retry=0.05)
        try:
            await courier.deliver(alert, Target(f"http://rebind.example:{port}/ok"))
        except GiveUp as exc:
            return str(exc)
    return None


def test_a_name_resolving_to_loopback_is_refused_when_connecting(
    receivers: Callable[..., Receiver],
) -> None:
    r = receivers()
    assert Notifier(Settings(alert_webhooks=f"*=http://rebind.example:{r.port}/ok"))  # passes start
    reason = asyncio.run(_deliver_via_rebinding(r.port, allow_private=False))
    assert reason is not None and "resolves to 127.0.0.1, a loopback address" in reason
    assert r.hits == []  # nothing was sent
    # The same resolver, allowed: the request does reach the receiver (the check is what refused).
    assert asyncio.run(_deliver_via_rebinding(r.port, allow_private=True)) is None
    assert r.count("/ok") == 1


def test_courier_never_follows_redirects(receivers: Callable[..., Receiver]) -> None:
    elsewhere = receivers()
    r = receivers(redirect_to=elsewhere.url("/steal"))

    async def deliver() -> str:
        async with aiohttp.ClientSession() as plain:
            # The attack in plain aiohttp terms: its default follows the 307 with the body.
            async with plain.post(r.url("/redirect"), data=b"{}") as answer:
                assert answer.status == 200 and elsewhere.count("/steal") == 1
        async with open_session(allow_private=True) as http:
            courier = Courier(http, b"k", 1.0, 5.0, NotifierProgress())
            with pytest.raises(GiveUp) as caught:
                await courier.deliver(
                    Alert.parse(alert_json(_alert("al_r"))), Target(r.url("/redirect"))
                )
            return str(caught.value)

    reason = asyncio.run(deliver())
    assert "redirects are not followed" in reason and elsewhere.count("/steal") == 1
