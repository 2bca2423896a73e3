"""Where the collector puts accepted events: the port, a fake, and the Kafka adapter.

`publish` returns only once the events are durably stored (Kafka acknowledged
them); it raises `BrokerError` otherwise, and the collector answers 503.
`available` says whether the publisher believes Kafka is reachable; while it
is known to be down, `publish` fails at once instead of waiting.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Protocol

from journeys.producers.client import EventProducer
from journeys.producers.kafka import new_admin
from journeys.schemas.errors import BrokerError
from journeys.schemas.record import EventRecord
from journeys.schemas.rows import DeadLetterRow
from journeys.schemas.settings import Settings

log = logging.getLogger(__name__)


class Publisher(Protocol):
    """Durable storage for accepted events and rejected input."""

    @property
    def available(self) -> bool:
        """False while Kafka is known to be down (publish then fails at once)."""

    async def start(self) -> None:
        """Connect."""

    async def publish(
        self, records: Sequence[EventRecord], dead_letters: Sequence[DeadLetterRow]
    ) -> None:
        """Store both; raise BrokerError if that is not certain. Return only once stored."""

    async def close(self) -> None:
        """Disconnect."""


class MemoryPublisher:
    """Keeps what it was given; for unit tests. `fail` makes it act like a broker that is down."""

    def __init__(self) -> None:
        self.records: list[EventRecord] = []
        self.dead_letters: list[DeadLetterRow] = []
        self.fail = False

    @property
    def available(self) -> bool:
        """Down exactly while told to fail."""
        return not self.fail

    async def start(self) -> None:
        """Nothing to connect to."""

    async def publish(
        self, records: Sequence[EventRecord], dead_letters: Sequence[DeadLetterRow]
    ) -> None:
        """Keep the rows, or fail like an unreachable broker."""
        if self.fail:
            raise BrokerError("broker unavailable (test)")
        self.records.extend(records)
        self.dead_letters.extend(dead_letters)

    async def close(self) -> None:
        """Nothing to release."""


def _fail(group: list[_Waiting], exc: BaseException) -> None:
    for _, _, done in group:
        if not done.done():
            done.set_exception(exc)


def _retrieved(future: asyncio.Future[None]) -> None:
    """Mark a future's exception as seen (asyncio logs unseen ones)."""
    if not future.cancelled():
        future.exception()


#: One request's rows and the future its handler waits on.
_Waiting = tuple[Sequence[EventRecord], Sequence[DeadLetterRow], asyncio.Future[None]]


def _close_quietly(producer: EventProducer, flush: bool = True) -> None:
    """Close a producer without raising; with `flush` False, or when it cannot flush, what it
    still holds is dropped: those sends were answered 503 and their senders retry.

    kafka-python's `close` raises when it cannot flush and leaves the producer half open (its
    sender thread running, and `__del__` raising again when it is collected), so such a
    producer is stopped by force.
    """
    raw = getattr(producer, "_producer", None)  # the kafka-python producer, before close drops it
    if flush:
        try:
            producer.close()
            return
        except Exception as exc:
            log.info("closing a Kafka producer that cannot flush: %s", exc)
    if raw is None:
        return
    sender = getattr(raw, "_sender", None)
    if sender is not None:
        sender.force_close()  # drops the batches it holds
        sender.join(5)
    try:
        raw.close(timeout=0)
    except Exception:
        log.debug("force-closing a Kafka producer failed", exc_info=True)


def reachable(settings: Settings, timeout: float) -> bool:
    """Whether a Kafka broker at the bootstrap address answers within `timeout` seconds."""
    try:
        admin = new_admin(settings, timeout)
    except Exception:  # any failure to bootstrap means: not reachable now
        return False
    try:
        admin.close()
    except Exception:
        log.debug("closing the probe's admin client failed", exc_info=True)
    return True


