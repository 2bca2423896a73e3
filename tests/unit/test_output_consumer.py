"""The sink loop waits out failed writes and commits, commits exactly what it wrote, and
never skips a batch (fakes of Kafka's consumer and of ClickHouse; the real ones are in
tests/integration/kafka/test_outages.py)."""

from __future__ import annotations

import threading
from collections import namedtuple
from typing import Any

import kafka.errors
import pytest
from kafka import TopicPartition

from journeys.schemas.codec import dead_letter_json, encode_row, pack
from journeys.schemas.errors import SinkUnavailable
from journeys.schemas.rows import DeadLetterRow, GenerationRow, StoredEvent
from journeys.schemas.settings import Settings
from journeys.sinks import consumer as consumer_module
from journeys.sinks.consumer import Backoff, OutputConsumer, rows_output
from journeys.sinks.memory import MemorySink
from tests.unit.engine.journey import ev

Message = namedtuple("Message", "offset value")
SETTINGS = Settings(topic_prefix="u.")
ROWS, DEAD = (
    TopicPartition("u.journeys.internal.rows", 0),
    TopicPartition("u.journeys.dead-letters", 0),
)


class FlakySink(MemorySink):
    """Refuses `failures` flushes, keeping what it holds (as the ClickHouse writer does)."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    def flush(self) -> None:
        if self.failures:
            self.failures -= 1
            raise SinkUnavailable("ClickHouse at h:8123 is unavailable")
        super().flush()


class FakeConsumer:
    """Hands out polls in turn; commits fail `commit_failures` times, then are recorded."""

    def __init__(self, polls: list[dict[Any, list[Message]]], commit_failures: int = 0) -> None:
        self.polls = polls
        self.commit_failures = commit_failures
        self.commits: list[dict[Any, Any]] = []
        self.stop: threading.Event | None = None
        #: Topics whose partitions were asked for, in order.
        self.asked: list[str] = []
        self.assigned: set[Any] = {ROWS}

    def partitions_for_topic(self, topic: str) -> set[int]:
        self.asked.append(topic)
        return {0}

    def assignment(self) -> set[Any]:
        return self.assigned

    def poll(self, timeout_ms: int, max_records: int) -> dict[Any, list[Message]]:
        if self.polls:
            return self.polls.pop(0)
        assert self.stop is not None
        self.stop.set()
        return {}

    def commit(self, offsets: dict[Any, Any], timeout_ms: int) -> None:
        if self.commit_failures:
            self.commit_failures -= 1
            raise kafka.errors.KafkaConnectionError("Connection at h:9092 closed")
        self.commits.append({tp: meta.offset for tp, meta in offsets.items()})

    def metrics(self) -> dict[str, Any]:
        return {}

    def close(self, autocommit: bool) -> None:
        assert autocommit is False


def loop(sink: MemorySink, consumer: FakeConsumer) -> OutputConsumer:
    out = OutputConsumer(SETTINGS, sink, Backoff(first=0.001, cap=0.004))
    out._connect = lambda: consumer  # type: ignore[method-assign]
    consumer.stop = out._stop
    out.setup()
    return out


def rows_message(offset: int, *event_ids: str) -> Message:
    rows = [encode_row(StoredEvent(ev("page_view", 0, event_id=i), "acme")) for i in event_ids]
    return Message(offset, b"".join(pack(rows)))


def test_a_write_refused_for_a_while_is_retried_then_committed_once() -> None:
    sink, consumer = (
        FlakySink(failures=3),
        FakeConsumer([{ROWS: [rows_message(0, "a", "b"), rows_message(1, "c")]}]),
    )
    out = loop(sink, consumer)
    out.run()
    assert [r.record.event_id for r in sink.written.events] == ["a", "b", "c"]  # not doubled
    assert consumer.commits == [{ROWS: 2}]
    assert out.progress.retries == 3 and out.progress.problem is None


def test_a_commit_that_fails_is_retried_and_the_next_batch_waits() -> None:
    dead = DeadLetterRow.of(b"{oops", "invalid JSON", "e:0:1", 0)
    polls = [{ROWS: [rows_message(4, "a")]}, {DEAD: [Message(7, dead_letter_json(dead))]}]
    sink, consumer = FlakySink(failures=0), FakeConsumer(polls, commit_failures=2)
    out = loop(sink, consumer)
    out.run()
    assert consumer.commits == [{ROWS: 5}, {DEAD: 8}]
    assert [d.dead_letter_id for d in sink.written.dead_letters] == [dead.dead_letter_id]
    assert out.progress.retries == 2


def test_stopping_during_an_outage_commits_nothing_and_flushes_nothing() -> None:
    sink, consumer = FlakySink(failures=10**6), FakeConsumer([{ROWS: [rows_message(0, "a")]}])
    out = OutputConsumer(SETTINGS, sink, Backoff(first=0.05, cap=0.05))
    out._connect = lambda: consumer  # type: ignore[method-assign]
    out.setup()
    timer = threading.Timer(0.3, out.stop)
    timer.start()
    out.run()
    timer.join()
    assert consumer.commits == [] and sink.written.events == []
    assert out.progress.problem is not None and "unavailable" in out.progress.problem


def test_the_topics_partitions_are_known_before_the_first_poll_and_asked_for_while_idle(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """kafka-python joins its group with the metadata it has: without the topics' partitions
    the sink gets none, until a refresh minutes later. It asks for them before polling, and
    again while it idles with no partitions (not while it has some)."""
    monkeypatch.setattr(consumer_module, "METADATA_CHECK", 0.0)
    topics = [ROWS.topic, DEAD.topic]
    for assigned, asked in (({ROWS}, topics), (set(), topics * 3)):
        consumer = FakeConsumer([{}])  # an empty poll, then one that stops the loop
        consumer.assigned = assigned
        loop(FlakySink(failures=0), consumer).run()
        assert consumer.asked == asked


def test_backoff_doubles_up_to_its_cap() -> None:
    assert [Backoff(0.5, 10).delay(n) for n in range(1, 8)] == [0.5, 1, 2, 4, 8, 10, 10]


def test_generation_reports_reach_the_sink() -> None:
    """A partition's report that it holds a generation is written, not dropped."""
    report = GenerationRow(3, 1, 4, "abc", "[phases]")
    event = StoredEvent(ev("page_view", 0, event_id="e1"), "acme")
    out = rows_output([event, report])
    assert (out.events, out.generations) == ([event], [report])
