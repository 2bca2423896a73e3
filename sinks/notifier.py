"""The alert notifier: `journeys.alerts` to HTTP webhooks, at least once.

A process of its own (`journeys notify`), or started by `journeys run`
through `run_notifier(settings)`. It reads the alerts topic in a consumer
group and:

1. puts every alert on the queue of each target its kind is routed to. Each
   target has its own queue (`RouteQueue`), so a target that hangs or keeps
   failing delays only its own deliveries; in a queue one alert's messages
   go in topic order, different alerts at once (up to CONCURRENCY);
2. delivers with retries (`sinks.webhook_delivery`), and dead-letters what
   a target refuses, redirects, may not reach, or fails past
   `JOURNEYS_ALERT_GIVE_UP_AFTER` (Kafka acknowledges the dead letter);
3. commits a partition up to its first message that some target has not
   yet delivered or dead-lettered (`Ledger`): what is committed is done for
   every target, and a crash sends again everything after it;
4. holds at most MAX_PENDING messages in flight: beyond that it pauses its
   partitions (and stays in the group) until the targets catch up.

Receivers see an alert more than once only with the same `Idempotency-Key`,
and drop repeats.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import signal
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from journeys.producers.kafka import aio_consumer_options, aio_producer_options, kafka_errors
from journeys.schemas.codec import dead_letter_json
from journeys.schemas.errors import BrokerError, ConfigError
from journeys.schemas.rows import DeadLetterRow
from journeys.schemas.settings import Settings
from journeys.sinks.alert_webhooks import Alert, Routes, Target, check_routes, parse_routes
from journeys.sinks.webhook_delivery import Courier, GiveUp, NotifierProgress, open_session

__all__ = ["GiveUp", "Ledger", "Notifier", "NotifierProgress", "RouteQueue", "run_notifier"]

log = logging.getLogger(__name__)

POLL_RECORDS = 500
#: Deliveries in flight per target (different alerts).
CONCURRENCY = 16
#: Alert messages read but not yet done for every target; more pauses reading.
MAX_PENDING = 2000


@dataclass(eq=False)
class Slot:
    """One alert message in flight: where it is and how many targets still have it."""

    tp: TopicPartition
    offset: int
    left: int


class Ledger:
    """Messages in flight per partition, and how far each partition may be committed.

    A partition may be committed up to (not including) its first message that
    is not yet done for every target; with none in flight, up to after the
    last one read."""

    def __init__(self) -> None:
        self._open: dict[TopicPartition, dict[int, Slot]] = {}
        self._next: dict[TopicPartition, int] = {}
        self._first: dict[TopicPartition, int] = {}

    def add(self, tp: TopicPartition, offset: int, targets: int) -> Slot:
        """Record a message read, going to `targets` targets (0: already done)."""
        self._first.setdefault(tp, offset)
        self._next[tp] = offset + 1
        slot = Slot(tp, offset, targets)
        if targets:
            self._open.setdefault(tp, {})[offset] = slot
        return slot

    def done(self, slot: Slot) -> None:
        """One target delivered or dead-lettered the message."""
        slot.left -= 1
        held = self._open.get(slot.tp)
        if slot.left <= 0 and held is not None and held.get(slot.offset) is slot:
            del held[slot.offset]

    def positions(self) -> dict[TopicPartition, int]:
        """The offset each partition may be committed at."""
        return {tp: next(iter(self._open.get(tp, {})), end) for tp, end in self._next.items()}

    def forget(self, tps: Iterable[TopicPartition]) -> None:
        """Partitions no longer ours: their messages in flight no longer count."""
        for tp in tps:
            self._open.pop(tp, None)
            self._next.pop(tp, None)
            self._first.pop(tp, None)

    def first(self, tp: TopicPartition) -> int:
        """The first offset read from a partition (since it became ours)."""
        return self._first.get(tp, 0)

    @property
    def pending(self) -> int:
        """Messages not yet done for every target."""
        return sum(len(held) for held in self._open.values())


@dataclass(frozen=True)
class Delivery:
    """One alert message for one target's queue."""

    alert: Alert
    raw: bytes
    slot: Slot


