"""Stage state in Kafka, written with the stage's output in one Kafka transaction.

`Batches` sends many records to a partition as few record batches (one
request each), without Faust's per-message path.

One compacted changelog topic per stage, a partition per stage partition. A
stage's state is key-value pairs (`IdentityRouter.changes`,
`PartitionEngine.changes`, plus the stage's own meta key with the input
offset it reflects).

**Exactly once, fenced.** Each stage partition has a `StageWriter`: a
transactional producer whose `transactional_id` names the app, the stage and
the partition. Per batch, `StageWriter.commit` sends, in one transaction, the
stage's output (rows, commands and absorbs, public transitions and alerts),
its changelog records, and the input offsets the batch consumed (to the
Faust consumer group, `send_offsets_to_transaction`). Kafka makes all of it
visible at once or none of it (readers use `read_committed`). A worker that
takes a partition over opens its writer before it loads the state: the
broker then aborts whatever the previous owner left open and refuses that
owner's producer from then on (`ProducerFenced`), so a revoked owner, frozen
and let go again, cannot write beside the new one; its commit fails and the
worker stops.

`Changelog.load` reads the partition (`read_committed`) from its beginning to
its end, so any worker can take a stage partition over with no disk of its
own. Compaction keeps the last value of every key and drops deleted keys
(tombstones). A save is still applied only up to its last meta record
(`committed`): with transactions no save can be cut short, so this only
guards against records written outside a writer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError, ProducerFenced
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.structs import TopicPartition

from journeys.producers.kafka import PARTITION_FETCH_BYTES, aio_producer_options
from journeys.schemas.settings import Settings
from journeys.streams.engine.store import MemoryStore, Store

log = logging.getLogger(__name__)

#: How long a changelog load's fetch waits for records at the end of the log.
LOAD_FETCH_WAIT_MS = 20
#: Record batches are closed before this size (a request carries one per partition).
BATCH_BYTES = 1024 * 1024
#: A batch (or a transaction) Kafka keeps refusing with retriable errors fails after
#: this long (as Faust's `producer_request_timeout`): the worker stops and its input is
#: read again.
SEND_PATIENCE = 1200.0
#: A transaction left open longer than this by a producer that went silent is aborted by
#: the broker (the new owner's `init_transactions` aborts it sooner).
TRANSACTION_TIMEOUT_MS = 60_000

Record = tuple[bytes | None, bytes | None]


class Batches:
    """An aiokafka producer that sends lists of records as record batches; transactional
    when given a `transactional_id` (then only inside a `StageWriter`'s transaction)."""

    def __init__(self, settings: Settings, transactional_id: str | None = None) -> None:
        self.settings = settings
        self.transactional_id = transactional_id
        self._producer: AIOKafkaProducer | None = None
        self._partitioner = DefaultPartitioner()
        self._partitions: dict[str, list[int]] = {}

    async def _started(self) -> AIOKafkaProducer:
        """The producer, started (a transactional one has its producer id and epoch: the
        broker fenced every older producer of its `transactional_id`)."""
        if self._producer is None:
            options = {**aio_producer_options(self.settings), "max_batch_size": BATCH_BYTES}
            if self.transactional_id is not None:
                options["transactional_id"] = self.transactional_id
                options["transaction_timeout_ms"] = TRANSACTION_TIMEOUT_MS
            producer = AIOKafkaProducer(**options)
            try:
                await producer.start()
            except BaseException:
                await producer.stop()
                raise
            self._producer = producer
        return self._producer

    async def send(
        self,
        topic: str,
        partition: int,
        records: Iterable[Record],
        last_alone: bool = False,
    ) -> list[Awaitable[Any]]:
        """Send (key, value) records to one partition, in order; the batches' deliveries
        (outside a transaction, each retried while Kafka answers with a retriable error,
        up to `SEND_PATIENCE`).

        With `last_alone`, records that take more than one batch keep their last record
        back until Kafka has all the others: no retry can put it before them.
        """
        chunks = await self._chunks(records)
        last: list[Record] = []
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
        self, sent: list[Awaitable[Any]], topic: str, partition: int, records: list[Record]
    ) -> None:
        for future in sent:
            await future
        await self._deliver(topic, partition, None, records)

    async def _chunks(self, records: Iterable[Record]) -> list[tuple[Any, list[Record]]]:
        """Records split into record batches that fit a request, with the records of each."""
        producer = await self._started()
        chunks: list[tuple[Any, list[Record]]] = []
        batch = producer.create_batch()
        kept: list[Record] = []
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

    async def _deliver(self, topic: str, partition: int, batch: Any, records: list[Record]) -> None:
        """One record batch, built again from `records` and sent again after a retriable
        error (a broker restarting, a leader moving) until Kafka has it; other errors, or
        patience run out, raise. In a transaction nothing is sent again here: the
        transaction is (`StageWriter.commit`)."""
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
                if self.transactional_id is not None:
                    raise
                if not exc.retriable or time.monotonic() > deadline:
                    raise
                log.info("sending to %s[%d] again after %r", topic, partition, exc)
                batch = None
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def partitions_of(self, topic: str) -> list[int]:
        """The topic's partitions (asked once)."""
        partitions = self._partitions.get(topic)
        if partitions is None:
            producer = await self._started()
            known = await producer.partitions_for(topic)
            partitions = self._partitions[topic] = sorted(known)
        return partitions

    async def by_key(
        self, topic: str, records: Iterable[tuple[bytes, bytes]]
    ) -> dict[int, list[Record]]:
        """Keyed records by the partition Kafka's default partitioner gives their keys (as
        any Kafka producer would)."""
        partitions = await self.partitions_of(topic)
        by_partition: dict[int, list[Record]] = {}
        for key, value in records:
            target = self._partitioner(key, partitions, partitions)
            by_partition.setdefault(target, []).append((key, value))
        return by_partition

    async def send_keyed(
        self, topic: str, records: Iterable[tuple[bytes, bytes]]
    ) -> list[Awaitable[Any]]:
        """Send keyed records to the partitions their keys give (`by_key`); the batches'
        futures."""
        futures = []
        for target, items in sorted((await self.by_key(topic, records)).items()):
            futures += await self.send(topic, target, items)
        return futures

    async def close(self) -> None:
        """Stop the producer."""
        if self._producer is not None:
            producer, self._producer = self._producer, None
            await producer.stop()


