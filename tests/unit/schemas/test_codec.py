"""Rows survive the trip through Kafka messages unchanged."""

from __future__ import annotations

import orjson

from journeys.schemas.codec import (
    alert_json,
    dead_letter_json,
    decode_dead_letter,
    decode_row,
    encode_row,
    transition_json,
)
from journeys.schemas.rows import (
    AlertRow,
    DeadLetterRow,
    IdentityLink,
    JourneyRow,
    StoredEvent,
    TransitionRow,
)
from tests.unit.engine.journey import ev


def test_every_row_kind_round_trips() -> None:
    rows = [
        StoredEvent(ev("page_view", 0, email="a@acme.nl", dmu_role="buyer"), "acme.nl", late=True),
        TransitionRow("acme", None, "awareness", 1, "e1", "page_view", "web", 3, False),
        JourneyRow("acme", "decision", 5, 1, 9, None, 12, 2, ("buyer", "user"), "growers", 14, False),
        AlertRow("al_1", "cart_abandoned", "acme", 7, '{"x":1}', 2, resolved_at=9),
        IdentityLink("anonymous_id", "v1", "acme", 4),
        DeadLetterRow("dl_1", 3, "no identity", b"\xff\x00raw", "events:0:17"),
    ]
    assert [decode_row(encode_row(row)) for row in rows] == rows


def test_public_messages_use_iso_times() -> None:
    transition = orjson.loads(transition_json(TransitionRow("a", "awareness", "decision", 0, "e", "quote_sent", "order", 1)))
    assert transition["transitioned_at"] == "1970-01-01T00:00:00.000Z"
    alert = orjson.loads(alert_json(AlertRow("al", "deal_stalled", "a", 1000, '{"phase":"decision"}', 1)))
    assert (alert["raised_at"], alert["details"], alert["resolved_at"]) == ("1970-01-01T00:00:01.000Z", {"phase": "decision"}, None)
    row = DeadLetterRow("dl", 5, "bad", b"{oops", "src")
    assert decode_dead_letter(dead_letter_json(row)) == row
