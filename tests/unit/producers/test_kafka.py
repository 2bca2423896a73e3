"""Kafka's driver errors become BrokerError in one place, with what to do next."""

from __future__ import annotations

import aiokafka.errors
import kafka.errors
import pytest

from journeys.producers.kafka import driver_error, kafka_errors, unreachable
from journeys.schemas.codec import MESSAGE_BYTES
from journeys.schemas.errors import BrokerError


@pytest.mark.parametrize(
    "error",
    [
        kafka.errors.KafkaConnectionError("closed"),
        kafka.errors.KafkaTimeoutError("Unable to bootstrap"),
        aiokafka.errors.KafkaConnectionError("closed"),
        aiokafka.errors.RequestTimedOutError(),
        ConnectionRefusedError(111, "refused"),
    ],
)
def test_unreachable_brokers_say_how_to_start_one(error: Exception) -> None:
    with pytest.raises(BrokerError, match="cannot reach Kafka at h:1 while sending.*kafka start"):
        with kafka_errors("h:1", "sending"):
            raise error
    assert unreachable(error)


@pytest.mark.parametrize(
    "error", [kafka.errors.MessageSizeTooLargeError(), aiokafka.errors.MessageSizeTooLargeError()]
)
def test_a_refused_message_names_the_limit(error: Exception) -> None:
    with pytest.raises(BrokerError, match=f"{MESSAGE_BYTES:,} bytes") as caught:
        with kafka_errors("h:1", "sending"):
            raise error
    assert caught.value.__cause__ is error and not unreachable(error)


def test_a_wrapped_driver_error_is_found_behind_its_wrapper() -> None:
    class SendFailed(Exception):  # what Faust raises around aiokafka's errors
        pass

    cause = aiokafka.errors.KafkaConnectionError("closed")
    try:
        try:
            raise cause
        except Exception as exc:
            raise SendFailed("send") from exc
    except SendFailed as wrapper:
        assert driver_error(wrapper) is cause and unreachable(wrapper)


def test_other_errors_pass_through_untouched() -> None:
    with pytest.raises(ValueError, match="not Kafka"):
        with kafka_errors("h:1", "sending"):
            raise ValueError("not Kafka")
