"""`analytics_engagement` and the engagement columns on simulated journeys (contract section 8).

The simulator's events are replayed into the embedded ClickHouse and into the
in-memory sink; each account's score as of the latest stored event is then
worked out again in Python from the stored events alone, by the contract's
definition (the sum of weight × 2^(−age / half-life) over the account's
activity events), and compared with the view.
"""

from __future__ import annotations

import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from clickhouse_connect.driver.client import Client

from journeys.producers.simulator import simulate
from journeys.sinks.clickhouse.writer import ClickHouseSink
from journeys.sinks.memory import MemorySink
from journeys.sinks.reference import FinalTables
from journeys.streams.engine import EngineConfig
from journeys.streams.engine.rules import SUPPLIER, Rules
from journeys.streams.replay import replay

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class World:
    """The replayed database, the reference rows of the same replay, and the rules."""

    client: Client
    db: str
    ref: FinalTables
    rules: Rules

    def view(self, sql: str) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in self.client.query(sql.format(db=self.db)).result_rows]


@pytest.fixture(scope="module")
def world(chdb_dsn: str) -> World:
    lines = [(f"sim:{n}", line) for n, line in enumerate(simulate(accounts=80, days=120, seed=7))]
    config = EngineConfig.default()
    memory = MemorySink()
    replay(lines, memory, config, 0)
    db = f"en_{uuid.uuid4().hex[:10]}"
    sink = ClickHouseSink(chdb_dsn, db)
    sink.setup()
    replay(lines, sink, config, 0)
    return World(sink.client, db, memory.final(), config.rules)


def expected_scores(ref: FinalTables, rules: Rules) -> tuple[int, dict[str, float]]:
    """(as_of, account -> score as of it), from the stored events and the rules alone."""
    engagement = rules.engagement
    supplier = {
        (channel, type_)
        for channel, classes in rules.classes.items()
        for type_, cls in classes.items()
        if cls.flags & SUPPLIER
    }
    as_of = max(row.record.ts for row in ref.events.values())
    scores: dict[str, float] = defaultdict(float)
    for row in ref.events.values():
        record = row.record
        if not row.account_id or (record.channel, record.type) in supplier:
            continue
        weight = engagement.weight(record.channel, record.type)
        scores[row.account_id] += weight * 2.0 ** (-(as_of - record.ts) / engagement.half_life)
    return as_of, {account: scores[account] for account in ref.journeys}


def tier(score: float, rules: Rules) -> str:
    if score >= rules.engagement.hot:
        return "hot"
    return "warm" if score >= rules.engagement.warm else "cold"


def test_engagement_view_decays_each_score_to_the_latest_event(world: World) -> None:
    as_of, expected = expected_scores(world.ref, world.rules)
    rows = world.view(
        "SELECT account_id, score, tier, toUnixTimestamp64Milli(as_of) "
        "FROM {db}.analytics_engagement"
    )
    got = {account: (score, name) for account, score, name, _ in rows}
    assert set(got) == set(expected)
    assert {at for *_, at in rows} == {as_of}
    for account, score in expected.items():
        assert got[account][0] == pytest.approx(score, rel=1e-6, abs=1e-6), account
        assert got[account][1] == tier(score, world.rules), account
    tiers = Counter(name for _, name in got.values())
    assert set(tiers) == {"hot", "warm", "cold"}, tiers
    scores = [score for _, score, *_ in rows]
    assert scores == sorted(scores, reverse=True)


def test_journeys_carry_the_score_at_the_last_activity(world: World) -> None:
    rows = world.view(
        "SELECT account_id, engagement, toUnixTimestamp64Milli(engagement_at), "
        "toUnixTimestamp64Milli(last_activity), engagement_half_life_ms, engagement_warm, "
        "engagement_hot FROM {db}.journeys_current"
    )
    engagement = world.rules.engagement
    assert len(rows) == len(world.ref.journeys)
    for account, score, at, last_activity, half_life, warm, hot in rows:
        journey = world.ref.journeys[account]
        assert (score, at) == (journey.engagement, journey.engagement_at), account
        assert at == last_activity
        assert (half_life, warm, hot) == (engagement.half_life, engagement.warm, engagement.hot)


def test_hot_alerts_name_the_event_that_heated_the_account(world: World) -> None:
    rows = world.view(
        "SELECT account_id, toUnixTimestamp64Milli(raised_at), details "
        "FROM {db}.alerts_current WHERE kind = 'account_hot'"
    )
    assert rows
    hot = world.rules.engagement.hot
    for _account, _raised_at, details in rows:
        body = orjson.loads(details)
        assert body["hot"] == hot
        assert body["score"] >= hot
        assert body["phase"] in world.rules.phases
