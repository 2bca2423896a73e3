"""Late data is data: events after their time still move journeys, correct transitions and
raise or withdraw alerts; a redelivery is one event; ties between accounts go by event time."""

from __future__ import annotations

from dataclasses import replace
from itertools import permutations

from journeys.schemas.rows import Output
from journeys.sinks.reference import final_tables
from tests.unit.engine.journey import DAY, HOUR, arrive, engine, ev, ms, phases, run, view

CART = "cart_abandoned"
STALL = "deal_stalled"


def test_an_erp_order_arriving_after_everything_moves_the_account_to_purchase() -> None:
    web = [ev("page_view", h, email="jan@acme.nl") for h in (0, 1, 2)] + [
        ev("pricing_view", 3, email="jan@acme.nl")
    ]
    order = ev("order_placed", 2.5, account_id="erp-1", email="jan@acme.nl")
    eng = engine()
    out = Output()
    eng.process_all(web)
    eng.advance_to(web[-1].ts)  # the partitions went idle: event time is settled
    out.extend(eng.take())
    eng.process_late(order)  # the nightly export
    out.extend(eng.take())
    tables = final_tables(out)
    assert tables.journeys["erp-1"].phase == "purchase"
    assert phases(tables, "erp-1") == [
        (None, "awareness", ms(0)),
        ("awareness", "purchase", ms(2.5)),
    ]
    assert "acme.nl" not in tables.journeys  # the domain account merged into the ERP account
    assert view(tables) == view(run([*web, order])[0])


def test_a_redelivery_with_a_moved_time_is_one_event_and_the_earliest_time_wins() -> None:
    first = ev("pricing_view", 1, event_id="seg-1", anonymous_id="v", email="jan@acme.nl")
    retried = ev(
        "pricing_view", 1 + 3 / 3600, event_id="seg-1", anonymous_id="v", email="jan@acme.nl"
    )
    for order in ([first, retried], [retried, first]):
        eng = engine()
        out = Output()
        for event in order:
            eng.process(event)
        eng.advance_to(retried.ts)
        out.extend(eng.take())
        tables = final_tables(out)
        assert tables.journeys["acme.nl"].events == 1
        assert tables.journeys["acme.nl"].first_seen == first.ts
        assert tables.events["seg-1"].record.ts == first.ts
        assert tables.transitions[("acme.nl", "consideration")].transitioned_at == first.ts
        assert eng.duplicates == 1


def test_events_of_the_same_tick_are_ordered_by_event_id_whatever_their_arrival() -> None:
    view_ = ev("product_view", 1, event_id="t1-a", email="jan@acme.nl")
    order = ev("order_placed", 1, event_id="t1-b", email="jan@acme.nl")
    before = ev("page_view", 1 - 1 / 3_600_000, event_id="t0", email="jan@acme.nl")
    expected = view(run([before, view_, order])[0])
    for arrival in permutations([before, view_, order]):
        assert view(arrive(list(arrival))[0]) == expected
    assert phases(run([before, view_, order])[0], "acme.nl") == [
        (None, "awareness", before.ts),
        ("awareness", "consideration", view_.ts),
        ("consideration", "purchase", order.ts),
    ]


def test_a_late_delivery_promotes_an_order_already_seen_to_loyalty() -> None:
    events = [ev("order_placed", 0), ev("order_placed", 100)]
    delivered = ev("order_delivered", 48)
    tables, _ = arrive([*events, delivered], lateness=0)
    assert phases(tables) == [
        (None, "purchase", ms(0)),
        ("purchase", "delivery", ms(48)),
        ("delivery", "loyalty", ms(100)),
    ]
    assert view(tables) == view(run([*events, delivered])[0])


