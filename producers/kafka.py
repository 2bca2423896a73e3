"""Kafka in one place: how the project's clients are built, and what their errors mean.

Every client the project opens (the producer client, the sink's consumer,
the admin client, the Faust app's producer and consumer) takes its options
from here, so the sizes of `journeys.schemas.codec` hold everywhere:
`max_request_size` is `MESSAGE_BYTES`, and consumers fetch at least that.
Consumers read `read_committed`: the stages write their output in Kafka
transactions (`journeys.streams.changelog.StageWriter`), and a reader must
never see a batch that was aborted.

`kafka_errors()` is the one translation of driver errors (kafka-python's,
aiokafka's, and socket errors) into `BrokerError`, in the manner of httpx's
`map_httpcore_exceptions`: wrap a call in it where Kafka enters the project.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import aiokafka.errors
import kafka.errors
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer

from journeys.schemas.codec import MESSAGE_BYTES
from journeys.schemas.errors import BrokerError
from journeys.schemas.settings import Settings

#: Fetch sizes: a partition's fetch holds at least one largest message, a fetch several.
PARTITION_FETCH_BYTES = 4 * MESSAGE_BYTES
FETCH_BYTES = 16 * MESSAGE_BYTES

_DRIVER_ERRORS = (kafka.errors.KafkaError, aiokafka.errors.KafkaError, OSError)
_UNREACHABLE = (
    kafka.errors.KafkaConnectionError,
    kafka.errors.KafkaTimeoutError,
    kafka.errors.NodeNotReadyError,
    aiokafka.errors.KafkaConnectionError,
    aiokafka.errors.KafkaTimeoutError,
    aiokafka.errors.NodeNotReadyError,
    aiokafka.errors.RequestTimedOutError,
    kafka.errors.RequestTimedOutError,
    OSError,
)
_TOO_LARGE = (
    kafka.errors.MessageSizeTooLargeError,
    aiokafka.errors.MessageSizeTooLargeError,
)


def driver_error(exc: BaseException) -> BaseException | None:
    """The Kafka driver (or socket) error behind `exc`, following `__cause__`; else None."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, _DRIVER_ERRORS):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def explain(bootstrap: str, doing: str, exc: BaseException) -> str:
    """What went wrong with Kafka at `bootstrap` while `doing`, and what to do next."""
    if isinstance(exc, _TOO_LARGE):
        return (
            f"Kafka at {bootstrap} refused a message while {doing}: {exc} "
            f"(the project's limit is {MESSAGE_BYTES:,} bytes per message)"
        )
    if isinstance(exc, _UNREACHABLE):
        return (
            f"cannot reach Kafka at {bootstrap} while {doing}: {exc}; start one with "
            "`journeys kafka start` or set JOURNEYS_KAFKA_BOOTSTRAP"
        )
    return f"Kafka at {bootstrap} failed while {doing}: {exc!r}"


def unreachable(exc: BaseException) -> bool:
    """Whether an error (or the driver error behind it) means Kafka could not be reached."""
    cause = driver_error(exc) if not isinstance(exc, BrokerError) else exc.__cause__
    return isinstance(cause, _UNREACHABLE)


@contextmanager
def kafka_errors(bootstrap: str, doing: str) -> Iterator[None]:
    """Translate driver errors raised inside into `BrokerError` (with the driver's as cause)."""
    try:
        yield
    except BrokerError:
        raise
    except Exception as exc:
        cause = driver_error(exc)
        if cause is None:
            raise
        raise BrokerError(explain(bootstrap, doing, cause)) from exc


def new_producer(settings: Settings, timeout: float = 30.0, **options: Any) -> KafkaProducer:
    """A kafka-python producer: acks from all in-sync replicas, idempotent, batched."""
    config: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": 5,
        "batch_size": 256 * 1024,
        "compression_type": "gzip",
        "max_request_size": MESSAGE_BYTES,
        "request_timeout_ms": int(timeout * 1000),
        **options,
    }
    with kafka_errors(settings.kafka_bootstrap, "connecting a producer"):
        return KafkaProducer(**config)


def new_consumer(settings: Settings, *topics: str, group: str, **options: Any) -> KafkaConsumer:
    """A kafka-python consumer in `group` (prefixed), committing only when told to, that
    reads only committed transactions (the stages write in transactions)."""
    config: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "group_id": f"{settings.topic_prefix}{group}",
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "isolation_level": "read_committed",
        "fetch_max_bytes": FETCH_BYTES,
        "max_partition_fetch_bytes": PARTITION_FETCH_BYTES,
        **options,
    }
    with kafka_errors(settings.kafka_bootstrap, "connecting a consumer"):
        return KafkaConsumer(*topics, **config)


