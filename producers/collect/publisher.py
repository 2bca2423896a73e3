"""Where the collector puts accepted events: the port, a fake, and the Kafka adapter.

`publish` returns only once the events are durably stored (Kafka acknowledged
them); it raises `BrokerError` otherwise, and the collector answers 503.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Protocol

from journeys.producers.client import EventProducer
from journeys.schemas.errors import BrokerError
from journeys.schemas.record import EventRecord
from journeys.schemas.rows import DeadLetterRow
from journeys.schemas.settings import Settings


class Publisher(Protocol):
    """Durable storage for accepted events and rejected input."""

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


class KafkaPublisher:
    """Produces to the events and dead-letter topics; returns once Kafka acknowledged.

    Group commit: requests that arrive while a send is waiting for Kafka's
    acknowledgement are sent together by the next one, so one flush
    acknowledges many requests and throughput grows with concurrency instead
    of being bound by one acknowledgement round trip per request.
    kafka-python blocks, so its calls run in the loop's executor. The
    producer connects on the first publish, so the collector serves (and
    answers 503) while Kafka is down. A publish not acknowledged within
    `timeout` seconds is a BrokerError: the client retries, and should the
    first try still land, it is one event downstream (event ids are
    idempotency keys).
    """

    def __init__(self, settings: Settings, timeout: float = 15.0) -> None:
        self._producer = EventProducer(settings, timeout=timeout)
        self._timeout = timeout
        self._starting: asyncio.Future[None] | None = None
        self._pending: list[_Waiting] = []
        self._sender: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Nothing yet: the first publish connects."""

    async def _connect(self) -> None:
        """One connection attempt at a time; a failed one is tried again by the next group."""
        attempt = self._starting
        if attempt is None:
            attempt = asyncio.get_running_loop().run_in_executor(None, self._producer.start)
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
                _fail(group, exc)
            else:
                for _, _, done in group:
                    if not done.done():
                        done.set_result(None)

    async def publish(
        self, records: Sequence[EventRecord], dead_letters: Sequence[DeadLetterRow]
    ) -> None:
        """Send both and wait for the acknowledgements; BrokerError if they do not come."""
        if not records and not dead_letters:
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.add_done_callback(_retrieved)  # a request that timed out no longer awaits it
        self._pending.append((records, dead_letters, done))
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._drain())
        try:
            await asyncio.wait_for(asyncio.shield(done), self._timeout)
        except TimeoutError as exc:
            raise BrokerError(f"Kafka did not acknowledge within {self._timeout:g}s") from exc

    def _connected(self) -> bool:
        attempt = self._starting
        return attempt is not None and attempt.done() and attempt.exception() is None

    async def close(self) -> None:
        """Send what is pending (for at most `timeout` seconds when connected), then flush
        and disconnect; requests still waiting are answered 503."""
        sender = self._sender
        if sender is not None and not sender.done():
            if self._connected():
                await asyncio.wait({sender}, timeout=self._timeout)
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
        pending, self._pending = self._pending, []
        _fail(pending, BrokerError("the collector stopped before Kafka acknowledged"))
        await asyncio.get_running_loop().run_in_executor(None, self._producer.close)
