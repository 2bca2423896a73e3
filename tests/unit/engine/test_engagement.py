"""Contract section 8: the engagement score and the `account_hot` alert, in event time."""

from __future__ import annotations

import math
import random
import tomllib
from collections import Counter
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from journeys.schemas.errors import ConfigError
from journeys.schemas.record import EventRecord
from journeys.sinks.reference import FinalTables
from journeys.streams.engine.alerts import alert_id
from journeys.streams.engine.rules import Rules, compile_rules, default_rules_text
from journeys.streams.engine.state import Fold
from tests.unit.engine.journey import DAY, HOUR, arrive, ev, ms, run, view
from tests.unit.engine.test_arrival import SHORT, WHO, check, histories

HOT = "account_hot"


def rules_with(engagement: Any) -> Rules:
    """The default rules with another `[engagement]` table (None: without one)."""
    data = tomllib.loads(default_rules_text())
    if engagement is None:
        del data["engagement"]
    else:
        data["engagement"] = engagement
    return compile_rules(data, source="test rules")


#: A day's half-life and low thresholds: episodes come and go within a few days.
QUICK_TABLE: dict[str, Any] = {
    "half_life": "1d",
    "warm": 4.0,
    "hot": 10.0,
    "weights": {"default": 1.0, "demo": 5.0, "meeting": 10.0, "email.open": 0.5},
}
QUICK = rules_with(QUICK_TABLE)
#: The same with a half-life of hours: in a few days of history, accounts heat and cool often.
FLICKER = rules_with({**QUICK_TABLE, "half_life": "4h"})


def cooled(act: int, score: float, warm: float, half_life: int) -> int:
    """The first millisecond at which `score`, kept at `act`, has decayed below `warm`."""
    return act + math.floor(half_life * math.log2(score / warm)) + 1


def hot_alerts(tables: FinalTables) -> list[tuple[str, int, int | None]]:
    current = tables.current()["alerts_current"].values()
    rows = sorted((a for a in current if a.kind == HOT), key=lambda a: a.raised_at)
    return [(a.alert_id, a.raised_at, a.resolved_at) for a in rows]


# ------------------------------------------------------------------ the score


def test_the_score_halves_every_half_life() -> None:
    tables, _ = run([ev("pricing_view", 0), ev("demo", 14 * 24)])
    journey = tables.journeys["acme"]
    assert journey.engagement == 3 * 0.5 + 5
    assert journey.engagement_at == ms(14 * 24)
    assert (journey.engagement_half_life_ms, journey.engagement_warm, journey.engagement_hot) == (
        14 * DAY,
        10.0,
        25.0,
    )


def test_supplier_actions_never_count() -> None:
    tables, _ = run([ev("demo", 0), ev("sent", 5), ev("order_shipped", 6)])
    journey = tables.journeys["acme"]
    assert (journey.engagement, journey.engagement_at) == (5.0, ms(0))


def test_every_activity_moves_the_score_to_its_time_and_adds_its_weight() -> None:
    tables, _ = run([ev("demo", 0), ev("open", 7 * 24), ev("webinar", 14 * 24)])
    journey = tables.journeys["acme"]
    # demo 5, open 0.5 a week later, an unknown type (the default weight, 1) a week later.
    expected = (5 * 2**-0.5 + 0.5) * 2**-0.5 + 1.0
    assert journey.engagement == round(expected, 6)
    assert journey.engagement_at == ms(14 * 24)


