"""Where the collector puts accepted events: the port, a fake, and the Kafka adapter.

`publish` returns only once the events are durably stored (Kafka acknowledged
them); it raises `BrokerError` otherwise, and the collector answers 503.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Protocol

from producers.client import EventProducer
from schemas.errors import BrokerError
from schemas.event import EventRecord
from schemas.rows import DeadLetterRow
from schemas.settings import Settings


class Publisher(Protocol):
    """Durable storage for accepted events and rejected input."""

    async def start(self) -> None:
        """Connect."""

    async def publish(self, records: Sequence[EventRecord], dead_letters: Sequence[DeadLetterRow]) -> None:
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

    async def publish(self, records: Sequence[EventRecord], dead_letters: Sequence[DeadLetterRow]) -> None:
        """Keep the rows, or fail like an unreachable broker."""
        if self.fail:
            raise BrokerError("broker unavailable (test)")
        self.records.extend(records)
        self.dead_letters.extend(dead_letters)

    async def close(self) -> None:
        """Nothing to release."""


class KafkaPublisher:
    """Produces to the events and dead-letter topics; returns once Kafka acknowledged.

    kafka-python blocks, so its calls run in the loop's executor; concurrent
    requests send concurrently (the producer is thread-safe and batches them
    together). The producer connects on the first publish, so the collector
    serves, and answers 503, while Kafka is down. A publish that takes longer
    than `timeout` seconds is reported as a BrokerError: the client retries,
    and a late acknowledgement of the first try is one event downstream
    (event ids are idempotency keys).
    """

    def __init__(self, settings: Settings, timeout: float = 15.0) -> None:
        self._producer = EventProducer(settings, timeout=timeout)
        self._timeout = timeout
        self._starting: asyncio.Future[None] | None = None

    async def start(self) -> None:
        """Nothing yet: the first publish connects."""

    async def _connect(self) -> None:
        """One connection attempt at a time, shared by every request waiting for it; an
        attempt outlives a request that gave up on it, and a failed one is tried again."""
        attempt = self._starting
        if attempt is None:
            attempt = asyncio.get_running_loop().run_in_executor(None, self._producer.start)
            self._starting = attempt
        try:
            await asyncio.shield(attempt)
        except Exception:
            if self._starting is attempt:
                self._starting = None
            raise

    async def _send(self, records: Sequence[EventRecord], dead_letters: Sequence[DeadLetterRow]) -> None:
        loop = asyncio.get_running_loop()
        await self._connect()
        sends = []
        if records:
            sends.append(loop.run_in_executor(None, self._producer.send, list(records)))
        if dead_letters:
            sends.append(loop.run_in_executor(None, self._producer.send_dead_letters, list(dead_letters)))
        await asyncio.gather(*sends)

    async def publish(self, records: Sequence[EventRecord], dead_letters: Sequence[DeadLetterRow]) -> None:
        """Send both and wait for the acknowledgements; BrokerError if they do not come."""
        try:
            await asyncio.wait_for(self._send(records, dead_letters), self._timeout)
        except TimeoutError as exc:
            raise BrokerError(f"Kafka did not acknowledge within {self._timeout:g}s") from exc

    async def close(self) -> None:
        """Flush and disconnect."""
        await asyncio.get_running_loop().run_in_executor(None, self._producer.close)
