"""Exact forever on the real broker (issue 17): with the default dedupe window, a whole
history sent again after it was processed (a re-run export, every event older than the
window by then) changes nothing: the tables equal `journeys replay` of the input sorted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from journeys.producers.simulator import simulate
from journeys.schemas.event import parse_event
from journeys.sinks.clickhouse.queries import snapshot
from tests.integration.kafka.pipeline import comparable, expected_ids, produce, replayed
from tests.integration.kafka.pipeline import wait_settled as settled

pytestmark = [pytest.mark.kafka, pytest.mark.integration]

#: The default `JOURNEYS_DEDUPE_WINDOW`: far shorter than the history's 40 days.
WINDOW = 3 * 86_400_000


def test_a_history_sent_twice_with_the_default_window_gives_the_tables_of_sorted_replay(
    pipeline_factory: Any, chdb_dir: Path
) -> None:
    records = [
        parse_event(line) for line in simulate(accounts=30, days=40, seed=5, invalid_share=0.0)
    ]
    lines = [event.to_json() for event in records]
    pipeline = pipeline_factory(workers=1, partitions=4, window=WINDOW)
    pipeline.start_sink()
    pipeline.start_workers()
    produce(pipeline.settings, lines)
    settled(pipeline, len(expected_ids(lines)), 0, quiet=3)
    produce(pipeline.settings, lines)  # the export re-sent, everything in it old by now
    settled(pipeline, len(expected_ids(lines)), 0, quiet=4)
    assert pipeline.writer is not None
    streamed = comparable(snapshot(pipeline.writer.client, pipeline.settings.clickhouse_database))
    expected = replayed(lines + lines, chdb_dir, WINDOW)
    for table in expected:
        assert streamed[table] == expected[table], table
    events = {row["account_id"]: 0 for row in expected["journeys"]}
    for row in expected["events"]:
        if row["account_id"] in events:
            events[row["account_id"]] += 1
    assert {row["account_id"]: row["events"] for row in streamed["journeys"]} == events
    assert len(expected["journeys"]) > 10
