"""The suppression list on Kafka: the compacted topic `journeys.internal.suppressions`.

Why a topic: the collector and the workers must drop a forgotten person's
events, and in a real deployment neither reads ClickHouse (the embedded
engine belongs to the sink alone; a server may sit behind another network).
Every process already reads Kafka. A compacted topic keyed by the hash keeps
every hash forever in little space, is read from the start when a process
starts (`SuppressionFollower.start` returns once it reached the end, so no
event is screened against half a list) and followed afterwards, so a
request reaches every running process within a poll. `privacy_suppressions`
in ClickHouse keeps the same hashes for `journeys replay` and the audit.

Values name the request only; the key is the salted hash; nothing names a
person.

The erasure of the workers' engine state does not ride on this topic: the
suppression list is read by many processes at their own pace, while the
identity stage's decisions must sit at one place among the events it routes.
`publish_forget` puts a `forget` control message on the ordered topic, the
stage's one sequenced input (the same hashes, and the erased event ids).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable

import orjson
from kafka import KafkaConsumer, TopicPartition

from journeys.producers.control import ORDERED, publish_ordered
from journeys.producers.kafka import kafka_errors, new_producer
from journeys.producers.topics import ensure_topics
from journeys.schemas.errors import BrokerError
from journeys.schemas.privacy import PrivacyGate
from journeys.schemas.settings import Settings

log = logging.getLogger(__name__)

TOPIC = "internal.suppressions"
#: How long one poll of the follower waits (also how soon it notices `close`).
POLL_SECONDS = 0.5


def ensure_suppressions_topic(settings: Settings) -> str:
    """Create the compacted topic when missing; its full name."""
    ensure_topics(settings, {TOPIC: 1})
    return settings.topic(TOPIC)


def check_publishable(settings: Settings) -> None:
    """Make sure the suppression and ordered topics can be reached before anything is
    erased (`BrokerError` if not): a request that erased ClickHouse rows but could not
    tell the workers would leave the person in their engine state."""
    with kafka_errors(settings.kafka_bootstrap, "reaching Kafka before erasing"):
        ensure_topics(settings, {TOPIC: 1, ORDERED: 1})


def publish_suppressions(
    settings: Settings, hashes: Iterable[str], request_id: str, timeout: float = 15.0
) -> int:
    """Put hashes on the topic and wait for Kafka's acknowledgement; how many."""
    keys = sorted(set(hashes))
    if not keys:
        return 0
    topic = ensure_suppressions_topic(settings)
    value = orjson.dumps({"request_id": request_id, "added_at": int(time.time() * 1000)})
    producer = new_producer(settings, timeout=timeout)
    try:
        with kafka_errors(settings.kafka_bootstrap, "publishing the suppression list"):
            for key in keys:
                producer.send(topic, key=key.encode(), value=value)
            producer.flush(timeout=timeout)
    finally:
        producer.close(timeout=timeout)
    return len(keys)


def publish_forget(
    settings: Settings,
    request_id: str,
    hashes: Iterable[str],
    accounts: Iterable[str],
    event_ids: Iterable[str],
    version: int = 0,
    timeout: float = 15.0,
) -> int:
    """Tell the running workers' identity stage to forget a person: `forget` control
    messages (`journeys.schemas.codec.forget_json`) on the ordered topic, its one
    sequenced input, so the erasure is decided in order with the events and the same way
    when the stage reads the topic again (`journeys.streams.erasure`). Waits for Kafka's
    acknowledgement; how many messages."""
    from journeys.schemas.codec import forget_json

    messages = forget_json(request_id, hashes, accounts, event_ids, version)
    return publish_ordered(settings, messages, "telling the workers to forget", timeout)


class SuppressionFollower:
    """Reads the topic from its start into a gate, then follows it on a thread."""

    def __init__(self, settings: Settings, gate: PrivacyGate) -> None:
        self._settings = settings
        self._gate = gate
        self._consumer: KafkaConsumer | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: Whether the whole list up to the end seen at start was read.
        self.ready = False

    def start(self, timeout: float = 30.0) -> None:
        """Read the list up to its current end (raising `BrokerError` if Kafka cannot give
        it within `timeout`), then keep following it on a thread."""
        topic = ensure_suppressions_topic(self._settings)
        bootstrap = self._settings.kafka_bootstrap
        with kafka_errors(bootstrap, "reading the suppression list"):
            consumer = KafkaConsumer(
                bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False
            )
            partitions = [
                TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or {0}
            ]
            consumer.assign(partitions)
            consumer.seek_to_beginning(*partitions)
            ends = consumer.end_offsets(partitions)
        self._consumer = consumer
        deadline = time.monotonic() + timeout
        while any(consumer.position(p) < ends[p] for p in partitions):
            if time.monotonic() > deadline:
                self.close()
                raise BrokerError(f"the suppression list on {topic} was not read in {timeout:.0f}s")
            self._poll()
        if self._stop.is_set():  # closed while reading
            self.close()
            return
        self.ready = True
        self._thread = threading.Thread(target=self._follow, name="suppressions", daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        with kafka_errors(self._settings.kafka_bootstrap, "following the suppression list"):
            batches = consumer.poll(timeout_ms=int(POLL_SECONDS * 1000))
        hashes = [m.key.decode() for batch in batches.values() for m in batch if m.key]
        if hashes:
            self._gate.suppress(hashes)

    def _follow(self) -> None:
        while not self._stop.is_set():
            try:
                self._poll()
            except BrokerError as exc:  # keep the list held so far; try again
                log.warning("suppression list: %s", exc)
                self._stop.wait(POLL_SECONDS)

    def close(self) -> None:
        """Stop following and disconnect."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None


def followed_gate(
    settings: Settings, timeout: float = 30.0
) -> tuple[PrivacyGate, SuppressionFollower]:
    """A process's privacy gate (the consent settings, the salt) with the whole list read,
    and its follower (close it when the process stops): what a worker's ingest screens
    with (`journeys.streams.ingest.split`)."""
    from journeys.sinks.privacy_salt import privacy_salt

    gate = PrivacyGate(settings.consent_category, settings.consent_mode, privacy_salt(settings))
    follower = SuppressionFollower(settings, gate)
    follower.start(timeout)
    return gate, follower
