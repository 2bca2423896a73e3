"""The simulator: deterministic, valid, noisy in the promised ways, and exercising every rule."""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from journeys.cmd_simulate import simulate as simulate_command
from journeys.producers.simulator import DEFAULT_START, account_streams, simulate
from journeys.producers.simulator_noise import MALFORMED
from journeys.schemas.errors import InvalidEvent
from journeys.schemas.event import parse_event, reference_record
from journeys.schemas.identity import is_free_mail
from journeys.schemas.record import DMU_ROLES, KNOWN_TYPES, EventRecord
from journeys.streams.engine import EngineConfig, JourneyEngine

#: Every type the default rules move a phase with (contract section 3).
PHASE_MOVING = {
    "product_view",
    "pricing_view",
    "review_view",
    "compare",
    "add_to_cart",
    "form_submit",
    "quote_requested",
    "meeting",
    "call",
    "demo",
    "checkout_started",
    "quote_sent",
    "quote_accepted",
    "deal_stage_changed",
    "order_placed",
    "deal_won",
    "order_shipped",
    "order_delivered",
    "invoice_paid",
    "survey_response",
}


@pytest.fixture(scope="module")
def lines() -> list[bytes]:
    """The default run: 200 accounts over 90 days."""
    return list(simulate(accounts=200, days=90, seed=7))


@pytest.fixture(scope="module")
def parsed(lines: list[bytes]) -> tuple[list[tuple[bytes, EventRecord]], list[bytes]]:
    """(line, record) for the valid lines; the lines that failed validation."""
    good, bad = [], []
    for line in lines:
        try:
            good.append((line, parse_event(line)))
        except InvalidEvent:
            bad.append(line)
    return good, bad


@pytest.fixture(scope="module")
def events(parsed: tuple[list[tuple[bytes, EventRecord]], list[bytes]]) -> list[EventRecord]:
    return [record for _, record in parsed[0]]


def test_same_arguments_give_the_same_bytes() -> None:
    first = list(simulate(accounts=30, days=40, seed=11))
    assert first == list(simulate(accounts=30, days=40, seed=11))
    assert len(first) > 300


def test_another_seed_or_start_gives_other_bytes() -> None:
    base = list(simulate(accounts=30, days=40, seed=11))
    assert list(simulate(accounts=30, days=40, seed=12)) != base
    later = list(simulate(accounts=30, days=40, seed=11, start=DEFAULT_START + timedelta(days=7)))
    assert later != base


def test_default_start_is_fixed_and_events_stay_in_the_period(events: list[EventRecord]) -> None:
    begin = int(datetime(2026, 1, 5, tzinfo=UTC).timestamp() * 1000)
    end = begin + 90 * 86_400_000
    assert all(begin <= e.ts < end for e in events)
    assert max(e.ts for e in events) - min(e.ts for e in events) > 80 * 86_400_000


def test_an_account_does_not_depend_on_how_many_are_simulated() -> None:
    small = {evs[0][1]: evs for _, evs in account_streams(10, 30, 5, DEFAULT_START) if evs}
    large = {evs[0][1]: evs for _, evs in account_streams(40, 30, 5, DEFAULT_START) if evs}
    assert len(small) >= 8 and small.keys() <= large.keys()
    assert all(large[first_id] == evs for first_id, evs in small.items())


def test_without_malformed_share_every_line_is_valid_for_both_validators() -> None:
    sample = list(simulate(accounts=60, days=60, seed=3, invalid_share=0.0))
    for line in sample:
        parse_event(line)
    for line in sample[::7]:  # the pydantic reference, not only the fast path
        reference_record(orjson.loads(line))


def test_malformed_share_is_roughly_as_asked(parsed: tuple[list, list], lines: list[bytes]) -> None:
    _, bad = parsed
    assert 0.0025 < len(bad) / len(lines) < 0.0085
    noisy = list(simulate(accounts=60, days=60, seed=3, invalid_share=0.05))
    failed = 0
    for line in noisy:
        try:
            parse_event(line)
        except InvalidEvent:
            failed += 1
    assert 0.04 < failed / len(noisy) < 0.06


@pytest.mark.parametrize("kind", sorted(MALFORMED))
def test_every_kind_of_malformed_line_fails_validation(kind: str, lines: list[bytes]) -> None:
    rnd = random.Random(kind)
    bodies = [orjson.loads(line) for line in lines[:400] if line.startswith(b'{"event_id"')]
    for body in bodies:
        bad = MALFORMED[kind](rnd, body)
        assert b"\n" not in bad and bad.strip()
        with pytest.raises(InvalidEvent):
            parse_event(bad)


def test_lines_are_single_json_objects_in_time_order(parsed: tuple[list, list]) -> None:
    good, _ = parsed
    for line, _record in good[:2000]:
        assert b"\n" not in line and isinstance(orjson.loads(line), dict)
    times = [record.ts for _, record in good]
    assert times == sorted(times)


