"""The real Kafka broker for the session: `journeys kafka start`'s own code.

If a broker already answers on JOURNEYS_KAFKA_BOOTSTRAP (say, started by
.ci/run) it is used and left running; otherwise the session starts one and
stops it at the end.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from journeys.kafka_broker import broker_running, ensure_broker, stop_broker
from journeys.schemas.settings import Settings
from tests.integration.kafka.pipeline import WINDOW, Pipeline, settings_for


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


@pytest.fixture(scope="session")
def chdb_dir(chdb_dsn: str) -> Path:
    """The session's one embedded ClickHouse path (one per process)."""
    return Path(chdb_dsn.removeprefix("chdb://"))


@pytest.fixture()
def pipeline_factory(kafka_bootstrap: str, chdb_dir: Path, tmp_path: Path) -> Iterator[Any]:
    made: list[Pipeline] = []

    def make(workers: int = 1, partitions: int = 4, window: int = WINDOW) -> Pipeline:
        settings = settings_for(tmp_path, chdb_dir, kafka_bootstrap, partitions, window)
        pipeline = Pipeline(settings, workers)
        made.append(pipeline)
        return pipeline

    yield make
    for pipeline in made:
        pipeline.stop()
