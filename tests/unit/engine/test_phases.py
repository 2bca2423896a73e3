"""Contract section 3: phases and transitions, rule by rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.engine.journey import ev, ms, phases, run

CONSIDERATION = [
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
]
DECISION = ["checkout_started", "quote_sent", "quote_accepted", "deal_stage_changed"]
PURCHASE = ["order_placed", "deal_won"]
DELIVERY = ["order_shipped", "order_delivered"]


def test_first_activity_reaches_awareness() -> None:
    tables, _ = run([ev("page_view", 0), ev("content_view", 1)])
    assert phases(tables) == [(None, "awareness", ms(0))]
    journey = tables.journeys["acme"]
    assert (journey.phase, journey.phase_since, journey.first_seen, journey.last_seen) == (
        "awareness",
        ms(0),
        ms(0),
        ms(1),
    )


@pytest.mark.parametrize("type_", CONSIDERATION)
def test_consideration_types(type_: str) -> None:
    tables, _ = run([ev("page_view", 0), ev(type_, 1)])
    assert phases(tables) == [(None, "awareness", ms(0)), ("awareness", "consideration", ms(1))]


@pytest.mark.parametrize("type_", DECISION)
def test_decision_types(type_: str) -> None:
    tables, _ = run([ev("product_view", 0), ev(type_, 2)])
    assert phases(tables)[-1] == ("consideration", "decision", ms(2))


@pytest.mark.parametrize("type_", PURCHASE)
def test_purchase_types(type_: str) -> None:
    tables, _ = run([ev("pricing_view", 0), ev(type_, 3)])
    assert phases(tables)[-1] == ("consideration", "purchase", ms(3))


@pytest.mark.parametrize("type_", DELIVERY)
def test_delivery_types(type_: str) -> None:
    tables, _ = run([ev("order_placed", 0), ev(type_, 30)])
    assert phases(tables)[-1] == ("purchase", "delivery", ms(30))


def test_skipped_phases_are_not_invented() -> None:
    tables, _ = run([ev("page_view", 0), ev("order_placed", 1)])
    assert phases(tables) == [(None, "awareness", ms(0)), ("awareness", "purchase", ms(1))]


def test_phases_never_move_back() -> None:
    tables, _ = run([ev("order_placed", 0), ev("page_view", 5), ev("pricing_view", 6)])
    assert phases(tables) == [(None, "purchase", ms(0))]
    assert tables.journeys["acme"].phase == "purchase"
    assert tables.journeys["acme"].phase_since == ms(0)


def test_transition_records_the_event_that_caused_it() -> None:
    tables, _ = run([ev("page_view", 0, event_id="first"), ev("demo", 1, event_id="the-demo")])
    row = tables.transitions[("acme", "consideration")]
    assert (row.event_id, row.event_type, row.channel) == ("the-demo", "demo", "sales")


def test_second_order_after_delivery_is_loyalty() -> None:
    events = [ev("order_placed", 0), ev("order_delivered", 48), ev("order_placed", 500)]
    tables, _ = run(events)
    assert phases(tables)[-1] == ("delivery", "loyalty", ms(500))


def test_second_order_before_delivery_is_not_loyalty() -> None:
    tables, _ = run([ev("order_placed", 0), ev("order_placed", 10)])
    assert tables.journeys["acme"].phase == "purchase"


def test_invoice_paid_after_delivery_is_loyalty() -> None:
    tables, _ = run([ev("order_placed", 0), ev("order_shipped", 24), ev("invoice_paid", 200)])
    assert phases(tables)[-1] == ("delivery", "loyalty", ms(200))


def test_invoice_paid_before_delivery_moves_nothing() -> None:
    tables, _ = run([ev("order_placed", 0), ev("invoice_paid", 5)])
    assert tables.journeys["acme"].phase == "purchase"


def test_survey_after_purchase_is_loyalty() -> None:
    tables, _ = run([ev("order_placed", 0), ev("survey_response", 5)])
    assert phases(tables)[-1] == ("purchase", "loyalty", ms(5))


def test_survey_before_purchase_is_only_activity() -> None:
    tables, _ = run([ev("page_view", 0), ev("survey_response", 5)])
    assert tables.journeys["acme"].phase == "awareness"


def test_supplier_action_alone_starts_no_journey() -> None:
    tables, out = run([ev("sent", 0), ev("delivered", 0.1)])
    assert tables.journeys == {} and tables.transitions == {}
    assert len(out.events) == 2  # stored all the same


def test_supplier_actions_move_phases_without_awareness() -> None:
    tables, _ = run([ev("quote_sent", 0)])
    assert phases(tables) == [(None, "decision", ms(0))]
    assert tables.journeys["acme"].last_activity is None


def test_supplier_actions_are_not_activity() -> None:
    tables, _ = run([ev("page_view", 0), ev("sent", 10), ev("order_shipped", 20)])
    journey = tables.journeys["acme"]
    assert (journey.last_activity, journey.last_seen) == (ms(0), ms(20))


def test_unknown_types_are_kept_and_move_nothing_but_count_as_activity() -> None:
    tables, out = run([ev("webinar_attended", 0)])
    assert [e.record.type for e in out.events] == ["webinar_attended"]
    assert phases(tables) == [(None, "awareness", ms(0))]


def test_dmu_roles_contacts_and_segment() -> None:
    tables, _ = run(
        [
            ev("page_view", 0, email="a@acme.nl", contact_id="c1", dmu_role="initiator"),
            ev(
                "pricing_view",
                1,
                email="b@acme.nl",
                contact_id="c2",
                dmu_role="buyer",
                segment="tomato growers",
            ),
            ev("open", 2, email="a@acme.nl", contact_id="c1", dmu_role="initiator"),
        ]
    )
    journey = tables.journeys["acme.nl"]
    assert journey.dmu_roles == ("initiator", "buyer")
    assert (journey.contacts, journey.segment, journey.events) == (2, "tomato growers", 3)


def test_rules_file_replaces_the_defaults(tmp_path: Path) -> None:
    from journeys.streams.engine import JourneyEngine, load_rules
    from journeys.streams.engine.engine import EngineConfig

    path = tmp_path / "rules.toml"
    path.write_text(
        'phases = ["lead", "customer"]\n'
        "supplier_actions = []\n"
        '[[rule]]\nphase = "customer"\ntypes = ["order.order_placed"]\n'
    )
    eng = JourneyEngine(EngineConfig(rules=load_rules(path)))
    eng.process_all([ev("page_view", 0), ev("pricing_view", 1), ev("order_placed", 2)])
    out = eng.take()
    assert [(t.from_phase, t.to_phase) for t in out.transitions] == [
        (None, "lead"),
        ("lead", "customer"),
    ]
