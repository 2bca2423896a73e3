"""The real Kafka broker for the session: `journeys kafka start`'s own code.

If a broker already answers on JOURNEYS_KAFKA_BOOTSTRAP (say, started by
.ci/run) it is used and left running; otherwise the session starts one and
stops it at the end.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest

from journeys.kafka_broker import broker_running, ensure_broker, stop_broker
from journeys.schemas.settings import Settings


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """The bootstrap address of a running broker."""
    settings = Settings()
    started = not broker_running(settings)
    bootstrap = ensure_broker(settings)
    yield bootstrap
    if started:
        stop_broker(settings)


@pytest.fixture()
def topic_prefix() -> Callable[[], str]:
    """A unique topic prefix per call, so tests never read each other's topics."""
    return lambda: f"t{uuid.uuid4().hex[:10]}."
