"""The producer client for services that emit events.

`acks=all` and the idempotent producer, so an acknowledged event is on every
in-sync replica exactly once; batching and compression for throughput; and a
key per event that keeps one account's (or one visitor's) events in order
on one partition. `send` blocks until Kafka acknowledged everything it was
given, so a caller that got no exception may acknowledge its own input.
"""

from __future__ import annotations

from collections.abc import Sequence

from kafka import KafkaProducer
from kafka.errors import KafkaError

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
        self._timeout = timeout
        self._producer: KafkaProducer | None = None

    def start(self) -> None:
        """Connect to the brokers."""
        try:
            self._producer = KafkaProducer(
                bootstrap_servers=self._settings.kafka_bootstrap,
                acks="all",
                enable_idempotence=True,
                linger_ms=5,
                batch_size=256 * 1024,
                compression_type="gzip",
                max_request_size=8 * 1024 * 1024,
                request_timeout_ms=int(self._timeout * 1000),
            )
        except (KafkaError, OSError) as exc:
            raise BrokerError(
                f"cannot reach Kafka at {self._settings.kafka_bootstrap}: {exc}; start one with "
                "`journeys kafka start` or set JOURNEYS_KAFKA_BOOTSTRAP"
            ) from exc

    @property
    def _client(self) -> KafkaProducer:
        if self._producer is None:
            raise BrokerError("the producer is not started; call start() first")
        return self._producer

    def _wait(self, futures: list[object]) -> None:
        try:
            self._client.flush(timeout=self._timeout)
            for future in futures:
                future.get(timeout=self._timeout)  # type: ignore[attr-defined]
        except KafkaError as exc:
            raise BrokerError(f"Kafka did not acknowledge the events: {exc}") from exc

    def send(self, records: Sequence[EventRecord]) -> None:
        """Send events keyed by account or visitor; return once all are acknowledged."""
        topic = self._settings.topic("events")
        futures = [self._client.send(topic, key=partition_key(r), value=r.to_json()) for r in records]
        self._wait(futures)

    def send_raw(self, values: Sequence[bytes], key: bytes | None = None) -> None:
        """Send raw lines as they are (bulk loads, replays of files); unkeyed by default."""
        topic = self._settings.topic("events")
        futures = [self._client.send(topic, key=key, value=value) for value in values]
        self._wait(futures)

    def send_dead_letters(self, rows: Sequence[DeadLetterRow]) -> None:
        """Send rejected input to the dead-letter topic."""
        topic = self._settings.topic("dead-letters")
        futures = [self._client.send(topic, value=dead_letter_json(row)) for row in rows]
        self._wait(futures)

    def close(self) -> None:
        """Flush and disconnect."""
        if self._producer is not None:
            self._producer.close(timeout=self._timeout)
            self._producer = None
