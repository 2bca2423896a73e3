"""The session's real Kafka broker, shared with the Kafka tests (same fixture, same broker)."""

from tests.integration.kafka.conftest import kafka_bootstrap, topic_prefix

__all__ = ["kafka_bootstrap", "topic_prefix"]
