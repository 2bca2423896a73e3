"""The sink process: the pipeline's output topics into a sink, offsets committed after writes.

Reads the ordered internal `rows` topic (events, transitions, journeys,
alerts, identity links, in the order the journey stage produced them) and the
`dead-letters` topic, hands each poll's rows to a `Sink` and commits the
offsets only once `flush()` succeeded. A crash between the write and the
commit re-delivers rows the sink already wrote; the writes are idempotent, so
nothing changes twice and nothing is lost.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from kafka import KafkaConsumer
from kafka.errors import KafkaError

from journeys.schemas.codec import decode_dead_letter, decode_rows
from journeys.schemas.errors import BrokerError, SinkUnavailable
from journeys.schemas.rows import (
    AlertRow,
    DeadLetterRow,
    IdentityLink,
    JourneyRow,
    Output,
    StoredEvent,
    TransitionRow,
)
from journeys.schemas.settings import Settings
from journeys.sinks.base import Sink

log = logging.getLogger(__name__)

POLL_RECORDS = 50_000


@dataclass
class SinkProgress:
    """What the sink process has written so far."""

    rows: int = 0
    batches: int = 0
    last_write_at: float = 0.0


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
    return out


class TopicSink:
    """Consume the output topics into a sink until stopped."""

    def __init__(self, settings: Settings, sink: Sink) -> None:
        self._settings = settings
        self._sink = sink
        self._consumer: KafkaConsumer | None = None
        self._stop = threading.Event()
        self.progress = SinkProgress()

    def setup(self) -> None:
        """Connect to Kafka and to the sink."""
        settings = self._settings
        self._sink.setup()
        try:
            self._consumer = KafkaConsumer(
                settings.topic("internal.rows"),
                settings.topic("dead-letters"),
                bootstrap_servers=settings.kafka_bootstrap,
                group_id=f"{settings.topic_prefix}journeys-sink",
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                max_poll_records=POLL_RECORDS,
                fetch_max_bytes=64 * 1024 * 1024,
                max_partition_fetch_bytes=16 * 1024 * 1024,
            )
        except KafkaError as exc:
            raise BrokerError(
                f"cannot reach Kafka at {settings.kafka_bootstrap}: {exc}; "
                "start it with `journeys kafka start` or set JOURNEYS_KAFKA_BOOTSTRAP"
            ) from exc

    def stop(self) -> None:
        """Ask the loop to finish its current batch and return."""
        self._stop.set()

    def run(self, on_batch: Callable[[SinkProgress], None] | None = None) -> None:
        """Poll, write, commit, until `stop()`."""
        consumer = self._consumer
        if consumer is None:
            raise RuntimeError("call setup() first")
        dead_letters_topic = self._settings.topic("dead-letters")
        try:
            while not self._stop.is_set():
                polled = consumer.poll(timeout_ms=200, max_records=POLL_RECORDS)
                if not polled:
                    continue
                rows: list[object] = []
                for tp, messages in sorted(polled.items(), key=lambda kv: (kv[0].topic, kv[0].partition)):
                    for message in messages:
                        if tp.topic == dead_letters_topic:
                            rows.append(decode_dead_letter(message.value))
                        else:
                            rows.extend(decode_rows(message.value))
                self._write(rows_output(rows))
                consumer.commit()
                self.progress.rows += len(rows)
                self.progress.batches += 1
                self.progress.last_write_at = time.monotonic()
                if on_batch is not None:
                    on_batch(self.progress)
        finally:
            consumer.close(autocommit=False)
            self._sink.close()

    def _write(self, output: Output) -> None:
        for attempt in range(1, 6):
            try:
                self._sink.add(output)
                self._sink.flush()
                return
            except SinkUnavailable as exc:
                if attempt == 5:
                    raise
                log.warning("write failed (attempt %d), retrying: %s", attempt, exc)
                time.sleep(0.5 * attempt)
