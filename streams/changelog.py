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
record batch is appended whole or not at all), and waits for Kafka's
acknowledgement; `load` reads the partition from its beginning to its end, so
any worker can take a stage partition over with no disk of its own.
Compaction keeps the last value of every key and drops deleted keys
(tombstones).

A save is all or nothing. Its last record is the stage's meta key (the
*commit key*, with the input offset the state reflects); when a save takes
several record batches, that record goes alone, after Kafka has acknowledged
the others. `load` applies records only up to the last commit record: the
records of a save cut short (a worker killed between two of its batches) are
left out, and `load` writes their keys' saved values back before the stage
goes on, so no later save can make them count. Without this, a journey saved
with an absorbed merge but without the offset it reflects would absorb it
again when its input is read again.

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

#: How long a changelog load's fetch waits for records at the end of the log.
LOAD_FETCH_WAIT_MS = 20
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
        self,
        topic: str,
        partition: int,
        records: Iterable[tuple[bytes | None, bytes | None]],
        last_alone: bool = False,
    ) -> list[Awaitable[Any]]:
        """Send (key, value) records to one partition, in order; the batches' deliveries
        (each retried while Kafka answers with a retriable error, up to `SEND_PATIENCE`).

        With `last_alone`, records that take more than one batch keep their last record
        back until Kafka has all the others: no retry can put it before them.
        """
        chunks = await self._chunks(records)
        last: list[tuple[bytes | None, bytes | None]] = []
        if last_alone and len(chunks) > 1:
            _, kept = chunks.pop()
            last = kept[-1:]
            if len(kept) > 1:  # the rest of the last batch, built again without it
                chunks.append((None, kept[:-1]))
        sent: list[Awaitable[Any]] = [
            asyncio.ensure_future(self._deliver(topic, partition, batch, kept))
            for batch, kept in chunks
        ]
        if last:
            return [asyncio.ensure_future(self._after(sent, topic, partition, last))]
        return sent

    async def _after(
        self,
        sent: list[Awaitable[Any]],
        topic: str,
        partition: int,
        records: list[tuple[bytes | None, bytes | None]],
    ) -> None:
        for future in sent:
            await future
        await self._deliver(topic, partition, None, records)

    async def _chunks(
        self, records: Iterable[tuple[bytes | None, bytes | None]]
    ) -> list[tuple[Any, list[tuple[bytes | None, bytes | None]]]]:
        """Records split into record batches that fit a request, with the records of each."""
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
        return chunks

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


def committed(
    records: Iterable[tuple[bytes, bytes | None]], commit_key: bytes
) -> tuple[dict[bytes, bytes], set[bytes]]:
    """The state a changelog's records make, applied a save at a time: records count once a
    `commit_key` record follows them. Also the keys of records after the last one (a save
    cut short), which the state leaves as they were."""
    state: dict[bytes, bytes] = {}
    pending: dict[bytes, bytes | None] = {}
    for key, value in records:
        pending[key] = value
        if key == commit_key:
            for k, v in pending.items():
                if v is None:
                    state.pop(k, None)
                else:
                    state[k] = v
            pending = {}
    return state, set(pending)


class Changelog:
    """The changelog topic of one stage (see the module docstring)."""

    def __init__(self, batches: Batches, topic: str, commit_key: bytes) -> None:
        self.settings = batches.settings
        self.batches = batches
        self.topic = topic
        self.commit_key = commit_key

    async def save(self, partition: int, changes: dict[bytes, bytes | None]) -> None:
        """Append `changes` (None deletes a key), the commit key last, and wait until Kafka
        has them all."""
        if next(reversed(changes), None) != self.commit_key:
            raise ValueError(f"a save to {self.topic} must end with {self.commit_key!r}")
        sent = await self.batches.send(self.topic, partition, changes.items(), last_alone=True)
        for future in sent:
            await future

    async def load(self, partition: int) -> dict[bytes, bytes]:
        """The partition's state: the last saved value of every key not deleted. The
        records of a save cut short are left out, and their keys' saved values written
        again (see the module docstring)."""
        started = time.monotonic()
        tp = TopicPartition(self.topic, partition)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            enable_auto_commit=False,
            max_partition_fetch_bytes=PARTITION_FETCH_BYTES,
            fetch_max_bytes=PARTITION_FETCH_BYTES,
            # A fetch at the end of the log waits this long, and holds up the requests
            # queued behind it on the connection (the default, 500 ms, made every load
            # of an empty partition take half a second).
            fetch_max_wait_ms=LOAD_FETCH_WAIT_MS,
        )
        await consumer.start()
        read: list[tuple[bytes, bytes | None]] = []
        try:
            end = (await consumer.end_offsets([tp]))[tp]  # before any fetch is under way
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            position = await consumer.position(tp)
            while position < end:
                polled: dict[Any, list[Any]] = await consumer.getmany(tp, timeout_ms=1000)
                read += ((message.key, message.value) for message in polled.get(tp, ()))
                position = await consumer.position(tp)
        finally:
            await consumer.stop()
        state, torn = committed(read, self.commit_key)
        if torn:
            log.warning(
                "%s[%d] ends with a save cut short (%d keys): its records are left out and "
                "the keys' saved values written again", self.topic, partition, len(torn),
            )  # fmt: skip
            repair = {key: state.get(key) for key in sorted(torn - {self.commit_key})}
            repair[self.commit_key] = state.get(self.commit_key)
            await self.save(partition, repair)
        log.info(
            "restored %s[%d]: %d keys from %d records in %.1fs",
            self.topic, partition, len(state), len(read), time.monotonic() - started,
        )  # fmt: skip
        return state
