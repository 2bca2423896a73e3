"""The contract's Kafka topics, created with the configured partition counts."""

from __future__ import annotations

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from journeys.schemas.errors import BrokerError
from journeys.schemas.settings import Settings

PUBLIC = ("events", "transitions", "alerts", "dead-letters")


def ensure_topics(settings: Settings, names: dict[str, int] | None = None) -> dict[str, int]:
    """Create missing topics (`name` without prefix -> partitions); existing ones are fine.

    Returns every asked topic's full name and its partition count.
    """
    wanted = names or {name: settings.topic_partitions for name in PUBLIC}
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=settings.kafka_bootstrap, request_timeout_ms=15000, bootstrap_timeout_ms=10000
        )
    except (KafkaError, OSError) as exc:
        raise BrokerError(
            f"cannot reach Kafka at {settings.kafka_bootstrap}: {exc}; start one with "
            "`journeys kafka start` or set JOURNEYS_KAFKA_BOOTSTRAP"
        ) from exc
    try:
        existing = set(admin.list_topics())
        missing = [
            NewTopic(settings.topic(name), partitions, 1)
            for name, partitions in wanted.items()
            if settings.topic(name) not in existing
        ]
        if missing:
            try:
                admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass
        described = admin.describe_topics([settings.topic(name) for name in wanted])
        return {d["name"]: len(d["partitions"]) for d in described}
    except KafkaError as exc:
        raise BrokerError(f"creating topics on {settings.kafka_bootstrap} failed: {exc}") from exc
    finally:
        admin.close()