class RouteQueue:
    """One target's deliveries: a queue of its own, so a slow target delays only itself."""

    def __init__(
        self,
        target: Target,
        send: Callable[[Target, Delivery], Awaitable[None]],
        on_error: Callable[[BaseException], None],
    ) -> None:
        self.target = target
        self._send = send
        self._on_error = on_error
        self._queue: asyncio.Queue[Delivery] = asyncio.Queue()
        self._slots = asyncio.Semaphore(CONCURRENCY)
        self._last: dict[str, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def put(self, delivery: Delivery) -> None:
        """Queue a delivery (never blocks; the notifier bounds what is in flight)."""
        self._queue.put_nowait(delivery)

    async def run(self) -> None:
        """Until cancelled: start each delivery once the previous one of its alert is done."""
        try:
            while True:
                delivery = await self._queue.get()
                await self._slots.acquire()
                key = str(delivery.alert.body["alert_id"])
                task = asyncio.create_task(self._after(self._last.get(key), delivery))
                self._last[key] = task
                self._tasks.add(task)
                task.add_done_callback(functools.partial(self._finished, key))
        finally:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _after(self, previous: asyncio.Task[None] | None, delivery: Delivery) -> None:
        try:
            if previous is not None:
                await asyncio.wait({previous})
            await self._send(self.target, delivery)
        finally:
            self._slots.release()

    def _finished(self, key: str, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if self._last.get(key) is task:
            del self._last[key]
        if not task.cancelled() and task.exception() is not None:
            self._on_error(task.exception())  # type: ignore[arg-type]


class Notifier:
    """Consume alerts, deliver them per target, dead-letter what cannot be delivered, commit."""

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
        check_routes(self.routes, settings.alert_allow_private)
        secret = settings.alert_webhook_secret
        self._secret = secret.get_secret_value().encode() if secret else None
        self._first_retry = first_retry
        self._from_beginning = from_beginning
        self._clock = clock
        self._stop = asyncio.Event()
        self._ledger = Ledger()
        self._committed: dict[TopicPartition, int] = {}
        self._failure: BaseException | None = None
        self.progress = NotifierProgress()

    def stop(self) -> None:
        """Return soon: what is done is committed, what is not is sent again by the next run.

        Call it from the notifier's event loop (signal handlers installed by
        `run_notifier` do)."""
        self._stop.set()

    async def run(self) -> None:
        """Until `stop()`: poll, queue per target, commit what every target is done with."""
        if not self._secret:
            log.warning("JOURNEYS_ALERT_WEBHOOK_SECRET is not set: webhook deliveries are unsigned")
        settings = self._settings
        consumer = AIOKafkaConsumer(
            **{
                **aio_consumer_options(settings, "journeys-notify"),
                "auto_offset_reset": "earliest" if self._from_beginning else "latest",
            },
        )
        producer = AIOKafkaProducer(**aio_producer_options(settings))
        try:
            with kafka_errors(settings.kafka_bootstrap, "starting the alert notifier"):
                await consumer.start()
                await producer.start()
                consumer.subscribe([settings.topic("alerts")], listener=_Rebalance(self, consumer))
        except BrokerError:
            await _quietly(consumer.stop(), producer.stop())
            raise
        try:
            async with open_session(settings.alert_allow_private) as http:
                courier = Courier(
                    http,
                    self._secret,
                    settings.alert_retry_max / 1000,
                    settings.alert_give_up_after / 1000,
                    self.progress,
                    self._first_retry,
                    self._clock,
                )
                await self._deliver_until_stopped(consumer, producer, courier)
        finally:
            await _quietly(consumer.stop(), producer.stop())

    async def _deliver_until_stopped(
        self, consumer: AIOKafkaConsumer, producer: AIOKafkaProducer, courier: Courier
    ) -> None:
        send = functools.partial(self._send, courier, producer)
        queues = {
            target: RouteQueue(target, send, self._fail)
            for targets in self.routes.by_kind.values()
            for target in targets
        }
        workers = [asyncio.create_task(queue.run()) for queue in queues.values()]
        try:
            while not self._stop.is_set():
                if self._failure is not None:
                    raise self._failure  # a dead letter Kafka did not take stops the notifier
                _throttle(consumer, full=self._ledger.pending >= MAX_PENDING)
                polled = await consumer.getmany(timeout_ms=300, max_records=POLL_RECORDS)
                for tp in sorted(polled, key=lambda t: (t.topic, t.partition)):
                    for record in polled[tp]:
                        await self._dispatch(tp, record, producer, queues)
                await self._commit(consumer)
        finally:
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            with contextlib.suppress(KafkaError, BrokerError):
                await self._commit(consumer)

    def _fail(self, exc: BaseException) -> None:
        if self._failure is None:
            self._failure = exc

    async def _dispatch(
        self,
        tp: TopicPartition,
        record: Any,
        producer: AIOKafkaProducer,
        queues: dict[Target, RouteQueue],
    ) -> None:
        """Queue one message for each of its targets (or dead-letter/skip it at once)."""
        raw = bytes(record.value or b"")
        try:
            alert = Alert.parse(raw)
        except ValueError as exc:
            await self._dead_letter(producer, raw, f"alert message unreadable: {exc}", "notify")
            self._ledger.add(tp, record.offset, 0)
            return
        targets = self.routes.targets(alert.kind)
        slot = self._ledger.add(tp, record.offset, len(targets))
        if not targets:
            self.progress.skipped += 1  # no route for this kind and no `*`: by configuration
        for target in targets:
            queues[target].put(Delivery(alert, raw, slot))

    async def _send(
        self, courier: Courier, producer: AIOKafkaProducer, target: Target, delivery: Delivery
    ) -> None:
        """Deliver to one target, or dead-letter it there; then it is done for that target."""
        try:
            await courier.deliver(delivery.alert, target)
        except GiveUp as exc:
            await self._dead_letter(producer, delivery.raw, str(exc), f"notify:{target.safe_url}")
        self._ledger.done(delivery.slot)

    async def _commit(self, consumer: AIOKafkaConsumer) -> None:
        """Commit every partition as far as all its targets are done."""
        moved = {
            tp: position
            for tp, position in self._ledger.positions().items()
            if position > self._committed.get(tp, -1)
        }
        if not moved:
            return
        with kafka_errors(self._settings.kafka_bootstrap, "committing delivered alerts"):
            await consumer.commit(moved)
        for tp, position in moved.items():
            self.progress.committed += position - self._committed.get(tp, self._ledger.first(tp))
            self._committed[tp] = position

    def _revoked(self, revoked: Iterable[TopicPartition]) -> None:
        self._ledger.forget(revoked)
        for tp in revoked:
            self._committed.pop(tp, None)

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


class _Rebalance(ConsumerRebalanceListener):
    """Before partitions go to another notifier: commit what is done, forget the rest."""

    def __init__(self, notifier: Notifier, consumer: AIOKafkaConsumer) -> None:
        self._notifier = notifier
        self._consumer = consumer

    async def on_partitions_revoked(self, revoked: Any) -> None:
        """Commit what every target is done with; the new owner sends the rest again."""
        try:
            await self._notifier._commit(self._consumer)
        except (KafkaError, BrokerError) as exc:
            log.warning("could not commit delivered alerts before a rebalance: %s", exc)
        self._notifier._revoked(list(revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        """Nothing to do: reading starts at the group's committed offsets."""


def _throttle(consumer: AIOKafkaConsumer, full: bool) -> None:
    """Pause reading while too much is in flight; resume when there is room."""
    if full:
        consumer.pause(*consumer.assignment())
    elif consumer.paused():
        consumer.resume(*consumer.paused())


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
