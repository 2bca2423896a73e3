"""Stage state in a real changelog topic, written in Kafka transactions: a save counts whole
or not at all, whatever its size, with the input offsets it reflects; a writer that another
took over (the same `transactional_id`) can write nothing more."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition

from journeys.producers.kafka import new_consumer
from journeys.producers.topics import ensure_pipeline_topics
from journeys.schemas.settings import Settings
from journeys.streams.changelog import BATCH_BYTES, Changelog, Fenced, Outgoing, StageWriter
from journeys.streams.engine.store import MemoryStore
from journeys.streams.stage import STAGE_META

pytestmark = [pytest.mark.kafka, pytest.mark.integration]

GROUP = "changelog-test"


def settings_for(kafka_bootstrap: str, prefix: str, tmp_path: Path) -> Settings:
    settings = Settings(data_dir=tmp_path, kafka_bootstrap=kafka_bootstrap, topic_prefix=prefix)
    ensure_pipeline_topics(settings)
    return settings


def committed_offset(settings: Settings, tp: TopicPartition) -> int | None:
    """The test group's committed offset of `tp`."""
    from kafka import TopicPartition as KafkaTopicPartition

    consumer = new_consumer(settings, group=GROUP)
    try:
        return consumer.committed(KafkaTopicPartition(tp.topic, tp.partition))
    finally:
        consumer.close()


def test_an_open_transaction_is_aborted_by_the_next_owner_which_fences_the_old_one(
    kafka_bootstrap: str, topic_prefix: Callable[[], str], tmp_path: Path
) -> None:
    """Owner A commits a save, then sends the records of another and stops before its
    commit (frozen, or killed). Owner B opens the same stage partition: A's open
    transaction is aborted and never loaded, and A's late commit is refused."""
    settings = settings_for(kafka_bootstrap, topic_prefix(), tmp_path)
    topic = settings.topic("internal.journeys-state")
    source = TopicPartition(settings.topic("events"), 0)
    group = f"{settings.topic_prefix}{GROUP}"
    changelog = Changelog(settings, topic, STAGE_META)
    name = f"{group}:journeys:0"

    async def scenario() -> tuple[dict[bytes, bytes], dict[bytes, bytes], str]:
        old, new = StageWriter(settings, name, group), StageWriter(settings, name, group)
        try:
            await old.open()
            out = Outgoing()
            changelog.save(out, 0, {b"h:a": b"1", b"x:a": None, STAGE_META: b"m1"})
            assert await old.commit(out, {source: 3})
            producer = await old.batches._started()  # noqa: SLF001 (a commit cut short)
            await producer.begin_transaction()
            cut = await old.batches.send(topic, 0, [(b"h:a", b"2"), (b"x:a", b"absorbed")])
            await asyncio.gather(*cut)
            await new.open()  # the next owner: the open transaction is aborted
            first = await changelog.load(0)
            with pytest.raises(KafkaError):  # A let go: its commit is refused
                await producer.commit_transaction()
            late = Outgoing()
            changelog.save(late, 0, {b"h:z": b"stale", STAGE_META: b"stale"})
            with pytest.raises(Fenced) as fenced:
                await old.commit(late, {source: 99})
            out = Outgoing()
            changelog.save(out, 0, {b"h:b": b"3", STAGE_META: b"m3"})
            assert await new.commit(out, {source: 7})
            with pytest.raises(ValueError, match="must end with"):
                changelog.save(Outgoing(), 0, {b"h:c": b"4"})
            return first, await changelog.load(0), str(fenced.value)
        finally:
            await old.close()
            await new.close()

    first, second, why = asyncio.run(scenario())
    assert first == {b"h:a": b"1", STAGE_META: b"m1"}
    assert second == {b"h:a": b"1", b"h:b": b"3", STAGE_META: b"m3"}
    assert "fenced" in why
    assert committed_offset(settings, source) == 7  # never A's 99


def test_a_save_of_several_batches_counts_whole_with_its_input_offsets(
    kafka_bootstrap: str, topic_prefix: Callable[[], str], tmp_path: Path
) -> None:
    settings = settings_for(kafka_bootstrap, topic_prefix(), tmp_path)
    topic = settings.topic("internal.journeys-state")
    source = TopicPartition(settings.topic("events"), 1)
    group = f"{settings.topic_prefix}{GROUP}"
    big = b"v" * (BATCH_BYTES // 3)
    changes: dict[bytes, bytes | None] = {f"h:{i}".encode(): big for i in range(7)}
    changes[STAGE_META] = b"m"
    changelog = Changelog(settings, topic, STAGE_META)

    async def scenario() -> dict[bytes, bytes]:
        writer = StageWriter(settings, f"{group}:identity:0", group)
        try:
            await writer.open()
            out = Outgoing()
            changelog.save(out, 0, changes)  # several batches (7 x 1/3 MiB)
            assert await writer.commit(out, {source: 42})
            await writer.close()
            assert not await writer.commit(out, {source: 43})  # closed: writes nothing
            store = MemoryStore()  # journeys on disk: the same state, a save at a time
            await changelog.load_into(0, store)
            assert store.records == changes
            return await changelog.load(0)
        finally:
            await writer.close()

    assert asyncio.run(scenario()) == changes
    assert committed_offset(settings, source) == 42
