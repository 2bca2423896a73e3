"""Ingest: every message becomes a forwarded event or a dead letter; idle means caught up."""

from __future__ import annotations

import orjson

from journeys.schemas.codec import EVENT_BYTES, Forwarded, decode_ordered
from journeys.streams.ingest import Fetched, IdleWatch, split

VALID = orjson.dumps(
    {
        "event_id": "e1",
        "channel": "web",
        "type": "page_view",
        "occurred_at": "2026-11-02T09:15:00Z",
        "email": "jan@acme.nl",
    }
)


def big_valid_event() -> bytes:
    body = orjson.loads(VALID)
    body["event_id"], body["properties"] = "e-big", {"blob": "x" * (1024 * 1024)}
    return orjson.dumps(body)


def test_every_message_is_forwarded_or_dead_lettered() -> None:
    messages = [
        ("ev", 0, 10, VALID),
        ("ev", 0, 11, b"{not json"),
        ("ev", 1, 7, big_valid_event()),
        ("ev", 1, 8, b"x" * (1024 * 1024)),
        ("ev", 1, 9, VALID.replace(b"web", b"fax")),
    ]
    out = split(messages, partitions=2, received_at=5)
    assert len(out.forward) == 1 and len(out.dead_letters) == 4
    [item] = decode_ordered(out.forward[0])
    assert isinstance(item, Forwarded) and (item.partition, item.offset) == (0, 10)
    assert item.record.event_id == "e1"
    reasons = {d.source: d.reason for d in out.dead_letters}
    assert "too large" in reasons["ev:1:7"] and "too large" in reasons["ev:1:8"]
    assert f"{EVENT_BYTES:,}" in reasons["ev:1:7"]
    assert "channel" in reasons["ev:1:9"] and reasons["ev:0:11"]
    assert out.next_offsets == {0: 12, 1: 10}


def fresh(highwater: int, at: float, committed: int | None = None) -> Fetched:
    return Fetched(highwater, at, committed)


def test_a_caught_up_quiet_partition_is_idle_once() -> None:
    watch = IdleWatch(idle_after=2.0, fresh_within=5.0)
    watch.assigned([0, 1], now=100.0)
    watch.delivered({0: 50}, now=100.0)
    assert watch.due(101.0, {0: fresh(50, 101.0), 1: fresh(0, 101.0)}) == []  # not quiet yet
    assert watch.due(102.5, {0: fresh(50, 102.4), 1: fresh(0, 102.4)}) == [0, 1]
    watch.announced([0, 1])
    assert watch.due(110.0, {0: fresh(50, 110.0), 1: fresh(0, 110.0)}) == []
    watch.delivered({1: 3}, now=111.0)  # partition 1 woke up; a new quiet period follows
    assert watch.due(113.5, {0: fresh(50, 113.5), 1: fresh(3, 113.5)}) == [1]


def test_a_partition_with_a_backlog_is_never_idle() -> None:
    watch = IdleWatch(idle_after=1.0)
    watch.assigned([0], now=0.0)
    watch.delivered({0: 100}, now=0.0)
    assert watch.due(60.0, {0: fresh(20_000, 59.9)}) == []


def test_a_broker_outage_is_not_idleness() -> None:
    watch = IdleWatch(idle_after=1.0, fresh_within=5.0)
    watch.assigned([0, 1], now=0.0)
    watch.delivered({0: 10, 1: 10}, now=0.0)
    # The last fetches (at t=3) said caught up; the broker has been silent since.
    fetched = {0: fresh(10, 3.0), 1: fresh(10, 3.0)}
    assert watch.due(30.0, fetched) == []
    assert watch.stale(30.0, fetched)
    assert not watch.stale(4.0, fetched)
    assert watch.due(31.0, {0: fresh(10, 30.9), 1: fresh(12, 30.9)}) == [0]  # back, 1 behind


def test_the_committed_offset_counts_for_a_partition_read_before() -> None:
    watch = IdleWatch(idle_after=1.0)
    watch.assigned([0, 1], now=0.0)
    fetched = {0: fresh(500, 2.0, committed=500), 1: fresh(500, 2.0, committed=None)}
    assert watch.due(2.0, fetched) == [0]
    assert watch.due(2.0, {0: Fetched(None, None)}) == []  # never heard: no decision


def test_partitions_taken_away_are_forgotten() -> None:
    watch = IdleWatch(idle_after=1.0)
    watch.assigned([0, 1], now=0.0)
    watch.assigned([1], now=5.0)
    assert watch.due(10.0, {0: fresh(0, 10.0), 1: fresh(0, 10.0)}) == [1]