def test_an_account_heats_once_per_episode_and_cools_below_warm() -> None:
    events = [
        ev("demo", 0, event_id="h1"),
        ev("demo", 0, event_id="h2"),  # 5 + 5 = 10: hot
        ev("demo", 24, event_id="h3"),  # 10 / 2 = 5 before it, not below warm: same episode
        ev("demo", 72, event_id="h4"),  # 10 / 4 = 2.5 before it: cooled; 7.5 after
        ev("demo", 72, event_id="h5"),  # 12.5: hot again, a new episode
    ]
    tables, _ = run(events, rules=QUICK)
    # Resolved when the score of 10 (at h3) decayed below warm (4), before h4 came.
    assert hot_alerts(tables) == [
        (alert_id(HOT, "h2"), ms(0), cooled(ms(24), 10.0, 4.0, DAY)),
        (alert_id(HOT, "h5"), ms(72), None),
    ]
    details = orjson.loads(tables.alerts[alert_id(HOT, "h5")].details)
    assert details == {
        "phase": "consideration",
        "score": 12.5,
        "hot": 10.0,
        "warm": 4.0,
        "half_life_ms": DAY,
    }
    assert tables.journeys["acme"].engagement == 12.5


def test_one_event_can_end_an_episode_and_start_the_next() -> None:
    events = [
        ev("meeting", 0, event_id="m1"),  # 10: hot
        ev("meeting", 72, event_id="m2"),  # 1.25 before it: cooled; 11.25: hot again
    ]
    tables, _ = run(events, rules=QUICK)
    assert hot_alerts(tables) == [
        (alert_id(HOT, "m1"), ms(0), cooled(ms(0), 10.0, 4.0, DAY)),
        (alert_id(HOT, "m2"), ms(72), None),
    ]


def test_a_quiet_hot_account_is_resolved_when_its_score_cools_below_warm() -> None:
    events = [ev("meeting", 0, event_id="q1")]  # 10: hot, then nothing
    cooling = cooled(ms(0), 10.0, 4.0, DAY)
    still, _ = run(events, until=cooling - 1, rules=QUICK)
    assert hot_alerts(still) == [(alert_id(HOT, "q1"), ms(0), None)]
    tables, _ = run(events, until=cooling, rules=QUICK)
    assert hot_alerts(tables) == [(alert_id(HOT, "q1"), ms(0), cooling)]
    assert (
        10.0 * 2 ** (-(cooling - ms(0)) / DAY) < 4.0 <= 10.0 * 2 ** (-(cooling - 1 - ms(0)) / DAY)
    )


def test_a_late_event_moves_the_alert_to_the_event_that_heated_the_account() -> None:
    first, later = ev("demo", 0, event_id="a"), ev("meeting", 10, event_id="c")
    late = ev("meeting", 5, event_id="b")
    before, _ = arrive([first, later], rules=QUICK)
    assert [a for a, *_ in hot_alerts(before)] == [alert_id(HOT, "c")]
    tables, out = arrive([first, later, late], rules=QUICK)
    assert view(tables) == view(run([first, late, later], rules=QUICK)[0])
    assert [a for a, *_ in hot_alerts(tables)] == [alert_id(HOT, "b")]
    withdrawn = [a.alert_id for a in out.alerts if a.withdrawn]
    assert withdrawn == [alert_id(HOT, "c")]


def test_events_older_than_the_window_add_their_decayed_weight() -> None:
    events = [ev("demo", 0), ev("pricing_view", 200), ev("demo", 400)]
    old = ev("meeting", 2)
    expected = run([*events, old])[0].journeys["acme"]
    got = arrive([*events, old], window=DAY)[0].journeys["acme"]
    assert got.engagement == pytest.approx(expected.engagement, abs=1e-6)
    assert got.engagement_at == expected.engagement_at == ms(400)


def test_engagement_off_keeps_no_score_and_raises_nothing() -> None:
    rules = rules_with({"enabled": False})
    tables, _ = run([ev("meeting", h) for h in range(10)], rules=rules)
    journey = tables.journeys["acme"]
    assert (journey.engagement, journey.engagement_at, journey.engagement_half_life_ms) == (
        0.0,
        None,
        0,
    )
    assert hot_alerts(tables) == []


# ------------------------------------------------------------------ rules


def test_a_rules_file_without_engagement_gets_the_default_score() -> None:
    rules = rules_with(None)
    assert rules.engagement.half_life == 14 * DAY
    assert rules.engagement.weight("web", "pricing_view") == 3.0