def test_a_late_activity_withdraws_a_stalled_deal_and_it_is_raised_again_when_due() -> None:
    eng = engine()
    out = Output()
    eng.process(ev("demo", 0))
    eng.advance_to(ms(15 * 24))
    raised = eng.take().alerts
    assert [(a.kind, a.raised_at, a.status) for a in raised] == [(STALL, ms(14 * 24), "raised")]
    eng.process_late(ev("page_view", 10 * 24))  # a visit logged late
    eng.advance_to(ms(15 * 24))
    withdrawn = eng.take().alerts
    assert [(a.alert_id, a.status) for a in withdrawn] == [(raised[0].alert_id, "withdrawn")]
    assert withdrawn[0].version > raised[0].version
    eng.advance_to(ms(25 * 24))
    again = eng.take().alerts
    # The same stall of the same deal: same id, a higher version, the moved deadline.
    assert [(a.alert_id, a.raised_at, a.status) for a in again] == [
        (raised[0].alert_id, ms(24 * 24), "raised")
    ]
    assert again[0].version > withdrawn[0].version
    out.extend(Output(alerts=[*raised, *withdrawn, *again]))
    assert len(final_tables(out).current()["alerts_current"]) == 1


def test_a_late_order_withdraws_an_abandoned_cart() -> None:
    eng = engine()
    eng.process(ev("add_to_cart", 0))
    eng.advance_to(ms(5))
    raised = eng.take().alerts
    assert [(a.kind, a.raised_at) for a in raised] == [(CART, ms(4))]
    eng.process_late(ev("order_placed", 3))
    eng.advance_to(ms(5))
    out = eng.take()
    assert [(a.alert_id, a.status) for a in out.alerts] == [(raised[0].alert_id, "withdrawn")]
    both = Output(alerts=[*raised, *out.alerts])
    assert final_tables(both).current()["alerts_current"] == {}


def test_a_late_cart_activity_moves_the_alert_and_keeps_its_id() -> None:
    eng = engine()
    eng.process(ev("add_to_cart", 0))
    eng.advance_to(ms(10))
    raised = eng.take().alerts
    eng.process_late(ev("remove_from_cart", 2))
    eng.advance_to(ms(10))
    moved = eng.take().alerts
    assert [(a.alert_id, a.raised_at, a.status) for a in moved] == [
        (raised[0].alert_id, ms(6), "raised")
    ]


def test_a_late_event_makes_an_alert_due_at_its_event_time_moment() -> None:
    eng = engine()
    eng.process(ev("page_view", 0))
    eng.advance_to(ms(30))
    assert eng.take().alerts == []
    eng.process_late(ev("add_to_cart", 20))
    eng.advance_to(ms(30))
    assert [(a.kind, a.raised_at) for a in eng.take().alerts] == [(CART, ms(24))]


def test_alerts_wait_for_event_time_to_pass_their_deadline() -> None:
    eng = engine()
    eng.process_late(ev("add_to_cart", 0))
    eng.advance_to(ms(3.9))
    assert eng.take().alerts == []
    eng.advance_to(ms(4))
    assert [a.raised_at for a in eng.take().alerts] == [ms(4)]


def test_an_alias_seen_with_two_accounts_belongs_to_the_earliest_link_whatever_the_order() -> None:
    events = [
        ev("meeting", 10, account_id="erp-new", contact_id="c-17"),
        ev("order_placed", 2, account_id="erp-old", contact_id="c-17"),
        ev("page_view", 5, account_id="erp-old"),
        ev("invoice_paid", 20, account_id="erp-new"),
    ]
    expected = view(run(events)[0])
    assert expected["links"][("contact_id", "c-17")] == ("erp-old", ms(2))
    for order in permutations(events):
        tables, _ = arrive(list(order))
        assert view(tables) == expected
        assert tables.journeys["erp-old"].contacts == 1
        assert tables.journeys["erp-new"].contacts == 0


def test_a_company_domain_seen_first_joins_the_erp_account_learnt_later() -> None:
    events = [
        ev("order_placed", 5, account_id="erp-1", contact_id="c1"),
        ev("pricing_view", 1, email="jan@acme.nl", contact_id="c1"),
        ev("page_view", 8, email="piet@acme.nl"),
    ]
    expected = view(run(events)[0])
    assert list(expected["journeys"]) == ["erp-1"]
    for order in permutations(events):
        assert view(arrive(list(order))[0]) == expected


