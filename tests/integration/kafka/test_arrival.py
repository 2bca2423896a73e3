"""Real arrival on the real broker: events produced in the order real sources deliver them.

Web calls a few seconds late and 2% of them twice with a moved time, email
minutes late, half the orders in a nightly ERP export and the rest retried for
hours, sales logged a day later; produced in bursts with quiet gaps long
enough for every partition to go idle (so the stage drains and event time
jumps ahead of what arrives next). The tables must equal `journeys replay` of
the same deliveries, which sorts them.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from journeys.producers.simulator import simulate
from journeys.schemas.event import parse_event
from journeys.sinks.clickhouse.queries import snapshot
from tests.integration.kafka.pipeline import comparable, expected_ids, produce, replayed
from tests.integration.kafka.pipeline import wait_settled as settled
from tests.unit.engine.journey import realistic_arrival

pytestmark = [pytest.mark.kafka, pytest.mark.integration]


def test_arrival_order_with_quiet_gaps_gives_the_tables_of_sorted_replay(
    pipeline_factory: Any, chdb_dir: Path
) -> None:
    records = [
        parse_event(line) for line in simulate(accounts=30, days=40, seed=11, invalid_share=0.0)
    ]
    deliveries = realistic_arrival(records, seed=3)
    assert len(deliveries) > len(records)  # some events arrive twice
    lines = [event.to_json() for event in deliveries]
    pipeline = pipeline_factory(workers=1, partitions=4)
    pipeline.start_sink()
    pipeline.start_workers()
    bursts = 4
    size = len(lines) // bursts + 1
    for start in range(0, len(lines), size):
        produce(pipeline.settings, lines[start : start + size])
        time.sleep(4)  # longer than the idle time (1 s): every partition goes idle, then drains
    settled(pipeline, len(expected_ids(lines)), 0, quiet=6)
    assert pipeline.writer is not None
    streamed = comparable(snapshot(pipeline.writer.client, pipeline.settings.clickhouse_database))
    expected = replayed(lines, chdb_dir)
    for table in expected:
        assert streamed[table] == expected[table], table
    assert len(expected["journeys"]) > 10 and len(expected["phase_transitions"]) > 20
    assert len(expected["events"]) == len({r.event_id for r in records})  # redeliveries once