def test_channel_qualified_weights_override_plain_ones() -> None:
    table = {"half_life": "7d", "warm": 1, "hot": 2, "weights": {"web.login": 9, "login": 2}}
    engagement = rules_with(table).engagement
    assert engagement.weight("web", "login") == 9.0
    assert engagement.weight("web", "page_view") == 1.0  # default of the default


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"half_life": "two weeks", "warm": 1, "hot": 2}, "half_life: not a duration"),
        ({"half_life": "0d", "warm": 1, "hot": 2}, "longer than 0"),
        ({"half_life": "14d", "warm": 30, "hot": 25}, "warm <= hot"),
        ({"half_life": "14d", "warm": 10}, "`hot` is missing"),
        ({"half_life": "14d", "warm": 10, "hot": "25"}, "hot must be a finite number"),
        ({"half_life": "14d", "warm": 1, "hot": 2, "weights": {"sent": 1}}, "supplier action"),
        ({"half_life": "14d", "warm": 1, "hot": 2, "weights": {"ftp.x": 1}}, "unknown channel"),
        ({"half_life": "14d", "warm": 1, "hot": 2, "weights": {"demo": True}}, "weights.demo"),
        ({"half_life": "14d", "warm": 1, "hot": 2, "weigths": {}}, "unknown keys ['weigths']"),
        ({"enabled": "no"}, "`enabled` must be true or false"),
        ("hot", "must be a table"),
    ],
)
def test_bad_engagement_rules_say_what_is_wrong(table: Any, message: str) -> None:
    with pytest.raises(ConfigError, match="engagement") as raised:
        rules_with(table)
    assert message in str(raised.value)


# ------------------------------------------------------------------ checkpoints


def test_a_fold_keeps_its_score_and_episode_and_old_folds_still_load() -> None:
    fold = Fold()
    fold.seen = fold.act = 1_000
    fold.score, fold.hot = 12.345678901234567, "e1"
    again = Fold.from_list(orjson.loads(orjson.dumps(fold.to_list())))
    assert (again.score, again.hot) == (fold.score, "e1")
    old = Fold()
    old.seen = 5
    stored = old.to_list()
    assert len(stored) <= 22  # nothing new stored while the score is 0
    restored = Fold.from_list(stored)
    assert (restored.score, restored.hot) == (0.0, None)


# ------------------------------------------------------------------ properties


@given(histories(hours=60), st.randoms(use_true_random=False), st.sampled_from([0, HOUR, DAY]))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_any_arrival_gives_the_sorted_score_and_hot_alerts(
    events: list[EventRecord], rnd: random.Random, max_delay: int
) -> None:
    """Episodes that come and go within days: any arrival order, lateness, partitions and
    redeliveries give sorted replay's journeys (score included) and alerts."""
    check(events, rnd, max_delay, rules=FLICKER, **SHORT)


@given(histories(hours=2000, size=60), st.randoms(use_true_random=False))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_any_permutation_over_months_gives_the_sorted_score(
    events: list[EventRecord], rnd: random.Random
) -> None:
    check(events, rnd, 0, rules=FLICKER, window=3000 * HOUR)


def test_histories_like_the_properties_heat_and_cool_accounts() -> None:
    """The properties above are not vacuous: such histories heat and cool accounts."""
    rnd = random.Random(3)
    found: Counter[str] = Counter()
    for _ in range(20):
        events = []
        for _ in range(40):
            fields, types = WHO[rnd.choice(sorted(WHO))]
            events.append(ev(rnd.choice(types), rnd.randint(0, 240) / 4, **fields))
        for alert in run(events, rules=FLICKER)[0].current()["alerts_current"].values():
            if alert.kind == HOT:
                found["resolved" if alert.resolved_at else "open"] += 1
    assert found["resolved"] >= 5 and found["open"] >= 1, found