@dataclass
class Outgoing:
    """What one batch of a stage partition writes: records per (topic, partition), in
    order, and keyed records placed by Kafka's default partitioner."""

    records: dict[tuple[str, int], list[Record]] = field(default_factory=dict)
    keyed: dict[str, list[tuple[bytes, bytes]]] = field(default_factory=dict)

    def add(self, topic: str, partition: int, records: Iterable[Record]) -> None:
        """Append records for one partition."""
        self.records.setdefault((topic, partition), []).extend(records)

    def add_values(self, topic: str, partition: int, values: Iterable[bytes]) -> None:
        """Append unkeyed values for one partition."""
        self.add(topic, partition, ((None, value) for value in values))

    def add_keyed(self, topic: str, records: Iterable[tuple[bytes, bytes]]) -> None:
        """Append keyed records (their partition is their key's)."""
        self.keyed.setdefault(topic, []).extend(records)


class Fenced(Exception):
    """Another worker's writer took this stage partition over: this one must not write."""


class StageWriter:
    """The transactional producer of one stage partition (see the module docstring).

    `commit` sends a batch's `Outgoing` records and its input offsets in one
    transaction. A transaction refused with a retriable error (a broker
    restarting) is aborted and sent again whole, up to `SEND_PATIENCE`; a fenced
    producer raises `Fenced`; anything else raises as it is. A closed writer
    (its partition revoked) commits nothing and says so.
    """

    def __init__(self, settings: Settings, transactional_id: str, group_id: str) -> None:
        self.batches = Batches(settings, transactional_id)
        self.transactional_id = transactional_id
        self.group_id = group_id
        self.closed = False
        self.transactions = 0
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        """Take the partition over: the broker aborts what an older producer of the same
        `transactional_id` left open, and fences it."""
        async with self._lock:
            if self.closed:  # revoked before it opened
                return
            try:
                await self.batches._started()  # noqa: SLF001 (init_transactions)
            except ProducerFenced as exc:
                raise Fenced(f"{self.transactional_id} fenced while opening") from exc

    async def commit(self, out: Outgoing, offsets: dict[TopicPartition, int]) -> bool:
        """Write `out` and commit `offsets` (the next offset to read, per input partition)
        for the group, all in one transaction; False (nothing written) if closed."""
        async with self._lock:
            if self.closed:
                return False
            deadline = time.monotonic() + SEND_PATIENCE
            delay = 0.2
            while True:
                try:
                    await self._transaction(out, offsets)
                    self.transactions += 1
                    return True
                except ProducerFenced as exc:
                    raise Fenced(f"{self.transactional_id} was fenced: {exc!r}") from exc
                except KafkaError as exc:
                    if not exc.retriable or time.monotonic() > deadline:
                        raise
                    log.info("transaction of %s again after %r", self.transactional_id, exc)
                    await self._abort()
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)

    async def _transaction(self, out: Outgoing, offsets: dict[TopicPartition, int]) -> None:
        batches = self.batches
        producer = await batches._started()  # noqa: SLF001 (the writer owns it)
        manager = producer._txn_manager  # noqa: SLF001 (no public state accessor)
        if manager.is_fatal_error():  # fenced (or broken) by an earlier request
            raise Fenced(
                f"{self.transactional_id} was fenced (or broke) earlier: it writes no more"
            )
        if manager.is_in_transaction():  # a transaction left open by an error
            await producer.abort_transaction()
        await producer.begin_transaction()
        records = dict(out.records)
        for topic, keyed in out.keyed.items():
            for partition, items in (await batches.by_key(topic, keyed)).items():
                records[(topic, partition)] = records.get((topic, partition), []) + items
        sent: list[Awaitable[Any]] = []
        for (topic, partition), items in records.items():
            sent += await batches.send(topic, partition, items)
        try:
            await asyncio.gather(*sent)
        finally:
            for future in sent:  # none left pending or unretrieved
                if isinstance(future, asyncio.Future) and not future.done():
                    future.cancel()
        if offsets:
            await producer.send_offsets_to_transaction(offsets, self.group_id)
        await producer.commit_transaction()

    async def _abort(self) -> None:
        """Abort a failed transaction, if the producer is still able to."""
        producer = self.batches._producer  # noqa: SLF001
        if producer is None:
            return
        manager = producer._txn_manager  # noqa: SLF001 (no public state accessor)
        if manager is None or manager.is_fatal_error() or not manager.is_in_transaction():
            if manager is not None and manager.is_fatal_error():
                raise Fenced(f"{self.transactional_id} is in a fatal state; stopping")
            return
        try:
            await producer.abort_transaction()
        except ProducerFenced as exc:
            raise Fenced(f"{self.transactional_id} was fenced: {exc!r}") from exc

    async def close(self) -> None:
        """Commit nothing more (after a commit under way) and stop the producer."""
        async with self._lock:
            self.closed = True
            await self.batches.close()


