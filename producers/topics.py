"""The pipeline's Kafka topics: their names (spelled here only), partitions and configuration.

Contract topics (`events`, `transitions`, `alerts`, `dead-letters`) have
`JOURNEYS_TOPIC_PARTITIONS` partitions; the internal `ordered` and `rows`
topics one each (the journey stage is one ordered stream). Every topic is
created with `max.message.bytes` = `MESSAGE_BYTES`; an existing topic with a
smaller limit is raised to it.
"""

from __future__ import annotations

from dataclasses import dataclass

from kafka.admin import ConfigResource, ConfigResourceType
from kafka.errors import TopicAlreadyExistsError

from journeys.producers.kafka import kafka_errors, new_admin
from journeys.schemas.codec import MESSAGE_BYTES
from journeys.schemas.errors import BrokerError
from journeys.schemas.settings import Settings

PUBLIC = ("events", "transitions", "alerts", "dead-letters")
INTERNAL = ("internal.ordered", "internal.rows")
#: Topic configuration the project sets on purpose.
TOPIC_CONFIG = {"max.message.bytes": str(MESSAGE_BYTES)}


@dataclass(frozen=True)
class Topics:
    """The full names of the pipeline's topics (with `JOURNEYS_TOPIC_PREFIX`)."""

    events: str
    transitions: str
    alerts: str
    dead_letters: str
    ordered: str
    rows: str

    @classmethod
    def of(cls, settings: Settings) -> Topics:
        """The names for these settings."""
        return cls(*(settings.topic(name) for name in (*PUBLIC, *INTERNAL)))


def pipeline_layout(settings: Settings) -> dict[str, int]:
    """Every topic of the pipeline (name without prefix) and its partition count."""
    return {
        **{name: settings.topic_partitions for name in PUBLIC},
        **{name: 1 for name in INTERNAL},
    }


def ensure_topics(settings: Settings, names: dict[str, int] | None = None) -> dict[str, int]:
    """Create missing topics (`name` without prefix -> partitions); existing ones are fine.

    Returns every asked topic's full name and its partition count.
    """
    wanted = names or {name: settings.topic_partitions for name in PUBLIC}
    full = {settings.topic(name): partitions for name, partitions in wanted.items()}
    admin = new_admin(settings)
    try:
        with kafka_errors(settings.kafka_bootstrap, "creating topics"):
            existing = set(admin.list_topics())
            missing = {
                name: {
                    "num_partitions": partitions,
                    "replication_factor": 1,
                    "configs": dict(TOPIC_CONFIG),
                }
                for name, partitions in full.items()
                if name not in existing
            }
            if missing:
                try:
                    admin.create_topics(missing, wait_for_metadata=True)
                except TopicAlreadyExistsError:
                    pass
            _raise_limits(admin, sorted(set(full) & existing))
            described = admin.describe_topics(list(full))
            return {d["name"]: len(d["partitions"]) for d in described}
    finally:
        admin.close()


def ensure_pipeline_topics(settings: Settings) -> int:
    """Make sure every pipeline topic exists; the events topic's partition count."""
    counts = ensure_topics(settings, pipeline_layout(settings))
    partitions = counts.get(settings.topic("events"), 0)
    if not partitions:
        raise BrokerError(f"topic {settings.topic('events')} has no partitions")
    return partitions


def _raise_limits(admin: object, names: list[str]) -> None:
    """Raise `max.message.bytes` of existing topics that allow less than `MESSAGE_BYTES`."""
    if not names:
        return
    key = "max.message.bytes"
    resources = [ConfigResource(ConfigResourceType.TOPIC, name, [key]) for name in names]
    described = admin.describe_configs(resources, config_filter="all")  # type: ignore[attr-defined]
    low = [
        name
        for name, configs in described.get("topic", {}).items()
        if int(configs.get(key, {}).get("value") or 0) < MESSAGE_BYTES
    ]
    if low:
        admin.alter_configs(  # type: ignore[attr-defined]
            [ConfigResource(ConfigResourceType.TOPIC, name, dict(TOPIC_CONFIG)) for name in low]
        )
