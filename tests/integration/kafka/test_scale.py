"""Scale-out and fail-over on the real broker: several `journeys worker` processes, each
with a data dir of its own, and one `journeys sink`, give the tables of `journeys replay`.

The input is simulated B2B history in the order real sources deliver it (visitors that
later identify, contacts, ERP accounts, late exports, redeliveries), sent in chunks
while the workers run. The tests are about what an operator sees: which processes
run, the tables, the consumer groups; never which worker holds which part of the
state. A killed worker is never started again and its disk is never read: whatever
it held must come back from Kafka. Identity links are compared by the account each
alias ends up in (`workers.resolved`): which of two merged accounts a row names may
depend on the order the links were learnt.

A failure message names the process logs (`<tmp>/<name>.log`) and shows their ends.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from journeys.producers.simulator import simulate
from journeys.producers.topics import ensure_pipeline_topics
from journeys.schemas.errors import InvalidEvent
from journeys.schemas.event import parse_event
from journeys.schemas.record import EventRecord
from journeys.schemas.settings import Settings
from tests.integration.kafka.pipeline import INVALID, expected_ids
from tests.integration.kafka.test_outages import free_ports
from tests.integration.kafka.workers import (
    Fleet,
    compare_with_replay,
    feed,
    group_members,
    wait_settled,
)
from tests.unit.engine.journey import realistic_arrival

pytestmark = [pytest.mark.kafka, pytest.mark.integration]

CHUNKS = 8
#: A worker killed without leaving its group keeps its partitions for the session timeout
#: (20 s); its successor may have state to restore.
TAKEOVER = 60.0


@dataclass(frozen=True)
class Input:
    """Deliveries in arrival order, cut into chunks, and malformed lines sent beside them."""

    chunks: list[list[EventRecord]]
    invalid: list[bytes]

    @property
    def lines(self) -> list[bytes]:
        """Every line sent, for `journeys replay`."""
        return [r.to_json() for chunk in self.chunks for r in chunk] + self.invalid


@pytest.fixture(scope="module")
def history() -> Input:
    records, invalid = [], list(INVALID)
    for line in simulate(accounts=150, days=60, seed=23):
        try:
            records.append(parse_event(line))
        except InvalidEvent:
            invalid.append(line)
    deliveries = realistic_arrival(records, seed=5)
    assert any(r.anonymous_id and r.contact_id for r in deliveries), "no visitor identifies"
    assert any(r.contact_id and r.email for r in deliveries), "no contact with an email"
    assert any(r.contact_id and r.account_id for r in deliveries), "no ERP account's contact"
    size = len(deliveries) // CHUNKS + 1
    return Input([deliveries[i : i + size] for i in range(0, len(deliveries), size)], invalid)


@pytest.fixture()
def fleet(kafka_bootstrap: str, topic_prefix: Callable[[], str], tmp_path: Path) -> Iterator[Fleet]:
    settings = Settings(
        data_dir=tmp_path / "unused",
        clickhouse_url=f"chdb://{tmp_path / 'clickhouse'}",
        clickhouse_database="journeys",
        kafka_bootstrap=kafka_bootstrap,
        topic_prefix=topic_prefix(),
        topic_partitions=4,
        allowed_lateness=0,
        read_port=free_ports(1),
    )
    ensure_pipeline_topics(settings)
    fleet = Fleet(settings, tmp_path)
    yield fleet
    fleet.stop()


def start(fleet: Fleet, workers: int) -> None:
    """The sink and `workers` workers, until all are healthy and in one group."""
    fleet.start("sink", "sink")
    for i in range(workers):
        fleet.start(f"worker-{i + 1}")
    wait_running(fleet)


def wait_running(fleet: Fleet, timeout: float = 90.0) -> None:
    """Until every live worker answers /health with 200 and their group is stable with
    each of them in it."""
    names = ["sink", *fleet.workers]
    fleet.wait(
        lambda: all(fleet.health(name) == 200 for name in names),
        timeout,
        f"not every one of {names} said it is healthy",
    )
    fleet.wait(
        lambda: max(group_members(fleet.settings).values(), default=0) >= len(fleet.workers),
        timeout,
        f"the {len(fleet.workers)} workers did not form a stable group",
    )


def wait_output(fleet: Fleet, timeout: float = 90.0) -> None:
    """Until ClickHouse holds events and journeys (output of the stream so far)."""

    def some() -> bool:
        counts = fleet.tables() or {}
        return counts.get("events", 0) > 0 and counts.get("journeys", 0) > 0

    fleet.wait(some, timeout, "no output reached ClickHouse")


def settle_and_compare(
    fleet: Fleet, history: Input, timeout: float = 180.0, minimum: int = 100
) -> dict[str, Any]:
    """Wait until the pipeline has written everything, stop it, compare with replay (which
    must have more than `minimum` identity links and journeys)."""
    lines = history.lines
    ids = expected_ids(lines)
    wait_settled(fleet, len(ids), len(history.invalid), timeout=timeout)
    codes = fleet.stop()
    result = compare_with_replay(fleet.settings, fleet.root / "clickhouse", lines, fleet.root)
    summary = (
        f"streamed {result['counts']}, replayed {result['replay_counts']}, exit codes "
        f"{codes}, killed {sorted(fleet.killed)}"
    )
    assert result["different"] == [], (
        f"tables differ from replay: {result['different']}; {summary}\n"
        f"examples: {result['examples']}\n{fleet.tails()}"
    )
    assert result["events"] == result["distinct_events"] == len(ids), summary
    assert result["replay_counts"]["identity_links"] > minimum, summary
    assert result["replay_counts"]["journeys"] > minimum, summary
    return result


def stage_owner(fleet: Fleet) -> str:
    """The worker that says it runs a single-partition stage, else the first one: killing
    the owner of state that exists once is the hardest case."""
    for name in fleet.workers:
        if fleet.metrics(name).get("journeys_stage_owned") == 1:
            return name
    return fleet.workers[0]


@pytest.mark.parametrize("workers", [2, 3])
def test_workers_with_their_own_data_dirs_give_the_tables_of_replay(
    fleet: Fleet, history: Input, workers: int
) -> None:
    start(fleet, workers)
    feed(fleet.settings, history.chunks, history.invalid)
    settle_and_compare(fleet, history)


@pytest.mark.parametrize("workers", [2, 3])
def test_a_worker_killed_mid_stream_and_never_restarted_loses_and_doubles_nothing(
    fleet: Fleet, history: Input, workers: int
) -> None:
    """SIGKILL after some output reached ClickHouse and while a chunk is being processed;
    the rest of the input arrives afterwards. The other workers take over its partitions
    once the group notices (the session timeout) and finish."""
    start(fleet, workers)
    killed: list[str] = []

    def before(chunk: int) -> None:
        if chunk == 3:
            wait_output(fleet)
        if chunk == 4:  # chunk 3 was just sent: the workers are busy with it
            killed.append(stage_owner(fleet))
            fleet.kill(killed[0])

    feed(fleet.settings, history.chunks, history.invalid, before=before)
    assert len(killed) == 1 and len(fleet.workers) == workers - 1
    settle_and_compare(fleet, history, timeout=TAKEOVER + 90)


def test_a_worker_joining_mid_stream_changes_nothing(fleet: Fleet, history: Input) -> None:
    """One worker runs alone until output reached ClickHouse; a second one starts while
    the first is busy with the next chunk; the rest arrives once both are in the group."""
    start(fleet, 1)

    def before(chunk: int) -> None:
        if chunk == 3:
            wait_output(fleet)
        if chunk == 4:  # chunk 3 was just sent: the first worker is busy with it
            fleet.start("worker-2")
            wait_running(fleet)

    feed(fleet.settings, history.chunks, history.invalid, before=before)
    settle_and_compare(fleet, history)
