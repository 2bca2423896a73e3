"""The alert notifier: `journeys.alerts` to HTTP webhooks, at least once.

A process of its own (`journeys notify`), or started by `journeys run`
through `run_notifier(settings)`. It reads the alerts topic in a consumer
group and, per polled batch:

1. sends every alert to the targets its kind is routed to, each alert's
   messages in topic order, different alerts concurrently;
2. retries a target that fails (connection errors, timeouts, 408, 425, 429,
   5xx) with capped exponential backoff, honouring `Retry-After`;
3. gives up on a target only when it refuses the message (any other 4xx) or
   has failed for `JOURNEYS_ALERT_GIVE_UP_AFTER`: then the alert goes to the
   dead-letters topic with the reason, and the sink stores it;
4. commits the batch's offsets only once every message was delivered or
   dead-lettered (and Kafka acknowledged the dead letters).

A crash before the commit sends the batch again: receivers see an alert
more than once only with the same `Idempotency-Key`, and drop repeats.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from journeys.producers.kafka import aio_consumer_options, aio_producer_options, kafka_errors
from journeys.schemas.codec import dead_letter_json
from journeys.schemas.errors import BrokerError, ConfigError
from journeys.schemas.rows import DeadLetterRow
from journeys.schemas.settings import Settings
from journeys.sinks.alert_webhooks import (
    Alert,
    Routes,
    Target,
    backoff,
    headers,
    message,
    parse_routes,
    retryable,
)

log = logging.getLogger(__name__)

POLL_RECORDS = 500
CONCURRENCY = 16
REQUEST_TIMEOUT = 10.0


@dataclass
class NotifierProgress:
    """What the notifier has done so far (for tests, logs and metrics)."""

    delivered: int = 0
    attempts: int = 0
    dead_letters: int = 0
    committed: int = 0
    skipped: int = 0
    last: dict[str, str] = field(default_factory=dict)


class GiveUp(Exception):
    """A target that will not take this message; the reason goes to the dead letter."""


class Notifier:
    """Consume alerts, deliver them, dead-letter what cannot be delivered, commit."""

    def __init__(
        self,
        settings: Settings,
        routes: Routes | None = None,
        first_retry: float = 1.0,
        from_beginning: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self.routes = routes if routes is not None else parse_routes(settings.alert_webhooks)
        if not self.routes:
            raise ConfigError(
                "no alert webhooks: set JOURNEYS_ALERT_WEBHOOKS (e.g. *=https://ops.example/hook)"
            )
        secret = settings.alert_webhook_secret
        self._secret = secret.get_secret_value().encode() if secret else None
        self._first_retry = first_retry
        self._cap = settings.alert_retry_max / 1000
        self._give_up_after = settings.alert_give_up_after / 1000
        self._from_beginning = from_beginning
        self._clock = clock
        self._stop = asyncio.Event()
        self.progress = NotifierProgress()

    def stop(self) -> None:
        """Return soon: a batch not yet fully delivered is left uncommitted, to be sent again.

        Call it from the notifier's event loop (signal handlers installed by
        `run_notifier` do)."""
        self._stop.set()

    async def run(self) -> None:
        """Until `stop()`: poll, deliver, commit."""
        if not self._secret:
            log.warning("JOURNEYS_ALERT_WEBHOOK_SECRET is not set: webhook deliveries are unsigned")
        settings = self._settings
        consumer = AIOKafkaConsumer(
            settings.topic("alerts"),
            **{
                **aio_consumer_options(settings, "journeys-notify"),
                "auto_offset_reset": "earliest" if self._from_beginning else "latest",
                # A batch may retry for the give-up time: stay in the group meanwhile.
                "max_poll_interval_ms": int((self._give_up_after + 120) * 1000),
            },
        )
        producer = AIOKafkaProducer(**aio_producer_options(settings))
        try:
            with kafka_errors(settings.kafka_bootstrap, "starting the alert notifier"):
                await consumer.start()
                await producer.start()
        except BrokerError:
            await _quietly(consumer.stop(), producer.stop())
            raise
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
        try:
            async with aiohttp.ClientSession(timeout=timeout) as http:
                while not self._stop.is_set():
                    polled = await consumer.getmany(timeout_ms=300, max_records=POLL_RECORDS)
                    if not polled or not await self._until_stopped(
                        self._batch(polled, http, producer)
                    ):
                        continue
                    await consumer.commit(
                        {tp: records[-1].offset + 1 for tp, records in polled.items()}
                    )
                    self.progress.committed += sum(len(r) for r in polled.values())
        finally:
            await _quietly(consumer.stop(), producer.stop())

    async def _until_stopped(self, work: Any) -> bool:
        """Run `work`; False (and `work` cancelled) if `stop()` came first."""
        task = asyncio.ensure_future(work)
        stopped = asyncio.ensure_future(self._stop.wait())
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if task.done():
            task.result()  # delivery errors other than give-ups stop the notifier
            return True
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return False

    async def _batch(
        self,
        polled: dict[TopicPartition, list[Any]],
        http: aiohttp.ClientSession,
        producer: AIOKafkaProducer,
    ) -> None:
        """Deliver one poll's messages: one alert's in order, different alerts at once."""
        chains: dict[str, list[bytes]] = {}
        for tp in sorted(polled, key=lambda t: (t.topic, t.partition)):
            for record in polled[tp]:
                raw = bytes(record.value or b"")
                try:
                    alert_id = str(Alert.parse(raw).body["alert_id"])
                except ValueError:
                    alert_id = f"unreadable:{tp.partition}:{record.offset}"
                chains.setdefault(alert_id, []).append(raw)
        limit = asyncio.Semaphore(CONCURRENCY)

        async def chain(messages: list[bytes]) -> None:
            async with limit:
                for raw in messages:
                    await self._one(raw, http, producer)

        await asyncio.gather(*(chain(messages) for messages in chains.values()))

    async def _one(
        self, raw: bytes, http: aiohttp.ClientSession, producer: AIOKafkaProducer
    ) -> None:
        try:
            alert = Alert.parse(raw)
        except ValueError as exc:
            await self._dead_letter(producer, raw, f"alert message unreadable: {exc}", "notify")
            return
        targets = self.routes.targets(alert.kind)
        if not targets:
            self.progress.skipped += 1  # no route for this kind and no `*`: by configuration
            return
        results = await asyncio.gather(
            *(self._deliver(alert, target, http) for target in targets), return_exceptions=True
        )
        for target, result in zip(targets, results, strict=True):
            if isinstance(result, GiveUp):
                await self._dead_letter(producer, raw, str(result), f"notify:{target.safe_url}")
            elif isinstance(result, BaseException):
                raise result

    async def _deliver(self, alert: Alert, target: Target, http: aiohttp.ClientSession) -> None:
        """Send until the target takes it; `GiveUp` when it refuses it or time runs out."""
        body = message(alert, target)
        started = self._clock()
        attempt = 0
        while True:
            attempt += 1
            self.progress.attempts += 1
            wait: float | None = None
            try:
                sent = headers(alert, body, int(self._clock()), attempt, self._secret)
                async with http.post(target.url, data=body, headers=sent) as answer:
                    await answer.read()
                    if 200 <= answer.status < 300:
                        self.progress.delivered += 1
                        self.progress.last[alert.key] = target.safe_url
                        return
                    problem = f"answered {answer.status} {answer.reason or ''}".strip()
                    if not retryable(answer.status):
                        raise GiveUp(
                            f"webhook {target.safe_url} refused alert {alert.key}: {problem}"
                        )
                    wait = _retry_after(answer.headers.get("Retry-After"))
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                problem = f"{type(exc).__name__}: {exc}".rstrip(": ")
            elapsed = self._clock() - started
            delay = (
                min(self._cap, wait)
                if wait is not None
                else backoff(attempt, self._first_retry, self._cap)
            )
            if elapsed + delay > self._give_up_after:
                raise GiveUp(
                    f"webhook {target.safe_url} gave up on alert {alert.key} after {attempt} "
                    f"attempts over {elapsed:.0f}s: {problem}"
                )
            log.warning(
                "alert %s to %s: %s (attempt %d); retrying in %.1fs",
                alert.key,
                target.safe_url,
                problem,
                attempt,
                delay,
            )
            await asyncio.sleep(delay)

    async def _dead_letter(
        self, producer: AIOKafkaProducer, raw: bytes, reason: str, source: str
    ) -> None:
        """Publish the alert with the reason to the dead letters and wait for Kafka's ack."""
        # One dead letter per alert version and target: the id covers both.
        keyed = DeadLetterRow.of(
            source.encode() + b"\n" + raw, reason, source, int(self._clock() * 1000)
        )
        row = dataclasses.replace(keyed, payload=raw)
        log.error("dead letter: %s", reason)
        with kafka_errors(self._settings.kafka_bootstrap, f"sending a dead letter ({reason})"):
            await producer.send_and_wait(
                self._settings.topic("dead-letters"), dead_letter_json(row)
            )
        self.progress.dead_letters += 1


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: fall back to the backoff


async def _quietly(*stops: Any) -> None:
    for stop in stops:
        with contextlib.suppress(Exception):
            await stop


def run_notifier(
    settings: Settings, stop: threading.Event | None = None, first_retry: float = 1.0
) -> NotifierProgress:
    """Run the notifier in the foreground until SIGINT/SIGTERM (main thread) or `stop` is set.

    What `journeys notify` runs, and what `journeys run` can start in a thread
    of its own (passing `stop`) or as a child process (`journeys notify`)."""
    notifier = Notifier(settings, first_retry=first_retry)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(signum, notifier.stop)
        task = asyncio.create_task(notifier.run())
        while stop is not None and not stop.is_set() and not task.done():
            await asyncio.sleep(0.2)
        if stop is not None and stop.is_set():
            notifier.stop()
        await task

    asyncio.run(main())
    return notifier.progress
