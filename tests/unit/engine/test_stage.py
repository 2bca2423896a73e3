"""The journey stage: watermark across partitions, idle and drain, resume after a crash."""

from __future__ import annotations

from pathlib import Path

from journeys.schemas.codec import DRAIN_JSON, forwarded_json, idle_json, pack
from journeys.schemas.record import EventRecord
from journeys.schemas.rows import Output
from journeys.sinks.reference import final_tables
from journeys.streams.checkpoint import CheckpointStore
from journeys.streams.engine import EngineConfig, load_rules
from journeys.streams.stage import JourneyStage
from tests.unit.engine.journey import ev, run
from tests.unit.engine.test_properties import snapshot

CONFIG = EngineConfig(rules=load_rules())


def stage(path: Path, lateness: int = 0) -> JourneyStage:
    s = JourneyStage(CONFIG, lateness, CheckpointStore(path))
    s.open()
    return s


def _history() -> list[EventRecord]:
    return [
        ev("content_view", 0, anonymous_id="v"),
        ev("pricing_view", 1, anonymous_id="v"),
        ev("signup", 2, anonymous_id="v", email="jan@acme.nl", contact_id="c1"),
        ev("add_to_cart", 3, email="jan@acme.nl"),
        ev("quote_requested", 4, account_id="erp-9", contact_id="c1"),
        ev("page_view", 30, email="piet@acme.nl"),
        ev("sent", 500, account_id="erp-9"),
    ]


HISTORY = _history()


def history() -> list[EventRecord]:
    return list(HISTORY)


def messages(events: list[EventRecord], partitions: int = 2) -> list[bytes]:
    """Round-robin over partitions, each partition in time order (like a keyless bulk load)."""
    ordered = sorted(events, key=lambda e: (e.ts, e.event_id))
    return [
        forwarded_json(e, i % partitions, partitions, i // partitions)
        for i, e in enumerate(ordered)
    ]


def test_stream_through_the_stage_equals_replay(tmp_path: Path) -> None:
    s = stage(tmp_path)
    out = Output()
    for offset, value in enumerate([*messages(history()), idle_json(0, 2), idle_json(1, 2)]):
        out.extend(s.handle([(offset, value)]))
    assert s.drain_due()
    out.extend(s.handle([(99, DRAIN_JSON)]))
    assert not s.drain_due()
    expected, _ = run(history())
    assert snapshot(final_tables(out)) == snapshot(expected)
    assert len(final_tables(out).alerts) == 2  # the abandoned cart and the stalled deal


def test_a_silent_partition_holds_event_time_back_until_idle(tmp_path: Path) -> None:
    s = stage(tmp_path)
    first = [forwarded_json(e, 0, 2, i) for i, e in enumerate(history()[:3])]
    out = s.handle(enumerate(first))
    assert out.events == [] and len(s.sequencer) == 3
    out = s.handle([(3, idle_json(1, 2))])
    assert [e.record.type for e in out.events] == ["content_view", "pricing_view"]


def test_late_events_are_stored_but_move_nothing(tmp_path: Path) -> None:
    s = stage(tmp_path)
    events = history()
    s.handle([(0, forwarded_json(events[5], 0, 1, 0)), (1, idle_json(0, 1))])
    out = s.handle([(2, DRAIN_JSON), (3, forwarded_json(events[1], 0, 1, 1))])
    late = [e for e in out.events if e.late]
    assert [e.record.type for e in late] == ["pricing_view"]
    assert out.transitions[-1].to_phase == "awareness"
    assert s.stats.late == 1


def test_resume_after_a_crash_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    values = [
        *messages(history(), 3),
        idle_json(0, 3),
        idle_json(1, 3),
        idle_json(2, 3),
        DRAIN_JSON,
    ]
    first = stage(tmp_path)
    out = Output()
    out.extend(first.handle(list(enumerate(values))[:4]))
    first.checkpoint()
    out.extend(first.handle(list(enumerate(values))[4:6]))  # produced, never checkpointed
    first.close()  # crash: no checkpoint of 4..5

    second = stage(tmp_path)
    assert second.offset == 3
    out.extend(second.handle(list(enumerate(values))[2:]))  # redelivered from an earlier commit
    expected, _ = run(history())
    assert snapshot(final_tables(out)) == snapshot(expected)
    assert second.stats.duplicates == 0 and second.engine.duplicates == 0


def test_a_drain_asked_before_a_partition_woke_up_is_ignored(tmp_path: Path) -> None:
    s = stage(tmp_path)
    events = history()
    s.handle([(0, forwarded_json(events[0], 0, 2, 0)), (1, idle_json(0, 2)), (2, idle_json(1, 2))])
    assert s.drain_due()
    s.drain_requested = True  # the worker sent DRAIN_JSON; meanwhile partition 1 delivers
    out = s.handle([(3, forwarded_json(events[1], 1, 2, 0)), (4, DRAIN_JSON)])
    assert s.stats.drains == 0 and not s.all_idle()
    assert [e.record.type for e in out.events] == ["content_view"]  # released by the watermark


def test_packed_messages_are_read_item_by_item(tmp_path: Path) -> None:
    s = stage(tmp_path)
    items = messages(history(), 1)
    packs = list(pack(items, limit=600))
    assert len(packs) > 1
    out = Output()
    for offset, value in enumerate([*packs, idle_json(0, 1), DRAIN_JSON]):
        out.extend(s.handle([(offset, value)]))
    expected, _ = run(history())
    assert snapshot(final_tables(out)) == snapshot(expected)
    assert s.stats.received == len(history())


def test_a_source_message_forwarded_again_is_applied_once(tmp_path: Path) -> None:
    """Ingest forwards again what it had not committed when it stopped; old event times too."""
    s = stage(tmp_path)
    values = messages(history(), 2)
    out = Output()
    out.extend(s.handle(list(enumerate(values))))
    out.extend(s.handle([(len(values), idle_json(0, 2)), (len(values) + 1, idle_json(1, 2))]))
    out.extend(s.handle([(len(values) + 2, DRAIN_JSON)]))
    again = [(len(values) + 3 + i, value) for i, value in enumerate(values)]  # a new owner
    out.extend(s.handle(again))
    assert s.stats.redelivered == len(values)
    expected, _ = run(history())
    assert snapshot(final_tables(out)) == snapshot(expected)
    s.checkpoint()
    s.close()
    resumed = stage(tmp_path)
    assert resumed.applied == {0: 3, 1: 2}
