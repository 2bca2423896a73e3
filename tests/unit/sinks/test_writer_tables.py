"""Engine rows become the Arrow columns the ClickHouse tables expect, with no connection."""

from __future__ import annotations

import pyarrow as pa
import pytest

from journeys.schemas.errors import SinkUnavailable
from journeys.schemas.rows import (
    AlertRow,
    DeadLetterRow,
    IdentityLink,
    JourneyRow,
    Output,
    StoredEvent,
    TransitionRow,
)
from journeys.sinks.clickhouse import writer
from journeys.sinks.clickhouse.writer import ClickHouseSink
from tests.unit.engine.journey import ev, ms

TS = pa.timestamp("ms", tz="UTC")


def test_events_carry_the_record_the_account_and_a_version_that_ranks_late_rows_lower() -> None:
    out = Output(
        events=[
            StoredEvent(
                ev(
                    "page_view",
                    0,
                    event_id="e1",
                    anonymous_id="v1",
                    dmu_role="buyer",
                    properties={"url": "/x"},
                ),
                None,
            ),
            StoredEvent(ev("order_placed", 1, event_id="e2", account_id="acme"), "acme", late=True),
        ]
    )
    table = writer._events(out)
    assert table.schema.field("occurred_at").type == TS
    assert table.to_pydict() | {"occurred_at": None} == {
        "event_id": ["e1", "e2"],
        "channel": ["web", "order"],
        "type": ["page_view", "order_placed"],
        "occurred_at": None,
        "account_id": ["", "acme"],
        "contact_id": ["", ""],
        "anonymous_id": ["v1", ""],
        "email": ["", ""],
        "dmu_role": ["buyer", ""],
        "segment": ["", ""],
        "properties": ['{"url":"/x"}', "{}"],
        "context": ['{"dmu_role":"buyer"}', "{}"],
        "late": [0, 1],
        "engine_account_id": ["", "acme"],
        "version": [writer.ON_TIME, writer.LATE],
    }
    assert table.column("occurred_at").cast(pa.int64()).to_pylist() == [ms(0), ms(1)]


def test_other_tables_map_none_to_empty_or_null_and_flags_to_uint8() -> None:
    out = Output(
        transitions=[
            TransitionRow("a", None, "awareness", 5, "e1", "page_view", "web", 3, deleted=True)
        ],
        journeys=[JourneyRow("a", "decision", 7, 1, 9, None, 4, 2, ("buyer", "user"), None, 6)],
        alerts=[AlertRow("al", "deal_stalled", "a", 8, '{"days":14}', 2, resolved_at=None)],
        links=[IdentityLink("email", "j@a.nl", "a", 4)],
        dead_letters=[DeadLetterRow("dl", 3, "invalid JSON", b"\xff{", "file:1")],
    )
    t = writer._transitions(out).to_pylist()[0]
    assert (t["from_phase"], t["is_deleted"], t["version"]) == ("", 1, 3)
    j = writer._journeys(out).to_pylist()[0]
    assert (j["last_activity"], j["dmu_roles"], j["segment"], j["is_deleted"]) == (
        None,
        ["buyer", "user"],
        "",
        0,
    )
    a = writer._alerts(out).to_pylist()[0]
    assert (a["resolved_at"], a["details"]) == (None, '{"days":14}')
    assert writer._links(out).column("kind").to_pylist() == ["email"]
    d = writer._dead_letters(out)
    assert d.schema.field("payload").type == pa.binary()
    assert d.column("payload").to_pylist() == [b"\xff{"]


def test_every_output_list_has_a_table() -> None:
    assert sorted(attr for attr, _, _ in writer._TABLES) == sorted(Output.__dataclass_fields__)


def test_the_sink_connects_only_in_setup() -> None:
    sink = ClickHouseSink("http://nobody:secret@127.0.0.1:1", "journeys", batch_rows=10)
    sink.add(Output(links=[IdentityLink("email", "j@a.nl", "a", 4)]))
    with pytest.raises(SinkUnavailable, match="call setup"):
        _ = sink.client
    sink.close()  # nothing was connected, so nothing to flush to
