"""The pipeline's Kafka topics: their names (spelled here only), partitions and configuration.

Contract topics (`events`, `transitions`, `alerts`, `dead-letters`) have
`JOURNEYS_TOPIC_PARTITIONS` partitions. Internal ones: `ordered` (one: the
identity stage's input), `journeys`, `rows` and the compacted changelog
`journeys-state` with `JOURNEYS_JOURNEY_PARTITIONS` each, and the compacted
changelog `identity-state` (one). The raw input topics (`events`,
`dead-letters`) keep messages `JOURNEYS_TOPIC_RETENTION` (`retention.ms`,
set when they are created); `internal.suppressions`, the suppression list
(`journeys.producers.suppressions`), is compacted and kept forever. Every
topic is created with `max.message.bytes` = `MESSAGE_BYTES`; an existing
topic with a smaller limit is raised to it, and one with fewer partitions
than asked gets more (a journeys topic never changes its count once it has
data: see `check_journey_partitions`).
"""

from __future__ import annotations

from dataclasses import dataclass

from kafka.admin import ConfigResource, ConfigResourceType, NewPartitions
from kafka.errors import TopicAlreadyExistsError

from journeys.producers.kafka import kafka_errors, new_admin
from journeys.schemas.codec import MESSAGE_BYTES
from journeys.schemas.errors import BrokerError
from journeys.schemas.settings import Settings

PUBLIC = ("events", "transitions", "alerts", "dead-letters")
INTERNAL = (
    "internal.ordered", "internal.rows", "internal.journeys", "internal.identity-state",
    "internal.journeys-state",
)  # fmt: skip
#: Changelogs and the suppression list: compacted, never expired by age (the last value
#: of every key is state).
COMPACTED = ("internal.identity-state", "internal.journeys-state", "internal.suppressions")
#: Topics holding raw input (personal data): kept `JOURNEYS_TOPIC_RETENTION` (docs/privacy.md).
RAW = ("events", "dead-letters")
#: Topics whose partition count never changes once created (journeys are placed by key).
FIXED = ("internal.journeys", "internal.journeys-state")
#: Topic configuration the project sets on purpose.
TOPIC_CONFIG = {"max.message.bytes": str(MESSAGE_BYTES)}
CHANGELOG_CONFIG = {**TOPIC_CONFIG, "cleanup.policy": "compact", "retention.ms": "-1"}


@dataclass(frozen=True)
class Topics:
    """The full names of the pipeline's topics (with `JOURNEYS_TOPIC_PREFIX`)."""

    events: str
    transitions: str
    alerts: str
    dead_letters: str
    ordered: str
    rows: str
    journeys: str
    identity_state: str
    journeys_state: str

    @classmethod
    def of(cls, settings: Settings) -> Topics:
        """The names for these settings."""
        return cls(*(settings.topic(name) for name in (*PUBLIC, *INTERNAL)))


def pipeline_layout(settings: Settings) -> dict[str, int]:
    """Every topic of the pipeline (name without prefix) and its partition count."""
    journeys = settings.journey_partitions
    return {
        **{name: settings.topic_partitions for name in PUBLIC},
        "internal.ordered": 1,
        "internal.rows": journeys,
        "internal.journeys": journeys,
        "internal.identity-state": 1,
        "internal.journeys-state": journeys,
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
                    "configs": dict(_config(settings, name)),
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
            counts = {d["name"]: len(d["partitions"]) for d in described}
            more = {
                name: NewPartitions(partitions)
                for name, partitions in full.items()
                if name in existing
                and counts.get(name, partitions) < partitions
                and name not in {settings.topic(fixed) for fixed in FIXED}
            }
            if more:
                admin.create_partitions(more)
                counts.update({name: full[name] for name in more})
            return counts
    finally:
        admin.close()


def ensure_pipeline_topics(settings: Settings) -> int:
    """Make sure every pipeline topic exists; the events topic's partition count."""
    counts = ensure_topics(settings, pipeline_layout(settings))
    partitions = counts.get(settings.topic("events"), 0)
    if not partitions:
        raise BrokerError(f"topic {settings.topic('events')} has no partitions")
    check_journey_partitions(settings, counts)
    return partitions


def check_journey_partitions(settings: Settings, counts: dict[str, int]) -> None:
    """The journey stage's topics must have `JOURNEYS_JOURNEY_PARTITIONS` partitions each:
    a journey's partition is its key's hash modulo that count."""
    wanted = settings.journey_partitions
    for name in FIXED:
        full = settings.topic(name)
        if counts.get(full, wanted) != wanted:
            raise BrokerError(
                f"topic {full} has {counts[full]} partitions, but JOURNEYS_JOURNEY_PARTITIONS "
                f"is {wanted}: set it to {counts[full]}, or use a new JOURNEYS_TOPIC_PREFIX "
                "and `journeys replay` the input into it"
            )


def _config(settings: Settings, full_name: str) -> dict[str, str]:
    compacted = {settings.topic(name) for name in COMPACTED}
    if full_name in {settings.topic(name) for name in RAW}:
        return {**TOPIC_CONFIG, "retention.ms": str(settings.topic_retention)}
    return CHANGELOG_CONFIG if full_name in compacted else TOPIC_CONFIG


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