def test_every_channel_and_every_phase_moving_type_appears(events: list[EventRecord]) -> None:
    seen = Counter((e.channel, e.type) for e in events)
    assert {channel for channel, _ in seen} == {"web", "email", "order", "sales"}
    assert PHASE_MOVING <= {t for _, t in seen}
    assert all(t in KNOWN_TYPES[channel] for channel, t in seen)
    assert {
        "sent",
        "delivered",
        "open",
        "click",
        "bounce",
        "unsubscribe",
        "order_returned",
        "quote_rejected",
        "deal_lost",
        "remove_from_cart",
        "signup",
        "login",
    } <= set(t for _, t in seen)


def test_free_mail_contacts_are_their_own_company(events: list[EventRecord]) -> None:
    free = {(e.contact_id, e.email) for e in events if e.email and e.contact_id}
    free = {(contact, email) for contact, email in free if is_free_mail(email)}
    assert len(free) >= 3
    contacts_per_address = Counter(email for _, email in free)
    assert max(contacts_per_address.values()) == 1


def test_anonymous_research_is_later_identified(events: list[EventRecord]) -> None:
    first_anonymous: dict[str, int] = {}
    identified: dict[str, int] = {}
    for e in events:
        if e.anonymous_id and not (e.contact_id or e.email or e.account_id):
            first_anonymous.setdefault(e.anonymous_id, e.ts)
        elif e.anonymous_id and e.email and e.contact_id:
            identified.setdefault(e.anonymous_id, e.ts)
    stitched = [c for c, ts in identified.items() if first_anonymous.get(c, ts) < ts]
    assert len(stitched) > 100
    assert set(first_anonymous) - set(identified)  # some visitors never identify


def test_erp_orders_name_the_contact_known_by_email(events: list[EventRecord]) -> None:
    erp = {e.contact_id for e in events if e.channel == "order" and e.account_id and e.contact_id}
    assert erp and all(e.account_id.startswith("erp-") for e in events if e.account_id)
    with_email = {e.contact_id for e in events if e.contact_id and e.email}
    assert len(erp & with_email) > 0.8 * len(erp)


def test_duplicates_and_events_without_id(parsed: tuple[list, list]) -> None:
    good, _ = parsed
    by_id: dict[str, set[bytes]] = defaultdict(set)
    for line, record in good:
        by_id[record.event_id].add(line)
    assert all(len(variants) == 1 for variants in by_id.values())  # an id means one event
    copies = Counter(record.event_id for _, record in good)
    assert sum(1 for n in copies.values() if n > 1) >= 5
    derived = [record for line, record in good if not line.startswith(b'{"event_id"')]
    assert len(derived) >= 50 and all(r.event_id.startswith("ev_") for r in derived)


def test_dmu_roles_segments_and_order_properties(events: list[EventRecord]) -> None:
    assert {e.dmu_role for e in events if e.dmu_role} == set(DMU_ROLES)
    assert len({e.segment for e in events if e.segment}) >= 6
    orders = [orjson.loads(e.properties) for e in events if e.type == "order_placed"]
    assert len(orders) > 50
    for props in orders:
        assert props["currency"] == "EUR" and props["order_id"].startswith("SO-")
        total = sum(item["quantity"] * item["price"] for item in props["items"])
        assert abs(total - props["amount"]) < 0.01
    terms = Counter(props["payment_terms"] for props in orders)
    assert terms["invoice"] > 0.8 * len(orders)


def test_the_journeys_reach_every_phase_and_raise_both_alerts(events: list[EventRecord]) -> None:
    ordered = sorted(set(events), key=lambda e: (e.ts, e.event_id))
    engine = JourneyEngine(EngineConfig.default())
    engine.process_all(ordered)
    engine.advance_to(ordered[-1].ts)
    out = engine.take()
    final = {j.account_id: j for j in out.journeys}
    phases = Counter(j.phase for j in final.values() if not j.deleted)
    assert set(phases) == {
        "awareness",
        "consideration",
        "decision",
        "purchase",
        "delivery",
        "loyalty",
    }
    assert phases["awareness"] > phases["purchase"] and phases["loyalty"] > 20  # a funnel, cut late
    alerts = Counter(a.kind for a in out.alerts)
    assert alerts["cart_abandoned"] >= 10 and alerts["deal_stalled"] >= 10


def test_arguments_are_checked() -> None:
    with pytest.raises(ValueError):
        list(simulate(accounts=1, days=1, start=datetime(2026, 1, 5)))  # noqa: DTZ001
    with pytest.raises(ValueError):
        list(simulate(accounts=-1))
    assert list(simulate(accounts=0)) == [] and list(simulate(accounts=5, days=0)) == []


def test_the_command_writes_the_same_lines(tmp_path: Path) -> None:
    out = tmp_path / "events.jsonl"
    result = CliRunner().invoke(
        simulate_command,
        [
            "--accounts",
            "12",
            "--days",
            "30",
            "--seed",
            "4",
            "--start",
            "2026-02-02",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    expected = list(simulate(accounts=12, days=30, seed=4, start=datetime(2026, 2, 2, tzinfo=UTC)))
    assert out.read_bytes() == b"\n".join(expected) + b"\n"
    assert f"simulated {len(expected):,} lines of 12 accounts over 30 days" in result.stderr


def test_the_command_refuses_a_start_without_zone() -> None:
    result = CliRunner().invoke(
        simulate_command, ["--start", "2026-02-02T10:00", "--accounts", "1"]
    )
    assert result.exit_code == 2 and "zone" in result.output