def new_admin(settings: Settings, timeout: float = 15.0) -> KafkaAdminClient:
    """An admin client (topic creation and configuration); `timeout` bounds each request."""
    with kafka_errors(settings.kafka_bootstrap, "connecting the admin client"):
        return KafkaAdminClient(
            bootstrap_servers=settings.kafka_bootstrap,
            request_timeout_ms=int(timeout * 1000),
            bootstrap_timeout_ms=int(min(timeout, 10.0) * 1000),
        )


def aio_producer_options(settings: Settings) -> dict[str, Any]:
    """Options of an aiokafka producer (`AIOKafkaProducer(**aio_producer_options(s))`) with
    the project's acks and size limit, for asyncio processes outside Faust."""
    return {
        "bootstrap_servers": settings.kafka_bootstrap,
        "acks": "all",
        "enable_idempotence": True,
        "max_request_size": MESSAGE_BYTES,
    }


def aio_consumer_options(settings: Settings, group: str) -> dict[str, Any]:
    """Options of an aiokafka consumer in `group` (prefixed) that commits only when told to
    and reads only committed transactions."""
    return {
        "bootstrap_servers": settings.kafka_bootstrap,
        "group_id": f"{settings.topic_prefix}{group}",
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "isolation_level": "read_committed",
        "max_partition_fetch_bytes": PARTITION_FETCH_BYTES,
    }


def faust_options(settings: Settings) -> dict[str, Any]:
    """The Kafka options of the Faust app (`faust.App(**faust_options(settings), ...)`).

    Acks from all replicas; sends wait out a broker outage of up to
    `producer_request_timeout` (20 minutes) before they fail; fetches take
    the largest message. A worker that stopped without leaving the group (a
    failed send stops it at once) gives its partitions up after the session
    timeout (`kafka_session_timeout`, 20 s; Faust's default is 60 s;
    heartbeats run on the consumer's own thread, so a busy worker still sends
    them, six per timeout).
    """
    return {
        "broker": f"kafka://{settings.kafka_bootstrap}",
        "producer_acks": -1,
        "producer_max_request_size": MESSAGE_BYTES,
        "producer_request_timeout": 1200.0,
        "consumer_max_fetch_size": PARTITION_FETCH_BYTES,
        "consumer_auto_offset_reset": "earliest",
        "broker_session_timeout": settings.kafka_session_timeout,
        "broker_heartbeat_interval": min(3.0, settings.kafka_session_timeout / 6),
        "topic_replication_factor": 1,
        "topic_partitions": settings.topic_partitions,
    }


def uncommitted(settings: Settings) -> tuple[int, int]:
    """(consumer groups of the settings' topic prefix, messages they have not committed yet
    over every partition of every topic they committed anything on)."""
    from kafka import TopicPartition

    admin = new_admin(settings)
    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    try:
        groups = [
            g["group_id"]
            for g in admin.list_groups()
            if g["group_id"].startswith(settings.topic_prefix)
        ]
        behind = 0
        for offsets in admin.list_group_offsets(dict.fromkeys(groups)).values():
            done = {tp: meta.offset for tp, meta in offsets.items() if meta.offset >= 0}
            tps = [
                TopicPartition(topic, p)
                for topic in {tp.topic for tp in done}
                for p in sorted(consumer.partitions_for_topic(topic) or ())
            ]
            ends = consumer.end_offsets(tps)
            behind += sum(unread(consumer, tp, done.get(tp, 0), ends[tp]) for tp in tps)
        return len(groups), behind
    finally:
        consumer.close()
        admin.close()


def unread(consumer: KafkaConsumer, tp: Any, committed: int, end: int) -> int:
    """Messages of `tp` from `committed` to `end` that a `read_committed` reader gets: 0 when
    that range holds only transaction markers or aborted records (a consumer that read
    all of a transactional producer's output commits the offset before its last
    transaction's marker), else `end - committed`. `consumer` must read committed."""
    if end <= committed:
        return 0
    consumer.assign([tp])
    consumer.seek(tp, committed)
    for _ in range(20):  # a fetch or two in practice; bounded if the broker stalls
        polled = consumer.poll(timeout_ms=500, max_records=1)
        if any(record.offset < end for record in polled.get(tp, ())):
            return end - committed
        if consumer.position(tp) >= end:
            return 0
    return end - committed
