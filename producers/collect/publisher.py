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
        """Store both; raise BrokerError if that is not certain."""

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
    """Produces to the events and dead-letter topics; blocks until Kafka acknowledged."""

    def __init__(self, settings: Settings) -> None:
        self._producer = EventProducer(settings, timeout=10.0)
        self._lock = asyncio.Lock()
        self._started = False

    async def start(self) -> None:
        """Nothing yet: the first publish connects, so the collector serves (503) while Kafka is down."""

    async def _connect(self) -> None:
        if not self._started:  # kafka-python blocks: connect in a thread
            await asyncio.get_running_loop().run_in_executor(None, self._producer.start)
            self._started = True

    async def publish(self, records: Sequence[EventRecord], dead_letters: Sequence[DeadLetterRow]) -> None:
        """Send and wait for the acknowledgements."""
        loop = asyncio.get_running_loop()
        async with self._lock:
            await self._connect()
            if records:
                await loop.run_in_executor(None, self._producer.send, list(records))
            if dead_letters:
                await loop.run_in_executor(None, self._producer.send_dead_letters, list(dead_letters))

    async def close(self) -> None:
        """Flush and disconnect."""
        await asyncio.get_running_loop().run_in_executor(None, self._producer.close)