class Committed:
    """The state a changelog's records make, applied a save at a time as they are read:
    records count once a `commit_key` record follows them. Only the state and the records
    of the save under way are held, never the log read (before compaction it can be a few
    times the state); with a `store`, not even the state: each save goes there."""

    def __init__(self, commit_key: bytes, store: Store | None = None) -> None:
        self.commit_key = commit_key
        self._memory = MemoryStore()
        self.store: Store = self._memory if store is None else store
        self.pending: dict[bytes, bytes | None] = {}
        self.records = 0

    @property
    def state(self) -> dict[bytes, bytes]:
        """The state applied so far (empty when it went to a store given)."""
        return self._memory.records

    def add(self, key: bytes, value: bytes | None) -> None:
        """One more record, in log order."""
        self.records += 1
        pending = self.pending
        pending[key] = value
        if key == self.commit_key:
            self.store.write(pending)
            self.pending = {}

    @property
    def torn(self) -> set[bytes]:
        """Keys of records after the last save (a save cut short): the state leaves them as
        they were."""
        return set(self.pending)


def committed(
    records: Iterable[tuple[bytes, bytes | None]], commit_key: bytes
) -> tuple[dict[bytes, bytes], set[bytes]]:
    """The state a changelog's records make (see `Committed`), and the keys of records
    after the last save."""
    applied = Committed(commit_key)
    for key, value in records:
        applied.add(key, value)
    return applied.state, applied.torn


class Changelog:
    """The changelog topic of one stage (see the module docstring)."""

    def __init__(self, settings: Settings, topic: str, commit_key: bytes) -> None:
        self.settings = settings
        self.topic = topic
        self.commit_key = commit_key

    def save(self, out: Outgoing, partition: int, changes: dict[bytes, bytes | None]) -> None:
        """Add `changes` (None deletes a key), the commit key last, to a transaction's
        records."""
        if next(reversed(changes), None) != self.commit_key:
            raise ValueError(f"a save to {self.topic} must end with {self.commit_key!r}")
        out.add(self.topic, partition, changes.items())

    async def load(self, partition: int) -> dict[bytes, bytes]:
        """The partition's committed state: the last saved value of every key not deleted
        (records of aborted or open transactions are not read)."""
        return (await self._read(partition, None)).state

    async def load_into(self, partition: int, store: Store) -> None:
        """`load` into `store` (a new one), a save at a time: the state is never whole in
        memory."""
        await self._read(partition, store)

    async def _read(self, partition: int, store: Store | None) -> Committed:
        started = time.monotonic()
        tp = TopicPartition(self.topic, partition)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            enable_auto_commit=False,
            isolation_level="read_committed",
            max_partition_fetch_bytes=PARTITION_FETCH_BYTES,
            fetch_max_bytes=PARTITION_FETCH_BYTES,
            # A fetch at the end of the log waits this long, and holds up the requests
            # queued behind it on the connection (the default, 500 ms, made every load
            # of an empty partition take half a second).
            fetch_max_wait_ms=LOAD_FETCH_WAIT_MS,
        )
        await consumer.start()
        applied = Committed(self.commit_key, store)
        try:
            # The last stable offset under read_committed: what is committed so far.
            end = (await consumer.end_offsets([tp]))[tp]  # before any fetch is under way
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            position = await consumer.position(tp)
            while position < end:
                polled: dict[Any, list[Any]] = await consumer.getmany(tp, timeout_ms=1000)
                for message in polled.get(tp, ()):
                    applied.add(message.key, message.value)
                del polled
                position = await consumer.position(tp)
        finally:
            await consumer.stop()
        torn = applied.torn
        if torn:
            log.warning(
                "%s[%d] ends with records after its last save (%d keys): left out",
                self.topic, partition, len(torn),
            )  # fmt: skip
        log.info(
            "restored %s[%d]: %d records read in %.1fs",
            self.topic, partition, applied.records, time.monotonic() - started,
        )  # fmt: skip
        return applied
