"""The sink process's loop: the pipeline's output topics into a `Sink`, offsets after writes.

`OutputConsumer` reads the ordered internal `rows` topic (events,
transitions, journeys, alerts, identity links, in the order the journey
stage produced them) and the `dead-letters` topic, hands each poll's rows to
a `Sink`, and commits exactly the offsets of what `flush()` wrote, only once
it succeeded. A crash between the write and the commit re-delivers rows the
sink already wrote; the writes are idempotent, so nothing changes twice and
nothing is lost.

Outages are waited out, never skipped: ClickHouse or Kafka unreachable at
start, a failed write, a failed commit are retried with capped exponential
backoff (0.5 s doubling to 10 s) for as long as it takes, and `progress`
reports the process unhealthy meanwhile. `Sink.add` never writes, so every
write (each poll's flush, and the sink's close on the way out) goes through
that retry. The sink keeps a failed batch buffered (the port's contract), so
a retry writes the same rows again and the commit waits for it. A commit
refused because the group rebalanced is not retried: the partitions' new
owner reads from the last commit and writes the same rows again.

Rows ClickHouse refuses for what they hold never stop the loop: the writer
stores them as dead letters and the rest of the batch is written. A refusal
of the whole request (`SinkRejected`: credentials, grants, a missing table)
cannot be dead-lettered, since the dead letters would be refused too: it is
retried like an outage, logged as an error saying someone must act, so the
rows wait in Kafka until the cause is fixed rather than being acknowledged
unstored.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import CommitFailedError
from kafka.structs import OffsetAndMetadata

from journeys.producers.kafka import kafka_errors, new_consumer
from journeys.producers.topics import Topics, ensure_pipeline_topics
from journeys.schemas.codec import decode_dead_letter, decode_rows
from journeys.schemas.errors import BrokerError, SinkUnavailable
from journeys.schemas.rows import (
    AlertRow,
    DeadLetterRow,
    GenerationRow,
    IdentityLink,
    JourneyRow,
    Output,
    StoredEvent,
    TransitionRow,
)
from journeys.schemas.settings import Settings
from journeys.sinks.base import Sink
from journeys.sinks.clickhouse.errors import SinkRejected

log = logging.getLogger(__name__)

POLL_RECORDS = 50_000
#: Kafka silent for longer than this (no heartbeat answered) makes the sink unhealthy.
BROKER_PATIENCE = 10.0
#: Seconds one commit attempt may take before it counts as failed (and is retried).
COMMIT_TIMEOUT = 5.0
#: Seconds between checks, while idle with no partitions, that the metadata knows the topics.
METADATA_CHECK = 5.0

T = TypeVar("T")


class Stopped(Exception):
    """`stop()` was called while waiting out an outage."""


@dataclass
class SinkProgress:
    """What the sink process has written so far, and whether it can go on."""

    rows: int = 0
    batches: int = 0
    last_write_at: float = 0.0
    #: What keeps the sink from writing (None while healthy).
    problem: str | None = "starting"
    #: `time.monotonic()` when the current problem began (0 while healthy).
    unhealthy_since: float = field(default_factory=time.monotonic)
    #: Outages waited out so far (failed attempts that were retried).
    retries: int = 0

    def report(self, problem: str | None) -> None:
        """Record a problem (keeping when it began), or None once it is gone."""
        if problem is None:
            self.unhealthy_since = 0.0
        elif self.problem is None:
            self.unhealthy_since = time.monotonic()
        self.problem = problem


@dataclass(frozen=True)
class Backoff:
    """Capped exponential backoff between attempts."""

    first: float = 0.5
    cap: float = 10.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based)."""
        return min(self.cap, self.first * 2 ** (attempt - 1))


def rows_output(rows: list[object]) -> Output:
    """Group decoded rows by kind, keeping their order within each kind."""
    out = Output()
    for row in rows:
        if isinstance(row, StoredEvent):
            out.events.append(row)
        elif isinstance(row, TransitionRow):
            out.transitions.append(row)
        elif isinstance(row, JourneyRow):
            out.journeys.append(row)
        elif isinstance(row, AlertRow):
            out.alerts.append(row)
        elif isinstance(row, IdentityLink):
            out.links.append(row)
        elif isinstance(row, DeadLetterRow):
            out.dead_letters.append(row)
        elif isinstance(row, GenerationRow):
            out.generations.append(row)
    return out


