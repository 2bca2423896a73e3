"""The producer client for services that emit events.

`acks=all` and the idempotent producer, so an acknowledged event is on every
in-sync replica exactly once; batching and compression for throughput; and a
key per event that keeps one account's (or one visitor's) events in order
on one partition. `send` blocks until Kafka acknowledged everything it was
given, so a caller that got no exception may acknowledge its own input.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from kafka import KafkaProducer

from journeys.producers.kafka import kafka_errors, new_producer
from journeys.producers.topics import Topics
from journeys.schemas.codec import dead_letter_json
from journeys.schemas.errors import BrokerError
from journeys.schemas.identity import email_account
from journeys.schemas.record import EventRecord
from journeys.schemas.rows import DeadLetterRow
from journeys.schemas.settings import Settings


def partition_key(record: EventRecord) -> bytes:
    """The account when the event names one, else the visitor: one key keeps one order."""
    if record.account_id:
        return record.account_id.encode()
    if record.email:
        return email_account(record.email).encode()
    if record.contact_id:
        return f"contact:{record.contact_id}".encode()
    return f"anonymous:{record.anonymous_id or ''}".encode()


class EventProducer:
    """Sends events (and dead letters) to Kafka and waits for the acknowledgements."""

    def __init__(self, settings: Settings, timeout: float = 30.0) -> None:
        self._settings = settings
        self._topics = Topics.of(settings)
        self._timeout = timeout
        self._producer: KafkaProducer | None = None

    def start(self) -> None:
        """Connect to the brokers."""
        self._producer = new_producer(self._settings, self._timeout)

    @property
    def _client(self) -> KafkaProducer:
        if self._producer is None:
            raise BrokerError("the producer is not started; call start() first")
        return self._producer

    def _send(self, topic: str, messages: Iterable[tuple[bytes | None, bytes]]) -> None:
        """Send (key, value) pairs; return once Kafka acknowledged every one."""
        client = self._client
        with kafka_errors(self._settings.kafka_bootstrap, f"sending to {topic}"):
            futures = [client.send(topic, key=key, value=value) for key, value in messages]
            client.flush(timeout=self._timeout)
            for future in futures:
                future.get(timeout=self._timeout)

    def send(self, records: Sequence[EventRecord]) -> None:
        """Send events keyed by account or visitor; return once all are acknowledged."""
        self._send(self._topics.events, ((partition_key(r), r.to_json()) for r in records))

    def send_raw(self, values: Sequence[bytes], key: bytes | None = None) -> None:
        """Send raw lines as they are (bulk loads, replays of files); unkeyed by default."""
        self._send(self._topics.events, ((key, value) for value in values))

    def send_dead_letters(self, rows: Sequence[DeadLetterRow]) -> None:
        """Send rejected input to the dead-letter topic (large payloads cut, see codec)."""
        self._send(self._topics.dead_letters, ((None, dead_letter_json(row)) for row in rows))

    def close(self) -> None:
        """Flush and disconnect."""
        if self._producer is not None:
            producer, self._producer = self._producer, None
            with kafka_errors(self._settings.kafka_bootstrap, "closing the producer"):
                producer.close(timeout=self._timeout)
