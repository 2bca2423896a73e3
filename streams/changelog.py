"""Stage state in Kafka, and record batches: a compacted changelog topic per stage.

`Batches` sends many records to a partition as few record batches (one
request each), without Faust's per-message path: the stages use it for the
public transitions and alerts topics (one message per row, keyed by account,
placed by Kafka's default partitioner) and for their changelogs.

One compacted changelog topic per stage, a partition per stage partition.

A stage's state is key-value pairs (`IdentityRouter.changes`,
`PartitionEngine.changes`, plus the stage's own meta key with the input
offset it reflects). `save` appends what changed since the last save to the
stage's changelog partition, in as few record batches as fit a request (a
record batch is appended whole or not at all), meta last, and waits for
Kafka's acknowledgement; `load` reads the partition from its beginning to its
end, so any worker can take a stage partition over with no disk of its own.
Compaction keeps the last value of every key and drops deleted keys
(tombstones).

A crash between the stage's output and its save re-reads input the saved
state does not reflect: it is applied again, and the engine's dedupe (which
travels with each journey) makes that harmless.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.structs import TopicPartition

from journeys.producers.kafka import PARTITION_FETCH_BYTES, aio_producer_options
from journeys.schemas.settings import Settings

log = logging.getLogger(__name__)

#: Record batches are closed before this size (a request carries one per partition).
BATCH_BYTES = 1024 * 1024
#: A batch Kafka keeps refusing with retriable errors fails after this long (as Faust's
#: `producer_request_timeout`): the worker stops and its input is read again.
SEND_PATIENCE = 1200.0


class Batches:
    """An aiokafka producer that sends lists of records as record batches."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._producer: AIOKafkaProducer | None = None
        self._partitioner = DefaultPartitioner()
        self._partitions: dict[str, list[int]] = {}

    async def _started(self) -> AIOKafkaProducer:
        if self._producer is None:
            options = {**aio_producer_options(self.settings), "max_batch_size": BATCH_BYTES}
            producer = AIOKafkaProducer(**options)
            await producer.start()
            self._producer = producer
        return self._producer

    async def send(
        self, topic: str, partition: int, records: Iterable[tuple[bytes | None, bytes | None]]
    ) -> list[Awaitable[Any]]:
        """Send (key, value) records to one partition, in order; the batches' deliveries
        (each retried while Kafka answers with a retriable error, up to `SEND_PATIENCE`)."""
        producer = await self._started()
        chunks: list[tuple[Any, list[tuple[bytes | None, bytes | None]]]] = []
        batch = producer.create_batch()
        kept: list[tuple[bytes | None, bytes | None]] = []
        for key, value in records:
            if batch.append(key=key, value=value, timestamp=None) is None:
                chunks.append((batch, kept))
                batch, kept = producer.create_batch(), []
                if batch.append(key=key, value=value, timestamp=None) is None:
                    raise ValueError(f"record too large for Kafka: {(key or b'')[:60]!r}")
            kept.append((key, value))
        if kept:
            chunks.append((batch, kept))
        return [
            asyncio.ensure_future(self._deliver(topic, partition, batch, kept))
            for batch, kept in chunks
        ]

    async def _deliver(
        self,
        topic: str,
        partition: int,
        batch: Any,
        records: list[tuple[bytes | None, bytes | None]],
    ) -> None:
        """One record batch, built again from `records` and sent again after a retriable
        error (a broker restarting, a leader moving) until Kafka has it; other errors, or
        patience run out, raise."""
        producer = await self._started()
        deadline = time.monotonic() + SEND_PATIENCE
        delay = 0.2
        while True:
            if batch is None:  # a batch is sent once: a retry needs a new one
                batch = producer.create_batch()
                for key, value in records:
                    batch.append(key=key, value=value, timestamp=None)
            try:
                await (await producer.send_batch(batch, topic, partition=partition))
                return
            except KafkaError as exc:
                if not exc.retriable or time.monotonic() > deadline:
                    raise
                log.info("sending to %s[%d] again after %r", topic, partition, exc)
                batch = None
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def send_keyed(
        self, topic: str, records: Iterable[tuple[bytes, bytes]]
    ) -> list[Awaitable[Any]]:
        """Send keyed records to the partitions Kafka's default partitioner gives their keys
        (as any Kafka producer would); the batches' futures."""
        partitions = self._partitions.get(topic)
        if partitions is None:
            producer = await self._started()
            known = await producer.partitions_for(topic)
            partitions = self._partitions[topic] = sorted(known)
        by_partition: dict[int, list[tuple[bytes | None, bytes | None]]] = {}
        for key, value in records:
            target = self._partitioner(key, partitions, partitions)
            by_partition.setdefault(target, []).append((key, value))
        futures = []
        for target, items in sorted(by_partition.items()):
            futures += await self.send(topic, target, items)
        return futures

    async def close(self) -> None:
        """Stop the producer."""
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None


class Changelog:
    """The changelog topic of one stage (see the module docstring)."""

    def __init__(self, batches: Batches, topic: str) -> None:
        self.settings = batches.settings
        self.batches = batches
        self.topic = topic

    async def save(self, partition: int, changes: dict[bytes, bytes | None]) -> None:
        """Append `changes` (None deletes a key), meta last, and wait until Kafka has them."""
        for future in await self.batches.send(self.topic, partition, changes.items()):
            await future

    async def load(self, partition: int) -> dict[bytes, bytes]:
        """The partition's state: the last value of every key not deleted."""
        started = time.monotonic()
        tp = TopicPartition(self.topic, partition)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            enable_auto_commit=False,
            max_partition_fetch_bytes=PARTITION_FETCH_BYTES,
            fetch_max_bytes=PARTITION_FETCH_BYTES,
        )
        await consumer.start()
        state: dict[bytes, bytes] = {}
        records = 0
        try:
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            end = (await consumer.end_offsets([tp]))[tp]
            position = await consumer.position(tp)
            while position < end:
                polled: dict[Any, list[Any]] = await consumer.getmany(tp, timeout_ms=1000)
                for message in polled.get(tp, ()):
                    records += 1
                    if message.value is None:
                        state.pop(message.key, None)
                    else:
                        state[message.key] = message.value
                position = await consumer.position(tp)
        finally:
            await consumer.stop()
        log.info(
            "restored %s[%d]: %d keys from %d records in %.1fs",
            self.topic, partition, len(state), records, time.monotonic() - started,
        )  # fmt: skip
        return state
