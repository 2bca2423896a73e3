"""Stage state in a real changelog topic: saves are all or nothing, whatever their size."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from journeys.producers.topics import ensure_pipeline_topics
from journeys.schemas.settings import Settings
from journeys.streams.changelog import BATCH_BYTES, Batches, Changelog
from journeys.streams.stage import STAGE_META

pytestmark = [pytest.mark.kafka, pytest.mark.integration]


def settings_for(kafka_bootstrap: str, prefix: str, tmp_path: Path) -> Settings:
    settings = Settings(data_dir=tmp_path, kafka_bootstrap=kafka_bootstrap, topic_prefix=prefix)
    ensure_pipeline_topics(settings)
    return settings


async def keys_in_order(settings: Settings, topic: str) -> list[bytes]:
    """Every record's key in partition 0, in log order."""
    tp = TopicPartition(topic, 0)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    await consumer.start()
    try:
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        end = (await consumer.end_offsets([tp]))[tp]
        keys: list[bytes] = []
        while await consumer.position(tp) < end:
            polled = await consumer.getmany(tp, timeout_ms=1000)
            keys += [message.key for message in polled.get(tp, ())]
        return keys
    finally:
        await consumer.stop()


def test_a_save_cut_short_is_left_out_and_never_counts_later(
    kafka_bootstrap: str, topic_prefix: Callable[[], str], tmp_path: Path
) -> None:
    """A worker killed between two record batches of a save leaves part of it in the log.
    The next owner's load leaves those records out, and writes the saved values back, so a
    later save does not make them count."""
    settings = settings_for(kafka_bootstrap, topic_prefix(), tmp_path)
    topic = settings.topic("internal.journeys-state")

    async def scenario() -> tuple[dict[bytes, bytes], dict[bytes, bytes], dict[bytes, bytes]]:
        batches = Batches(settings)
        changelog = Changelog(batches, topic, STAGE_META)
        try:
            await changelog.save(0, {b"h:a": b"1", b"x:a": None, STAGE_META: b"m1"})
            cut = await batches.send(topic, 0, [(b"h:a", b"2"), (b"x:a", b"absorbed")])
            for future in cut:  # the batch that made it; the one with the commit key did not
                await future
            first = await changelog.load(0)
            await changelog.save(0, {b"h:b": b"3", STAGE_META: b"m3"})
            second = await changelog.load(0)
            with pytest.raises(ValueError, match="must end with"):
                await changelog.save(0, {b"h:c": b"4"})
            return first, second, await changelog.load(0)
        finally:
            await batches.close()

    first, second, third = asyncio.run(scenario())
    assert first == {b"h:a": b"1", STAGE_META: b"m1"}
    assert second == third == {b"h:a": b"1", b"h:b": b"3", STAGE_META: b"m3"}


def test_a_save_of_several_batches_puts_its_commit_key_last(
    kafka_bootstrap: str, topic_prefix: Callable[[], str], tmp_path: Path
) -> None:
    settings = settings_for(kafka_bootstrap, topic_prefix(), tmp_path)
    topic = settings.topic("internal.journeys-state")
    big = b"v" * (BATCH_BYTES // 3)
    changes: dict[bytes, bytes | None] = {f"h:{i}".encode(): big for i in range(7)}
    changes[STAGE_META] = b"m"

    async def scenario() -> tuple[dict[bytes, bytes], list[bytes]]:
        batches = Batches(settings)
        try:
            await Changelog(batches, topic, STAGE_META).save(0, changes)
            state = await Changelog(batches, topic, STAGE_META).load(0)
        finally:
            await batches.close()
        return state, await keys_in_order(settings, topic)

    state, keys = asyncio.run(scenario())
    assert state == changes
    assert keys == list(changes)  # several batches (7 x 1/3 MiB), the commit key after them
