"""Contract section 2: identity and accounts."""

from __future__ import annotations

from tests.unit.engine.journey import ev, ms, phases, run


def test_account_id_wins_over_email_domain() -> None:
    tables, out = run([ev("page_view", 0, account_id="erp-7", email="jan@kwekerij-x.nl")])
    assert list(tables.journeys) == ["erp-7"]
    assert out.events[0].account_id == "erp-7"


def test_business_email_domain_is_the_account_lower_cased() -> None:
    tables, _ = run([ev("page_view", 0, email="Inkoop@Kwekerij-X.NL")])
    assert list(tables.journeys) == ["kwekerij-x.nl"]


def test_free_mail_contact_is_its_own_account() -> None:
    tables, _ = run(
        [ev("page_view", 0, email="jan@gmail.com"), ev("page_view", 1, email="piet@gmail.com")]
    )
    assert sorted(tables.journeys) == ["jan@gmail.com", "piet@gmail.com"]


def test_two_contacts_of_one_company_share_a_journey() -> None:
    tables, _ = run(
        [ev("page_view", 0, email="a@acme.nl"), ev("pricing_view", 2, email="b@acme.nl")]
    )
    assert phases(tables, "acme.nl") == [
        (None, "awareness", ms(0)),
        ("awareness", "consideration", ms(2)),
    ]


def test_anonymous_history_joins_the_account_and_starts_its_journey() -> None:
    events = [
        ev("content_view", 0, anonymous_id="cookie-1"),
        ev("pricing_view", 24, anonymous_id="cookie-1"),
        ev("page_view", 30, email="boss@acme.nl"),
        ev("signup", 48, anonymous_id="cookie-1", email="jan@acme.nl"),
    ]
    tables, _ = run(events)
    assert phases(tables, "acme.nl") == [
        (None, "awareness", ms(0)),
        ("awareness", "consideration", ms(24)),
    ]
    journey = tables.journeys["acme.nl"]
    assert (journey.first_seen, journey.events) == (ms(0), 4)
    assert {e.record.anonymous_id: e.account_id for e in tables.events.values()} == {
        "cookie-1": "acme.nl",
        None: "acme.nl",
    }


def test_anonymous_events_after_identification_go_to_the_account() -> None:
    tables, out = run(
        [
            ev("signup", 0, anonymous_id="c9", email="jan@acme.nl"),
            ev("page_view", 5, anonymous_id="c9"),
        ]
    )
    assert [e.account_id for e in out.events] == ["acme.nl", "acme.nl"]


def test_visitor_never_identified_has_no_journey_row() -> None:
    tables, out = run(
        [ev("page_view", 0, anonymous_id="x"), ev("pricing_view", 1, anonymous_id="x")]
    )
    assert tables.journeys == {} and tables.transitions == {}
    assert [e.account_id for e in out.events] == [None, None]


def test_erp_account_learnt_through_a_contact_takes_over_the_domain_account() -> None:
    events = [
        ev("pricing_view", 0, contact_id="c-17", email="jan@kwekerij-x.nl"),
        ev("order_placed", 10, account_id="erp-1", contact_id="c-17"),
        ev("page_view", 20, email="piet@kwekerij-x.nl"),
    ]
    tables, out = run(events)
    assert list(tables.journeys) == ["erp-1"]
    assert phases(tables, "erp-1") == [
        (None, "consideration", ms(0)),
        ("consideration", "purchase", ms(10)),
    ]
    assert {e.account_id for e in tables.events.values()} == {"erp-1"}
    assert tables.journeys["erp-1"].events == 3
    assert ("account", "kwekerij-x.nl") in tables.links


def test_two_explicit_accounts_never_merge() -> None:
    events = [
        ev("order_placed", 0, account_id="erp-1", contact_id="c-1"),
        ev("order_placed", 5, account_id="erp-2", contact_id="c-1"),
    ]
    tables, _ = run(events)
    assert sorted(tables.journeys) == ["erp-1", "erp-2"]


def test_retroactive_merge_moves_transitions_earlier() -> None:
    events = [
        ev("page_view", 0, anonymous_id="v"),
        ev("demo", 2, anonymous_id="v"),
        ev("page_view", 5, email="a@acme.nl"),
        ev("pricing_view", 6, email="a@acme.nl"),
        ev("login", 9, anonymous_id="v", email="b@acme.nl"),
    ]
    tables, out = run(events)
    assert phases(tables, "acme.nl") == [
        (None, "awareness", ms(0)),
        ("awareness", "consideration", ms(2)),
    ]
    moved = [t for t in out.transitions if t.to_phase == "consideration"]
    assert [t.transitioned_at for t in moved] == [ms(6), ms(2)]
    assert moved[1].version > moved[0].version  # the newer version wins


def test_identity_links_are_emitted_for_accounts() -> None:
    _, out = run([ev("signup", 0, anonymous_id="v1", contact_id="c1", email="a@acme.nl")])
    assert sorted((link.kind, link.alias, link.account_id) for link in out.links) == [
        ("anonymous_id", "v1", "acme.nl"),
        ("contact_id", "c1", "acme.nl"),
        ("email", "a@acme.nl", "acme.nl"),
    ]


def test_forgotten_visitors_free_their_state() -> None:
    from tests.unit.engine.journey import DAY, engine

    eng = engine(visitor_ttl=30 * DAY)
    eng.process(ev("page_view", 0, anonymous_id="gone"))
    eng.process(ev("page_view", 31 * 24, email="a@acme.nl"))
    assert "?a:gone" not in eng.holders and "a:gone" not in eng.aliases
    eng.process(ev("signup", 32 * 24, anonymous_id="gone", email="b@acme.nl"))
    out = eng.take()
    assert out.journeys[-1].first_seen == ms(31 * 24)
