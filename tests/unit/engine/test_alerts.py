"""Contract section 3: alerts in event time."""

from __future__ import annotations

import orjson

from journeys.sinks.reference import FinalTables
from tests.unit.engine.journey import DAY, HOUR, engine, ev, ms, run

CART = "cart_abandoned"
STALL = "deal_stalled"


def alerts(tables: FinalTables, kind: str | None = None) -> list[tuple[str, str, int, int | None]]:
    rows = sorted(tables.alerts.values(), key=lambda a: a.raised_at)
    return [
        (a.kind, a.account_id, a.raised_at, a.resolved_at) for a in rows if kind in (None, a.kind)
    ]


def test_cart_abandoned_four_hours_after_last_cart_activity() -> None:
    tables, _ = run([ev("add_to_cart", 0), ev("add_to_cart", 1), ev("page_view", 10)])
    assert alerts(tables) == [(CART, "acme", ms(5), None)]
    details = orjson.loads(tables.alerts[next(iter(tables.alerts))].details)
    assert details["last_cart_activity_at"] == "2026-03-02T10:00:00.000Z"


def test_checkout_within_the_threshold_prevents_it() -> None:
    tables, _ = run([ev("add_to_cart", 0), ev("checkout_started", 3.9), ev("page_view", 20)])
    assert alerts(tables) == []


def test_checkout_exactly_at_the_threshold_prevents_it() -> None:
    tables, _ = run([ev("add_to_cart", 0), ev("checkout_started", 4), ev("page_view", 20)])
    assert alerts(tables) == []


def test_order_within_the_threshold_prevents_it() -> None:
    tables, _ = run([ev("add_to_cart", 0), ev("order_placed", 2), ev("page_view", 20)])
    assert alerts(tables) == []


def test_cart_activity_after_checkout_restarts_the_clock() -> None:
    tables, _ = run([ev("add_to_cart", 0), ev("checkout_started", 1), ev("remove_from_cart", 2)])
    assert alerts(tables) == []  # due at 6h, input ends at 2h
    tables, _ = run(
        [
            ev("add_to_cart", 0),
            ev("checkout_started", 1),
            ev("remove_from_cart", 2),
            ev("page_view", 7),
        ]
    )
    assert alerts(tables) == [(CART, "acme", ms(6), None)]


def test_once_per_cart_episode_and_an_order_ends_it() -> None:
    events = [
        ev("add_to_cart", 0),
        ev("add_to_cart", 10),
        ev("order_placed", 30),
        ev("add_to_cart", 40),
        ev("page_view", 50),
    ]
    tables, _ = run(events)
    assert alerts(tables) == [(CART, "acme", ms(4), ms(30)), (CART, "acme", ms(44), None)]


def test_alert_due_at_the_last_event_time_is_raised_by_the_end_of_replay() -> None:
    tables, _ = run([ev("add_to_cart", 0), ev("page_view", 4)])
    assert alerts(tables) == [(CART, "acme", ms(4), None)]


def test_cart_threshold_is_a_setting() -> None:
    tables, _ = run([ev("add_to_cart", 0), ev("page_view", 2)], cart_abandon_after=30 * 60_000)
    assert alerts(tables) == [(CART, "acme", ms(0.5), None)]


def test_deal_stalled_after_fourteen_quiet_days_with_an_open_quote() -> None:
    tables, _ = run([ev("product_view", 0), ev("quote_requested", 1), ev("sent", 400)])
    assert alerts(tables) == [(STALL, "acme", ms(1) + 14 * DAY, None)]
    details = orjson.loads(next(iter(tables.alerts.values())).details)
    assert details["phase"] == "consideration"


def test_no_stall_without_an_open_quote_demo_or_meeting() -> None:
    tables, _ = run([ev("product_view", 0), ev("sent", 400)])
    assert alerts(tables) == []


def test_supplier_actions_do_not_count_as_account_activity() -> None:
    events = [
        ev("demo", 0),
        ev("sent", 24),
        ev("delivered", 48),
        ev("invoice_sent", 100),
        ev("open", 400),
    ]
    tables, _ = run(events)
    assert alerts(tables) == [(STALL, "acme", ms(0) + 14 * DAY, ms(400))]


def test_account_activity_postpones_the_stall() -> None:
    tables, _ = run([ev("meeting", 0), ev("page_view", 100), ev("sent", 1000)])
    assert alerts(tables) == [(STALL, "acme", ms(100) + 14 * DAY, None)]


