"""`journeys replay` into the real embedded ClickHouse."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from journeys.cli import main
from journeys.schemas.record import EventRecord
from journeys.sinks.clickhouse.client import connect
from journeys.sinks.clickhouse.queries import snapshot, table_counts
from journeys.sinks.memory import MemorySink
from journeys.streams.engine import EngineConfig
from journeys.streams.replay import replay
from tests.unit.engine.journey import arrive, ev, realistic_arrival

pytestmark = pytest.mark.integration

GOOD = [
    ev("content_view", 0, event_id="a1", anonymous_id="v1"),
    ev("pricing_view", 5, event_id="a2", anonymous_id="v1"),
    ev("signup", 6, event_id="s1", anonymous_id="v1", email="jan@kwekerij-x.nl", contact_id="c1"),
    ev("add_to_cart", 7, event_id="c1", email="jan@kwekerij-x.nl"),
    ev("order_placed", 30, event_id="o1", account_id="erp-1", contact_id="c1"),
    ev("order_delivered", 80, event_id="d1", account_id="erp-1"),
    ev("quote_requested", 100, event_id="q1", email="piet@gmail.com"),
    ev("sent", 800, event_id="n1", account_id="erp-1"),
]
BAD = [b"{not json", b'{"channel":"web","type":"x","occurred_at":"2026-01-01T00:00:00Z"}']


def write_input(path: Path, duplicate: bool = False) -> Path:
    lines = list(reversed([e.to_json() for e in GOOD] + BAD))  # order does not matter
    if duplicate:
        lines += [GOOD[0].to_json(), GOOD[4].to_json()]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def run_replay(tmp_path: Path, chdb_dsn: str, database: str, *extra: str) -> None:
    result = CliRunner().invoke(
        main,
        [
            "replay",
            str(write_input(tmp_path / "in.jsonl", duplicate=bool(extra))),
            "--clickhouse-url",
            chdb_dsn,
            "--clickhouse-database",
            database,
            "--data-dir",
            str(tmp_path),
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output


def test_replay_writes_every_table_with_exact_values(
    tmp_path: Path, chdb_dsn: str, database_name: Callable[[str], str]
) -> None:
    name = database_name("rp")
    run_replay(tmp_path, chdb_dsn, name)
    client = connect(chdb_dsn)
    snap = snapshot(client, name)
    journeys = {j["account_id"]: j for j in snap["journeys"]}
    assert sorted(journeys) == ["erp-1", "piet@gmail.com"]
    erp = journeys["erp-1"]
    assert (erp["phase"], erp["events"], erp["contacts"]) == ("delivery", 7, 1)
    assert (
        erp["first_seen"] == GOOD[0].occurred_at.replace(tzinfo=None)
        or erp["first_seen"].timestamp() == GOOD[0].ts / 1000
    )
    transitions = [
        (t["from_phase"], t["to_phase"], t["event_id"])
        for t in snap["phase_transitions"]
        if t["account_id"] == "erp-1"
    ]
    assert sorted(transitions, key=lambda t: t[2]) == sorted(
        [
            ("", "awareness", "a1"),
            ("awareness", "consideration", "a2"),
            ("consideration", "purchase", "o1"),
            ("purchase", "delivery", "d1"),
        ],
        key=lambda t: t[2],
    )
    assert {e["event_id"]: e["account_id"] for e in snap["events"]} == {
        "a1": "erp-1",
        "a2": "erp-1",
        "s1": "erp-1",
        "c1": "erp-1",
        "o1": "erp-1",
        "d1": "erp-1",
        "q1": "piet@gmail.com",
        "n1": "erp-1",
    }
    kinds = sorted((a["kind"], a["account_id"], a["resolved_at"] is None) for a in snap["alerts"])
    # The cart abandoned on the domain account is erp-1's (the domain merged into it),
    # resolved by the order.
    assert kinds == [("cart_abandoned", "erp-1", False), ("deal_stalled", "piet@gmail.com", True)]
    reasons = sorted(d["reason"].split(":")[0] for d in snap["dead_letters"])
    assert reasons == ["invalid JSON", "no identity"]


def test_replaying_twice_or_with_duplicates_leaves_the_same_tables(
    tmp_path: Path, chdb_dsn: str, database_name: Callable[[str], str]
) -> None:
    name = database_name("rp2")
    run_replay(tmp_path, chdb_dsn, name)
    first = snapshot(connect(chdb_dsn), name)
    run_replay(tmp_path, chdb_dsn, name, "dup")
    second = snapshot(connect(chdb_dsn), name)
    for snap in (first, second):  # when a dead letter was received is the one thing that moves
        for row in snap["dead_letters"]:
            row.pop("received_at")
    assert second == first


def test_clickhouse_matches_the_in_memory_reference(
    chdb_dsn: str, database_name: Callable[[str], str]
) -> None:
    from journeys.sinks.clickhouse.writer import ClickHouseSink

    lines = [(f"l{i}", e.to_json()) for i, e in enumerate(GOOD)]
    memory = MemorySink()
    replay(lines, memory, EngineConfig.default(), 0)
    reference = memory.final()
    name = database_name("ref")
    writer = ClickHouseSink(chdb_dsn, name)
    writer.setup()
    replay(lines, writer, EngineConfig.default(), 0)
    counts = table_counts(writer.client, name)
    assert counts["events"] == len(reference.events) and counts["journeys"] == len(
        reference.journeys
    )
    assert counts["phase_transitions"] == len(reference.transitions) and counts["alerts"] == len(
        reference.alerts
    )
    stored = {e["event_id"]: e["account_id"] for e in snapshot(writer.client, name)["events"]}
    assert stored == {k: v.account_id or "" for k, v in reference.events.items()}
    assert orjson.dumps(sorted(stored)) == orjson.dumps(sorted(reference.events))


def _simulated(accounts: int, days: int) -> list[EventRecord]:
    from journeys.producers.simulator import simulate
    from journeys.schemas.errors import InvalidEvent
    from journeys.schemas.event import parse_event

    events = []
    for line in simulate(accounts=accounts, days=days, seed=5):
        try:
            events.append(parse_event(line))
        except InvalidEvent:
            pass
    return events


def _replay_file(
    path: Path, chdb_dsn: str, database: str, tmp_path: Path, *extra: str
) -> dict[str, Any]:
    result = CliRunner().invoke(
        main,
        ["replay", str(path), "--clickhouse-url", chdb_dsn, "--clickhouse-database", database,
         "--data-dir", str(tmp_path), *extra],
        catch_exceptions=False,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    snap = snapshot(connect(chdb_dsn), database)
    for row in snap.get("dead_letters", []):
        row.pop("received_at", None)
    return snap


def test_replay_of_an_arrival_ordered_file_equals_replay_of_it_sorted(
    tmp_path: Path, chdb_dsn: str, database_name: Callable[[str], str]
) -> None:
    events = _simulated(accounts=80, days=45)
    arriving = realistic_arrival(events, seed=3)
    assert len(arriving) > len(events)  # some redeliveries with moved times
    arrival_file = tmp_path / "arrival.jsonl"
    arrival_file.write_bytes(b"\n".join(e.to_json() for e in arriving) + b"\n")
    sorted_file = tmp_path / "sorted.jsonl"
    ordered = sorted(arriving, key=lambda e: (e.ts, e.event_id))  # the same lines, sorted
    sorted_file.write_bytes(b"\n".join(e.to_json() for e in ordered) + b"\n")

    from_arrival = _replay_file(arrival_file, chdb_dsn, database_name("arr"), tmp_path)
    from_sorted = _replay_file(sorted_file, chdb_dsn, database_name("srt"), tmp_path)
    assert from_arrival == from_sorted
    assert len(from_sorted["journeys"]) > 5 and len(from_sorted["alerts"]) > 0


def test_redeliveries_with_moved_times_are_stored_once_at_the_earliest_time(
    tmp_path: Path, chdb_dsn: str, database_name: Callable[[str], str]
) -> None:
    events = _simulated(accounts=10, days=10)
    redelivered = [replace(e, ts=e.ts + 1_000 + i % 2_000) for i, e in enumerate(events)]
    path = tmp_path / "twice.jsonl"
    lines = [e.to_json() for pair in zip(redelivered, events, strict=True) for e in pair]
    path.write_bytes(b"\n".join(lines) + b"\n")
    snap = _replay_file(path, chdb_dsn, database_name("twice"), tmp_path)
    stored = {row["event_id"]: row["occurred_at"] for row in snap["events"]}
    assert len(stored) == len(events) == len(snap["events"])
    earliest = {e.event_id: e.ts for e in events}
    assert {k: int(v.timestamp() * 1000) for k, v in stored.items()} == earliest
    once = _replay_file(
        _write(tmp_path / "once.jsonl", events), chdb_dsn, database_name("once"), tmp_path
    )
    assert snap["journeys"] == once["journeys"]


def _write(path: Path, events: list[EventRecord]) -> Path:
    path.write_bytes(b"\n".join(e.to_json() for e in events) + b"\n")
    return path


def test_the_engine_fed_in_arrival_order_writes_the_tables_of_sorted_replay(
    tmp_path: Path, chdb_dsn: str, database_name: Callable[[str], str]
) -> None:
    """Stream semantics on simulated data: deliveries in a realistic arrival order (nightly
    ERP exports, webhook retries, SDK redeliveries), event time trailing the latest event
    seen by 30 s; written to ClickHouse, read through the documented views."""
    from journeys.sinks.clickhouse.writer import ClickHouseSink

    events = _simulated(accounts=80, days=45)
    arriving = realistic_arrival(events, seed=4)
    sorted_file = _write(
        tmp_path / "sorted.jsonl", sorted(arriving, key=lambda e: (e.ts, e.event_id))
    )
    expected = _replay_file(sorted_file, chdb_dsn, database_name("srt"), tmp_path)

    name = database_name("stream")
    writer = ClickHouseSink(chdb_dsn, name)
    writer.setup()
    _, out = arrive(arriving, lateness=30_000, batch=50)
    writer.add(out)
    writer.flush()
    assert snapshot(writer.client, name) == {**expected, "dead_letters": []}
    # The stream had corrections to make: alerts withdrawn, transitions moved.
    assert any(a.withdrawn for a in out.alerts) and any(t.deleted for t in out.transitions)


def test_replay_over_several_processes_writes_the_tables_of_one(
    tmp_path: Path, chdb_dsn: str, database_name: Callable[[str], str]
) -> None:
    events = _simulated(accounts=120, days=45)
    arriving = realistic_arrival(events, seed=4)  # late and redelivered events, merges
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"\n".join(e.to_json() for e in arriving) + b"\n")
    one = _replay_file(path, chdb_dsn, database_name("one"), tmp_path)
    three = _replay_file(path, chdb_dsn, database_name("three"), tmp_path, "--jobs", "3")
    assert three == one
    assert len(one["journeys"]) > 10 and len(one["alerts"]) > 0 and len(one["identity_links"])
