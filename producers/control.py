"""Control messages for the running workers, through their one sequenced input.

`journeys forget` and `journeys rebuild` tell the identity stage something
on the ordered topic (`internal.ordered`, one partition): a decision taken
there is taken in order with the events, and the same way when the stage
reads the topic again after a crash.
"""

from __future__ import annotations

from collections.abc import Sequence

from journeys.producers.kafka import kafka_errors, new_producer
from journeys.producers.topics import ensure_topics
from journeys.schemas.settings import Settings

#: The identity stage's sequenced input (the streams' `internal.ordered`).
ORDERED = "internal.ordered"


def publish_ordered(
    settings: Settings, messages: Sequence[bytes], what: str, timeout: float = 15.0
) -> int:
    """Put control messages on the ordered topic and wait for Kafka's acknowledgement of
    each; `what` names the request in errors. How many messages."""
    ensure_topics(settings, {ORDERED: 1})  # the pipeline's layout: one partition
    producer = new_producer(settings, timeout=timeout)
    try:
        with kafka_errors(settings.kafka_bootstrap, what):
            topic = settings.topic(ORDERED)
            sent = [producer.send(topic, value=message, partition=0) for message in messages]
            producer.flush(timeout=timeout)
            for future in sent:  # raises what the broker refused
                future.get(timeout=timeout)
    finally:
        producer.close(timeout=timeout)
    return len(messages)


def publish_rebuild(settings: Settings, generation: int, rules: str) -> None:
    """Tell the workers to derive everything again with `rules` (TOML text) as generation
    `generation` (`journeys.schemas.codec.rebuild_json`)."""
    from journeys.schemas.codec import rebuild_json

    publish_ordered(settings, [rebuild_json(generation, rules)], "asking the workers to rebuild")
