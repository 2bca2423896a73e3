"""The wire format: rows, events and controls survive Kafka; nothing is ever too large."""

from __future__ import annotations

import hashlib

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from journeys.schemas.codec import (
    DEAD_LETTER_PAYLOAD_BYTES,
    DRAIN_JSON,
    EVENT_BYTES,
    MESSAGE_BYTES,
    PACK_BYTES,
    RECORD_FIELDS,
    Control,
    Forwarded,
    Row,
    alert_json,
    check_event_size,
    dead_letter_json,
    decode_dead_letter,
    decode_ordered,
    decode_row,
    decode_rows,
    encode_row,
    fit_dead_letter,
    forwarded_json,
    idle_json,
    pack,
    record_from_values,
    record_values,
    too_large_reason,
    transition_json,
    truncated_reason,
    unpack,
)
from journeys.schemas.errors import InvalidEvent
from journeys.schemas.record import EventRecord
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
    rows: list[Row] = [
        StoredEvent(ev("page_view", 0, email="a@acme.nl", dmu_role="buyer"), "acme.nl", late=True),
        TransitionRow("acme", None, "awareness", 1, "e1", "page_view", "web", 3, False),
        JourneyRow(
            "acme", "decision", 5, 1, 9, None, 12, 2, ("buyer", "user"), "growers", 14, False
        ),
        AlertRow("al_1", "cart_abandoned", "acme", 7, '{"x":1}', 2, resolved_at=9),
        AlertRow("al_2", "deal_stalled", "acme", 7, "{}", 3, withdrawn=True),
        IdentityLink("anonymous_id", "v1", "acme", 4),
        DeadLetterRow("dl_1", 3, "no identity", b"\xff\x00raw", "events:0:17"),
    ]
    assert [decode_row(encode_row(row)) for row in rows] == rows
    assert decode_rows(b"".join(pack(encode_row(row) for row in rows))) == rows


def test_internal_keys_are_readable() -> None:
    record = ev("page_view", 0, email="a@acme.nl")
    assert set(orjson.loads(forwarded_json(record, 2, 4, 9))) == {
        "event",
        "partition",
        "partitions",
        "offset",
    }
    assert set(orjson.loads(encode_row(StoredEvent(record, "acme.nl")))) == {
        "kind",
        "event",
        "account_id",
        "late",
    }
    assert orjson.loads(idle_json(1, 4)) == {"control": "idle", "partition": 1, "partitions": 4}


def test_the_one_event_record_pair_covers_every_field() -> None:
    record = EventRecord("e", "web", "page_view", 5, "a", "c", "m@x.nl", "acc", "buyer", "seg")
    assert RECORD_FIELDS == tuple(EventRecord.__dataclass_fields__)
    assert record_from_values(orjson.loads(orjson.dumps(record_values(record)))) == record


def test_the_ordered_topic_carries_events_and_controls() -> None:
    record = ev("page_view", 0, anonymous_id="v")
    packed = b"".join(pack([forwarded_json(record, 1, 3, 7), forwarded_json(record, 2, 3, 8)]))
    assert list(decode_ordered(packed)) == [Forwarded(1, 3, 7, record), Forwarded(2, 3, 8, record)]
    assert list(decode_ordered(idle_json(2, 3))) == [Control("idle", 2, 3)]
    assert list(decode_ordered(DRAIN_JSON)) == [Control("drain")]


def test_public_messages_use_iso_times() -> None:
    transition = orjson.loads(
        transition_json(
            TransitionRow("a", "awareness", "decision", 0, "e", "quote_sent", "order", 1)
        )
    )
    assert transition["transitioned_at"] == "1970-01-01T00:00:00.000Z"
    alert = orjson.loads(
        alert_json(AlertRow("al", "deal_stalled", "a", 1000, '{"phase":"decision"}', 1))
    )
    assert (alert["raised_at"], alert["details"], alert["resolved_at"]) == (
        "1970-01-01T00:00:01.000Z",
        {"phase": "decision"},
        None,
    )
    row = DeadLetterRow("dl", 5, "bad", b"{oops", "src")
    assert decode_dead_letter(dead_letter_json(row)) == row


# ------------------------------------------------------------------------- sizes


def test_the_limits_nest() -> None:
    worst_dead_letter = 6 * DEAD_LETTER_PAYLOAD_BYTES + 8 * 1024  # every byte escaped as \\u00XX
    assert EVENT_BYTES + 4096 < PACK_BYTES < 1_000_000 < MESSAGE_BYTES
    assert worst_dead_letter < PACK_BYTES


@given(st.lists(st.binary(min_size=0, max_size=300).map(lambda b: orjson.dumps(b.hex()))))
def test_packs_keep_order_and_stay_under_the_limit(items: list[bytes]) -> None:
    packs = list(pack(items, limit=1000))
    assert [orjson.dumps(v) for p in packs for v in unpack(p)] == items
    for message in packs:
        assert len(message) <= 1000 or len(unpack(message)) == 1