def test_quote_sent_by_the_supplier_opens_a_deal_from_its_own_time() -> None:
    tables, _ = run([ev("product_view", 0), ev("quote_sent", 200), ev("sent", 1000)])
    assert alerts(tables) == [(STALL, "acme", ms(200) + 14 * DAY, None)]


def test_once_per_stall_and_new_activity_ends_it() -> None:
    events = [ev("demo", 0), ev("click", 400), ev("sent", 1000)]
    tables, _ = run(events)
    assert alerts(tables) == [
        (STALL, "acme", ms(0) + 14 * DAY, ms(400)),
        (STALL, "acme", ms(400) + 14 * DAY, None),
    ]


def test_no_stall_once_the_account_bought() -> None:
    tables, _ = run([ev("quote_requested", 0), ev("order_placed", 5), ev("sent", 1000)])
    assert alerts(tables) == []


def test_stall_threshold_is_a_setting() -> None:
    tables, _ = run([ev("demo", 0), ev("sent", 30)], deal_stall_after=DAY)
    assert alerts(tables) == [(STALL, "acme", ms(24), None)]


def test_alert_ids_are_deterministic() -> None:
    first, _ = run([ev("add_to_cart", 0, event_id="x"), ev("page_view", 9, event_id="y")])
    second, _ = run([ev("add_to_cart", 0, event_id="x"), ev("page_view", 9, event_id="y")])
    assert list(first.alerts) == list(second.alerts) and len(first.alerts) == 1


def test_visitors_raise_no_alerts_until_identified() -> None:
    events = [ev("add_to_cart", 0, anonymous_id="v"), ev("page_view", 10, anonymous_id="v")]
    tables, _ = run(events)
    assert alerts(tables) == []
    tables, _ = run(events + [ev("login", 12, anonymous_id="v", email="a@acme.nl")])
    # Raised when identified, at the moment its threshold passed (event time).
    assert alerts(tables) == [(CART, "acme.nl", ms(0) + 4 * HOUR, None)]


REORDER = "reorder_due"
LOYAL = [ev("order_placed", 0), ev("order_delivered", 48), ev("order_placed", 10 * 24)]


def test_reorder_due_after_the_usual_interval_times_the_factor() -> None:
    events = [*LOYAL, ev("order_placed", 20 * 24), ev("page_view", 40 * 24)]
    tables, _ = run(events)
    # Intervals of 10 days; due 15 days after the last order.
    assert alerts(tables, REORDER) == [(REORDER, "acme", ms(35 * 24), None)]
    details = orjson.loads(next(iter(tables.alerts.values())).details)
    assert (details["median_days"], details["threshold_ms"]) == (10.0, 15 * DAY)
    assert details["last_order_at"] == "2026-03-22T09:00:00.000Z"


def test_the_next_order_resolves_a_reorder_and_starts_the_next_wait() -> None:
    events = [*LOYAL, ev("order_placed", 20 * 24), ev("order_placed", 38 * 24), ev("open", 80 * 24)]
    tables, _ = run(events)
    # Intervals 10, 10, 18: median 10, due 15 days after each order.
    assert alerts(tables, REORDER) == [
        (REORDER, "acme", ms(35 * 24), ms(38 * 24)),
        (REORDER, "acme", ms(53 * 24), None),
    ]


def test_reorder_factor_is_a_setting() -> None:
    tables, _ = run([*LOYAL, ev("page_view", 13 * 24)], reorder_factor=0.2)
    assert alerts(tables, REORDER) == [(REORDER, "acme", ms(12 * 24), None)]


def test_no_reorder_before_loyalty_or_before_a_second_order() -> None:
    assert alerts(run([ev("order_placed", 0), ev("order_placed", 24), ev("open", 999)])[0]) == []
    assert alerts(run([ev("order_placed", 0), ev("order_delivered", 2), ev("open", 999)])[0]) == []


def test_a_late_order_withdraws_a_reorder_alert() -> None:
    eng = engine()
    eng.process_all([*LOYAL, ev("page_view", 26 * 24)])
    raised = eng.take().alerts
    assert [(a.kind, a.raised_at) for a in raised] == [(REORDER, ms(25 * 24))]
    eng.process_late(ev("order_placed", 24 * 24))  # two days late, within the window
    assert [(a.alert_id, a.status) for a in eng.take().alerts] == [
        (raised[0].alert_id, "withdrawn")
    ]