def test_a_sign_up_that_arrives_after_the_order_keeps_its_link_times() -> None:
    """A visitor signs up (company email) and orders through the ERP days later; the
    sign-up reaches the pipeline after the order. Its aliases still belong to the account
    from the sign-up on, and the company domain joins the ERP account at the order."""
    events = [
        ev("page_view", 0, anonymous_id="v1"),
        ev("signup", 1, anonymous_id="v1", contact_id="c1", email="anna@kas.nl"),
        ev("add_to_cart", 70, anonymous_id="v1", contact_id="c1"),
        ev("order_placed", 72, account_id="erp-9", contact_id="c1"),
        ev("page_view", 0.5, email="piet@kas.nl"),
    ]
    expected = view(run(events)[0])
    assert expected["links"][("email", "anna@kas.nl")] == ("erp-9", ms(1))
    assert expected["links"][("anonymous_id", "v1")] == ("erp-9", ms(1))
    assert expected["links"][("account", "kas.nl")] == ("erp-9", ms(72))
    for order in permutations(events):
        assert view(arrive(list(order))[0]) == expected, order


def test_an_earlier_copy_of_a_merge_moves_the_merge_back() -> None:
    """The event that joined a company domain to its ERP account is delivered again
    with an earlier time (a retried call): the domain belongs to the account from then."""
    signup = ev("signup", 0, contact_id="c1", email="jan@acme.nl", anonymous_id="v1")
    order = ev("order_placed", 0.25, account_id="erp-a", contact_id="c1")
    visit = ev("page_view", 0, email="boss@acme.nl")
    earlier = [replace(e, ts=e.ts - 3000) for e in (signup, order, visit)]
    expected = view(run([signup, order, visit, *earlier])[0])
    assert expected["links"][("account", "acme.nl")] == ("erp-a", ms(0.25) - 3000)
    assert view(arrive([signup, visit, order, *earlier])[0]) == expected
    assert view(arrive([order, visit, signup, *reversed(earlier)])[0]) == expected


def test_events_older_than_the_window_still_move_phases() -> None:
    eng = engine(window=DAY)
    out = Output()
    eng.process(ev("order_placed", 0))
    eng.process(ev("order_placed", 30))  # before any delivery: a purchase, remembered
    eng.process(ev("page_view", 200))
    out.extend(eng.take())
    eng.process_late(ev("order_delivered", 10))  # 190 hours late
    eng.advance_to(ms(200))
    out.extend(eng.take())
    assert phases(final_tables(out)) == [
        (None, "purchase", ms(0)),
        ("purchase", "delivery", ms(10)),
        ("delivery", "loyalty", ms(30)),
    ]


def test_a_visitor_cart_is_alerted_once_identified_at_its_deadline() -> None:
    events = [
        ev("add_to_cart", 0, anonymous_id="v"),
        ev("page_view", 10, anonymous_id="v"),
        ev("login", 12, anonymous_id="v", email="a@acme.nl"),
    ]
    expected = view(run(events)[0])
    assert [(a.kind, a.raised_at) for a in expected["alerts"].values()] == [(CART, ms(4))]
    for order in permutations(events):
        assert view(arrive(list(order), lateness=HOUR)[0]) == expected


def test_a_batch_of_late_events_folds_each_journey_once_to_the_same_tables() -> None:
    events = [ev("page_view", h, email=f"u{h % 3}@acme{h % 2}.nl") for h in range(0, 48, 2)]
    late = [ev("order_placed", h + 0.5, email=f"u{h % 3}@acme{h % 2}.nl") for h in range(0, 40, 8)]
    one_by_one, batched = engine(), engine()
    for eng in (one_by_one, batched):
        eng.process_all(events)
        eng.advance_to(events[-1].ts)
    for event in late:
        one_by_one.process_late(event)
    batched.process_late_batch(late)
    tables = [final_tables(eng.take()) for eng in (one_by_one, batched)]
    assert view(tables[0]) == view(tables[1]) == view(run([*events, *late])[0])
    assert {j.phase for j in tables[1].journeys.values()} == {"purchase"}