def test_a_backlog_of_two_kilobyte_events_packs_below_the_limit() -> None:
    record = ev("page_view", 0, email="a@acme.nl", properties={"blob": "x" * 2000})
    items = [forwarded_json(record, 0, 4, 123_456)] * 20_000
    packs = list(pack(items))
    assert max(len(p) for p in packs) <= PACK_BYTES
    assert sum(len(unpack(p)) for p in packs) == 20_000
    assert len(packs) == pytest.approx(20_000 * len(items[0]) / PACK_BYTES, rel=0.05)


def test_an_item_over_the_limit_travels_alone() -> None:
    big, small = orjson.dumps("y" * 5000), orjson.dumps("z")
    packs = list(pack([small, big, small], limit=1000))
    assert [len(unpack(p)) for p in packs] == [1, 1, 1]


def test_an_event_over_the_limit_is_invalid() -> None:
    check_event_size(b"x" * EVENT_BYTES)
    with pytest.raises(InvalidEvent, match="too large"):
        check_event_size(b"x" * (EVENT_BYTES + 1))


def test_a_large_dead_letter_keeps_its_beginning_size_and_hash() -> None:
    payload = b'{"properties":{"blob":"' + b"\x01" * (1024 * 1024) + b'"}}'
    row = DeadLetterRow.of(payload, "event too large", "events:0:9", 5)
    message = dead_letter_json(row)
    body = orjson.loads(message)
    assert len(message) < PACK_BYTES
    assert body["payload_size"] == len(payload) and body["payload_truncated"] is True
    assert body["payload_sha256"] == hashlib.sha256(payload).hexdigest()
    back = decode_dead_letter(message)
    assert back.payload == payload[:DEAD_LETTER_PAYLOAD_BYTES]
    assert back.dead_letter_id == row.dead_letter_id  # the whole input's id
    assert f"{len(payload):,} bytes" in back.reason and body["payload_sha256"] in back.reason
    assert back.reason.startswith("event too large")
    assert fit_dead_letter(back) == back  # fitting twice changes nothing


def test_large_inputs_sharing_a_beginning_stay_distinct_dead_letters() -> None:
    head = b"x" * DEAD_LETTER_PAYLOAD_BYTES
    one, two = (
        DeadLetterRow.of(head + b"1", "r", "s", 0),
        DeadLetterRow.of(head + b"2", "r", "s", 0),
    )
    assert decode_dead_letter(dead_letter_json(one)).dead_letter_id != (
        decode_dead_letter(dead_letter_json(two)).dead_letter_id
    )


def test_small_dead_letters_travel_whole() -> None:
    row = DeadLetterRow.of(b"\xff" * 1000, "not UTF-8", "s", 0)
    body = orjson.loads(dead_letter_json(row))
    assert body["payload_truncated"] is False and "payload_base64" in body
    assert decode_dead_letter(dead_letter_json(row)) == row


def test_a_reason_quoting_a_huge_input_is_cut() -> None:
    row = DeadLetterRow.of(b"{}", "bad: " + "q" * 100_000, "s", 0)
    assert len(decode_dead_letter(dead_letter_json(row)).reason) < 2_100


def test_a_dead_letter_is_keyed_by_its_position_and_its_bytes() -> None:
    one = DeadLetterRow.of(b"{oops", "invalid JSON", "events:0:1", 5)
    assert DeadLetterRow.of(b"{oops", "invalid JSON", "events:0:1", 9) == DeadLetterRow(
        one.dead_letter_id, 9, "invalid JSON", b"{oops", "events:0:1"
    )  # read again from the same place: the same row
    assert DeadLetterRow.of(b"{oops", "invalid JSON", "events:0:2", 5).dead_letter_id != (
        one.dead_letter_id
    )  # the same bytes elsewhere: another row
    assert DeadLetterRow.of(b"{oops", "r", "collect:/v1/batch", 5, position="events:0:1") == (
        DeadLetterRow(one.dead_letter_id, 5, "r", b"{oops", "collect:/v1/batch")
    )
    whole = b"x" * 100
    head = DeadLetterRow.of(whole[:10], "r", "f:1", 0, sha256=hashlib.sha256(whole).hexdigest())
    assert head.dead_letter_id == DeadLetterRow.of(whole, "r", "f:1", 0).dead_letter_id
    assert DeadLetterRow.fresh_position() != DeadLetterRow.fresh_position()


def test_the_too_large_reason_names_size_limit_and_what_was_kept() -> None:
    assert too_large_reason(600_000) == "event too large: 600,000 bytes, the limit is 524,288"
    assert truncated_reason("r", 70_000, "ab") == (
        "r [payload truncated: first 65,536 of 70,000 bytes kept, sha256 ab]"
    )
