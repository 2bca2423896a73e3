"""kill -9 at random moments: with transactions, every table equals `journeys replay`.

Each test run feeds a small history (40 accounts, 60 days) in 11 chunks to two
workers and SIGKILLs a random worker at a seeded random moment before each chunk
after the first, starting a fresh one each time: 10 kills a run, 20 over the
two seeds (`kills.run_with_kills`). The long soak is `tests/bench/soak_kill.py`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.kafka.kills import fleet_for, run_with_kills, small_history
from tests.integration.kafka.test_scale import Input, settle_and_compare
from tests.integration.kafka.workers import Fleet

pytestmark = [pytest.mark.kafka, pytest.mark.integration]

KILLS = 10


@pytest.fixture(scope="module")
def history() -> Input:
    return small_history(KILLS + 1)


@pytest.fixture()
def fleet(kafka_bootstrap: str, topic_prefix: Callable[[], str], tmp_path: Path) -> Iterator[Fleet]:
    fleet = fleet_for(kafka_bootstrap, topic_prefix(), tmp_path)
    yield fleet
    fleet.stop()


@pytest.mark.parametrize("seed", [1, 2])
def test_ten_kills_at_random_moments_lose_and_double_nothing(
    fleet: Fleet, history: Input, seed: int
) -> None:
    killed = run_with_kills(fleet, history, seed)
    assert len(killed) == KILLS
    settle_and_compare(fleet, history, timeout=240, minimum=20)