class KafkaPublisher:
    """Produces to the events and dead-letter topics; returns once Kafka acknowledged.

    Group commit: requests that arrive while a send is waiting for Kafka's
    acknowledgement are sent together by the next one, so one flush
    acknowledges many requests and throughput grows with concurrency instead
    of being bound by one acknowledgement round trip per request.
    kafka-python blocks, so its calls run in the loop's executor. The
    producer connects on the first publish, after a quick probe, so the
    collector serves (and answers 503) while Kafka is down. A publish not
    acknowledged within `timeout` seconds is a BrokerError: the client
    retries, and should the first try still land, it is one event downstream
    (event ids are idempotency keys).

    Known down: after a failed or unacknowledged send (or a failed probe),
    `publish` raises BrokerError at once, and a background probe asks the
    broker every `probe_interval` seconds (each try bounded by
    `probe_timeout`) until it answers; then sends are tried again.
    """

    def __init__(
        self,
        settings: Settings,
        timeout: float = 15.0,
        probe_interval: float = 1.0,
        probe_timeout: float = 2.0,
    ) -> None:
        self._settings = settings
        self._producer = EventProducer(settings, timeout=timeout)
        self._timeout = timeout
        self._probe_interval = probe_interval
        self._probe_timeout = probe_timeout
        self._starting: asyncio.Future[None] | None = None
        self._pending: list[_Waiting] = []
        self._sender: asyncio.Task[None] | None = None
        self._down: str | None = None
        self._prober: asyncio.Task[None] | None = None

    @property
    def available(self) -> bool:
        """False while Kafka is known to be down."""
        return self._down is None

    async def start(self) -> None:
        """Nothing yet: the first publish connects."""

    def _mark_down(self, reason: str) -> None:
        if self._down is None:
            log.warning("Kafka is down (%s); answering 503 at once until it answers again", reason)
        self._down = reason
        if self._prober is None or self._prober.done():
            self._prober = asyncio.get_running_loop().create_task(self._probe())

    async def _probe(self) -> None:
        """Ask the broker until it answers, then let sends through again."""
        loop = asyncio.get_running_loop()
        while self._down is not None:
            await asyncio.sleep(self._probe_interval)
            if await loop.run_in_executor(None, reachable, self._settings, self._probe_timeout):
                log.warning("Kafka answers again at %s", self._settings.kafka_bootstrap)
                self._down = None

    def _renew(self) -> None:
        """Replace the producer after a failed send: one whose batches timed out across a broker
        restart can stay wedged behind them. The old one is closed in the background; what it
        still holds was answered 503, and its senders retry."""
        old, self._producer = self._producer, EventProducer(self._settings, timeout=self._timeout)
        if self._connected():
            asyncio.get_running_loop().run_in_executor(None, _close_quietly, old)
        self._starting = None

    async def _connect(self) -> None:
        """One connection attempt at a time; a failed one is tried again by the next group."""
        attempt = self._starting
        if attempt is None:
            loop = asyncio.get_running_loop()
            if not await loop.run_in_executor(None, reachable, self._settings, self._probe_timeout):
                raise BrokerError(f"cannot reach Kafka at {self._settings.kafka_bootstrap}")
            attempt = loop.run_in_executor(None, self._producer.start)
            self._starting = attempt
        try:
            await attempt
        except Exception:
            if self._starting is attempt:
                self._starting = None
            raise

    async def _send_group(
        self, records: list[EventRecord], dead_letters: list[DeadLetterRow]
    ) -> None:
        loop = asyncio.get_running_loop()
        await self._connect()
        sends = []
        if records:
            sends.append(loop.run_in_executor(None, self._producer.send, records))
        if dead_letters:
            sends.append(loop.run_in_executor(None, self._producer.send_dead_letters, dead_letters))
        results = await asyncio.gather(*sends, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def _drain(self) -> None:
        """Send what is pending, group by group, until nothing is."""
        while self._pending:
            group, self._pending = self._pending, []
            records = [r for rs, _, _ in group for r in rs]
            dead_letters = [d for _, ds, _ in group for d in ds]
            try:
                await self._send_group(records, dead_letters)
            except asyncio.CancelledError:
                _fail(group, BrokerError("the collector stopped before Kafka acknowledged"))
                raise
            except Exception as exc:
                self._mark_down(str(exc) or type(exc).__name__)
                self._renew()
                _fail(group, exc if isinstance(exc, BrokerError) else BrokerError(str(exc)))
            else:
                for _, _, done in group:
                    if not done.done():
                        done.set_result(None)

    async def publish(
        self, records: Sequence[EventRecord], dead_letters: Sequence[DeadLetterRow]
    ) -> None:
        """Send both and wait for the acknowledgements; BrokerError if they do not come, at once
        while Kafka is known to be down."""
        if not records and not dead_letters:
            return
        if self._down is not None:
            raise BrokerError(f"Kafka is unavailable ({self._down})")
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.add_done_callback(_retrieved)  # a request that timed out no longer awaits it
        self._pending.append((records, dead_letters, done))
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._drain())
        try:
            await asyncio.wait_for(asyncio.shield(done), self._timeout)
        except TimeoutError as exc:
            self._mark_down(f"no acknowledgement within {self._timeout:g}s")
            raise BrokerError(f"Kafka did not acknowledge within {self._timeout:g}s") from exc

    def _connected(self) -> bool:
        attempt = self._starting
        return attempt is not None and attempt.done() and attempt.exception() is None

    async def close(self) -> None:
        """Send what is pending (for at most `timeout` seconds when connected), then flush
        and disconnect; requests still waiting are answered 503. Never raises: what Kafka
        did not acknowledge by now was answered 503, and its senders retry."""
        if self._prober is not None:
            self._prober.cancel()
            await asyncio.gather(self._prober, return_exceptions=True)
        sender = self._sender
        if sender is not None and not sender.done():
            if self._connected():
                await asyncio.wait({sender}, timeout=self._timeout)
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
        pending, self._pending = self._pending, []
        _fail(pending, BrokerError("the collector stopped before Kafka acknowledged"))
        if self._connected():
            flush = self._down is None  # while Kafka is down nothing can be flushed: stop at once
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, _close_quietly, self._producer, flush)