class OutputConsumer:
    """Consumes the pipeline's output topics into a sink until stopped (see module doc)."""

    def __init__(self, settings: Settings, sink: Sink, backoff: Backoff | None = None) -> None:
        self._settings = settings
        self._topics = Topics.of(settings)
        self._sink = sink
        self._backoff = backoff or Backoff()
        self._consumer: KafkaConsumer | None = None
        self._stop = threading.Event()
        self.progress = SinkProgress()

    def setup(self) -> None:
        """Connect to the sink and to Kafka, waiting for either while it is down.

        Raises `Stopped` if `stop()` is called meanwhile.
        """
        self._retry("setting up the sink", self._sink.setup)
        self._consumer = consumer = self._retry("connecting to Kafka", self._connect)
        self._retry("reading the topics' partitions", lambda: self._know_partitions(consumer))
        self.progress.report(None)

    def _connect(self) -> KafkaConsumer:
        # Topics first: subscribed to a topic that does not exist yet, the consumer would
        # stay without partitions until its next metadata refresh, minutes later.
        ensure_pipeline_topics(self._settings)
        return new_consumer(
            self._settings,
            self._topics.rows,
            self._topics.dead_letters,
            group="journeys-sink",
            max_poll_records=POLL_RECORDS,
        )

    def stop(self) -> None:
        """Ask the loop to finish its current step and return."""
        self._stop.set()

    def run(self, on_batch: Callable[[SinkProgress], None] | None = None) -> None:
        """Poll, write, commit, until `stop()`; then close the consumer and the sink."""
        consumer = self._consumer
        if consumer is None:
            raise RuntimeError("call setup() first")
        checked = time.monotonic()
        try:
            while not self._stop.is_set():
                polled = self._retry("reading from Kafka", lambda: self._poll(consumer))
                if not polled:
                    self._check_broker(consumer)
                    if not consumer.assignment() and time.monotonic() - checked > METADATA_CHECK:
                        self._know_partitions(consumer)
                        checked = time.monotonic()
                    continue
                rows, offsets = self._decode(polled)
                self._sink.add(rows_output(rows))
                self._retry("writing to ClickHouse", self._sink.flush)
                self._commit(consumer, offsets)
                self.progress.rows += len(rows)
                self.progress.batches += 1
                self.progress.last_write_at = time.monotonic()
                if on_batch is not None:
                    on_batch(self.progress)
        except Stopped:
            log.info("stopped while waiting; the uncommitted batch will be read again")
        except BaseException:
            self._stop.set()  # the loop is over: closing the sink gets one attempt
            raise
        finally:
            consumer.close(autocommit=False)
            self._close_sink()

    def _close_sink(self) -> None:
        """Close the sink through the retry, unless a problem is unresolved (whatever the
        sink holds then is uncommitted and will be read again)."""
        if self.progress.problem is not None:
            log.warning("not flushing the sink on the way out: %s", self.progress.problem)
            return
        try:
            self._retry("closing the sink", self._sink.close)
        except Stopped:
            log.warning("stopped while closing the sink; uncommitted rows will be read again")

    def _poll(self, consumer: KafkaConsumer) -> dict[Any, list[Any]]:
        with kafka_errors(self._settings.kafka_bootstrap, "polling the output topics"):
            return consumer.poll(timeout_ms=200, max_records=POLL_RECORDS)

    def _decode(self, polled: dict[Any, list[Any]]) -> tuple[list[object], dict[Any, Any]]:
        """The rows of a poll, topic by topic, and the offsets that writing them completes."""
        rows: list[object] = []
        offsets = {}
        for tp, messages in sorted(polled.items(), key=lambda kv: (kv[0].topic, kv[0].partition)):
            for message in messages:
                if tp.topic == self._topics.dead_letters:
                    rows.append(decode_dead_letter(message.value))
                else:
                    rows.extend(decode_rows(message.value))
            last = messages[-1]
            offsets[TopicPartition(tp.topic, tp.partition)] = OffsetAndMetadata(
                last.offset + 1, "", -1
            )
        return rows, offsets

    def _commit(self, consumer: KafkaConsumer, offsets: dict[Any, Any]) -> None:
        """Commit the offsets of written rows; wait out Kafka, give way to a rebalance."""

        def commit() -> None:
            try:
                with kafka_errors(self._settings.kafka_bootstrap, "committing offsets"):
                    consumer.commit(offsets, timeout_ms=int(COMMIT_TIMEOUT * 1000))
            except BrokerError as exc:
                if isinstance(exc.__cause__, CommitFailedError):
                    log.warning("commit refused after a rebalance; the rows will be re-read")
                    return
                raise

        self._retry("committing offsets", commit)

    def _know_partitions(self, consumer: KafkaConsumer) -> None:
        """Make sure the consumer's metadata cache holds the partitions of both topics.

        kafka-python joins the group with whatever metadata it has; a metadata answer
        that was already on its way when the consumer subscribed leaves the topics out
        and is not refreshed for `metadata.max.age.ms` (5 minutes). A group joined then
        gets no partitions: the sink would idle for minutes. `partitions_for_topic`
        fetches the metadata when the cache lacks a topic, and new metadata makes the
        consumer rejoin on its next poll. With the topics cached, this asks nothing.
        """
        with kafka_errors(self._settings.kafka_bootstrap, "reading the topics' partitions"):
            for topic in (self._topics.rows, self._topics.dead_letters):
                if not consumer.partitions_for_topic(topic):
                    log.warning("Kafka has no partitions of %s yet; asked again", topic)

    def _check_broker(self, consumer: KafkaConsumer) -> None:
        """Report unhealthy while the group coordinator has not answered a heartbeat lately."""
        try:
            metrics = consumer.metrics()
            ago = metrics["consumer-coordinator-metrics"]["last-heartbeat-seconds-ago"]
        except Exception:
            return
        if BROKER_PATIENCE < ago < float("inf"):  # inf: no heartbeat yet (still joining)
            self.progress.report(
                f"Kafka at {self._settings.kafka_bootstrap} has not answered for {ago:.0f}s"
            )
        elif self.progress.problem is not None and self.progress.problem.startswith("Kafka at"):
            self.progress.report(None)

    def _retry(self, doing: str, attempt: Callable[[], T]) -> T:
        """`attempt()` until it succeeds, waiting out `SinkUnavailable` and `BrokerError`."""
        failures = 0
        while True:
            try:
                result = attempt()
            except (SinkUnavailable, BrokerError) as exc:
                failures += 1
                self.progress.retries += 1
                delay = self._backoff.delay(failures)
                self.progress.report(f"{doing}: {exc}")
                if isinstance(exc, SinkRejected):
                    log.error(
                        "%s refused (attempt %d), someone must act; retrying in %.1fs: %s",
                        doing,
                        failures,
                        delay,
                        exc,
                    )
                else:
                    log.warning(
                        "%s failed (attempt %d), retrying in %.1fs: %s", doing, failures, delay, exc
                    )
                if self._stop.wait(delay):
                    raise Stopped(doing) from exc
                continue
            if failures:
                log.info("%s succeeded after %d failed attempts", doing, failures)
                self.progress.report(None)
            return result
