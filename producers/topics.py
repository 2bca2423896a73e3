"""The pipeline's Kafka topics: their names (spelled here only), partitions and configuration.

Contract topics (`events`, `transitions`, `alerts`, `dead-letters`) have
`JOURNEYS_TOPIC_PARTITIONS` partitions. Internal ones: `ordered` (one: the
identity stage's input), `journeys`, `rows` and the compacted changelog
`journeys-state` with `JOURNEYS_JOURNEY_PARTITIONS` each, and the compacted
changelog `identity-state` (one). The raw input topics (`events`,
`dead-letters`) keep messages `JOURNEYS_TOPIC_RETENTION` (`retention.ms`,
set when they are created); `internal.suppressions`, the suppression list
(`journeys.producers.suppressions`), is compacted and kept forever.

The two stage changelogs are where an erased person's aliases and tails end
as tombstones (`journeys forget`, docs/privacy.md), and a compacted topic
keeps the values a tombstone replaces until the log cleaner rewrites their
segment, and the tombstone itself (whose key names an alias) for
`delete.retention.ms` after that. So they are created with bounds derived
from `JOURNEYS_ERASE_WITHIN` (`erase_bounds`): segments roll, become
cleanable and drop their tombstones within a quarter of it each, and an
existing changelog with other bounds is brought to them. Every
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
#: The stage changelogs, which hold personal data until erased (see `erase_bounds`).
STATE = ("internal.identity-state", "internal.journeys-state")
#: Part of `JOURNEYS_ERASE_WITHIN` each step of the cleaner's path may take (`erase_bounds`).
_ERASE_STEPS = 4


def erase_bounds(erase_within_ms: int) -> dict[str, str]:
    """Compaction settings under which a value replaced by a tombstone, and the tombstone,
    are gone within about `erase_within_ms` while the changelog is written to: the active
    segment (never cleaned) rolls after `segment.ms`, a dirty record is cleaned at the
    latest `max.compaction.lag.ms` after it was written, and the tombstone is kept
    `delete.retention.ms` after its segment was cleaned (long enough for a worker reading
    the changelog to see it; a restore takes seconds). Each is a quarter of the bound, the
    last quarter left for the cleaner's own pace (`log.cleaner.backoff.ms`)."""
    step = str(max(1, erase_within_ms // _ERASE_STEPS))
    return {"segment.ms": step, "max.compaction.lag.ms": step, "delete.retention.ms": step}


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
            _raise_limits(admin, settings, sorted(set(full) & existing))
            _bound_compaction(admin, settings, sorted(set(full) & existing))
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
    """The configuration a topic is created with (and that an alteration keeps whole)."""
    compacted = {settings.topic(name) for name in COMPACTED}
    if full_name in {settings.topic(name) for name in RAW}:
        return {**TOPIC_CONFIG, "retention.ms": str(settings.topic_retention)}
    if full_name in {settings.topic(name) for name in STATE}:
        return {**CHANGELOG_CONFIG, **erase_bounds(settings.erase_within)}
    return CHANGELOG_CONFIG if full_name in compacted else TOPIC_CONFIG


def _bound_compaction(admin: object, settings: Settings, names: list[str]) -> None:
    """Give existing stage changelogs the compaction bounds of `JOURNEYS_ERASE_WITHIN`
    (a changelog made before the setting existed, or under another value)."""
    state = [name for name in names if name in {settings.topic(n) for n in STATE}]
    if not state:
        return
    wanted = erase_bounds(settings.erase_within)
    resources = [ConfigResource(ConfigResourceType.TOPIC, name, list(wanted)) for name in state]
    described = admin.describe_configs(resources, config_filter="all")  # type: ignore[attr-defined]
    stale = [
        name
        for name, configs in described.get("topic", {}).items()
        if any(configs.get(key, {}).get("value") != value for key, value in wanted.items())
    ]
    if stale:  # the whole configuration: an alteration replaces the topic's set
        admin.alter_configs(  # type: ignore[attr-defined]
            [ConfigResource(ConfigResourceType.TOPIC, n, _config(settings, n)) for n in stale]
        )


def _raise_limits(admin: object, settings: Settings, names: list[str]) -> None:
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
            [
                ConfigResource(ConfigResourceType.TOPIC, name, _config(settings, name))
                for name in low
            ]
        )
