"""The simulator: deterministic, valid, and exercising every rule."""

from __future__ import annotations

from collections import Counter

import orjson

from producers.simulator import simulate
from schemas.errors import InvalidEvent
from schemas.event import KNOWN_TYPES, parse_event
from schemas.identity import is_free_mail
from streams.engine import EngineConfig, JourneyEngine

LINES = list(simulate(accounts=200, days=120, seed=3))


def parsed() -> tuple[list, list]:  # type: ignore[type-arg]
    good, bad = [], []
    for line in LINES:
        try:
            good.append(parse_event(line))
        except InvalidEvent:
            bad.append(line)
    return good, bad


def test_same_seed_same_bytes_other_seed_other_bytes() -> None:
    assert list(simulate(accounts=20, days=30, seed=3)) == list(simulate(accounts=20, days=30, seed=3))
    assert list(simulate(accounts=20, days=30, seed=4)) != list(simulate(accounts=20, days=30, seed=3))


def test_malformed_share_and_every_other_line_valid() -> None:
    good, bad = parsed()
    assert 0.002 < len(bad) / len(LINES) < 0.01
    assert len(good) + len(bad) == len(LINES)


def test_every_channel_and_every_phase_moving_type_appears() -> None:
    good, _ = parsed()
    seen = Counter((e.channel, e.type) for e in good)
    assert {c for c, _ in seen} == {"web", "email", "order", "sales"}
    moving = {
        "page_view", "product_view", "pricing_view", "review_view", "compare", "add_to_cart", "form_submit",
        "quote_requested", "meeting", "call", "demo", "checkout_started", "quote_sent", "quote_accepted",
        "order_placed", "deal_won", "order_shipped", "order_delivered", "invoice_paid", "survey_response",
    }
    assert moving <= {t for _, t in seen}
    assert all(t in KNOWN_TYPES[c] for c, t in seen)


def test_identities_duplicates_and_missing_ids() -> None:
    good, _ = parsed()
    assert any(e.email and is_free_mail(e.email) for e in good)
    assert any(e.anonymous_id and e.email for e in good)  # sign-ups stitch cookies
    assert any(e.anonymous_id and not (e.email or e.contact_id or e.account_id) for e in good)
    assert any(e.account_id and e.contact_id for e in good)  # ERP orders name the contact
    ids = Counter(e.event_id for e in good)
    assert any(n > 1 for n in ids.values())
    assert any(b'"event_id"' not in line for line in LINES if line.startswith(b"{") and b'"channel":"web"' in line)


def test_the_journeys_it_makes_reach_every_phase_and_raise_both_alerts() -> None:
    good, _ = parsed()
    engine = JourneyEngine(EngineConfig.default())
    ordered = sorted(good, key=lambda e: (e.ts, e.event_id))
    engine.process_all(ordered)
    engine.advance_to(ordered[-1].ts)
    out = engine.take()
    phases = Counter(j.phase for j in out.journeys)
    assert set(phases) == {"awareness", "consideration", "decision", "purchase", "delivery", "loyalty"}
    assert {a.kind for a in out.alerts} == {"cart_abandoned", "deal_stalled"}


def test_lines_are_single_json_objects() -> None:
    for line in LINES[:500]:
        assert b"\n" not in line
        if line.startswith(b"{") and line.endswith(b"}"):
            orjson.loads(line)
