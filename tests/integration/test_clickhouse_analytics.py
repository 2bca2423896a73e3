"""The analytics views on simulated journeys, against values computed here in Python.

The simulator's events are replayed (`journeys.streams.replay`) into the
real embedded ClickHouse and into the in-memory sink; each view's answer is
then worked out again from the in-memory rows (`sinks.reference`), with no
SQL, and compared row for row.
"""

from __future__ import annotations

import statistics
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from clickhouse_connect.driver.client import Client

from journeys.producers.simulator import simulate
from journeys.schemas.rows import AlertRow, JourneyRow, Output, StoredEvent, TransitionRow
from journeys.sinks.clickhouse.writer import ClickHouseSink
from journeys.sinks.memory import MemorySink
from journeys.sinks.reference import FinalTables
from journeys.streams.engine import EngineConfig
from journeys.streams.replay import replay
from tests.unit.engine.journey import ev, ms

pytestmark = pytest.mark.integration

PHASES = ["awareness", "consideration", "decision", "purchase", "delivery", "loyalty"]
ROLES = ["initiator", "gatekeeper", "influencer", "decider", "buyer", "user"]
SUPPLIER = {
    ("email", "sent"),
    ("email", "delivered"),
    ("email", "bounce"),
    ("email", "deferred"),
    ("order", "quote_sent"),
    ("order", "invoice_sent"),
    ("order", "order_shipped"),
    ("order", "order_delivered"),
}
DAY = 86_400_000


@dataclass(frozen=True)
class World:
    """The replayed database and the reference rows of the same replay."""

    client: Client
    db: str
    ref: FinalTables

    @property
    def as_of(self) -> int:
        return max(j.last_seen for j in self.ref.journeys.values())

    def view(self, sql: str) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in self.client.query(sql.format(db=self.db)).result_rows]


@pytest.fixture(scope="module")
def world(chdb_dsn: str) -> World:
    lines = [(f"sim:{n}", line) for n, line in enumerate(simulate(accounts=160, days=150, seed=5))]
    memory = MemorySink()
    replay(lines, memory, EngineConfig.default(), 0)
    db = f"an_{uuid.uuid4().hex[:10]}"
    sink = ClickHouseSink(chdb_dsn, db)
    sink.setup()
    replay(lines, sink, EngineConfig.default(), 0)
    return World(sink.client, db, memory.final())


def approx(value: float | None) -> Any:
    return None if value is None else pytest.approx(value, rel=1e-9, abs=1e-9)


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def order(phase: str) -> int:
    return PHASES.index(phase) + 1 if phase in PHASES else 0


def entered(ref: FinalTables) -> dict[tuple[str, str], TransitionRow]:
    return dict(ref.current()["phase_transitions_current"])


def account_events(ref: FinalTables) -> dict[str, list[StoredEvent]]:
    out: dict[str, list[StoredEvent]] = defaultdict(list)
    for row in ref.events.values():
        if row.account_id:
            out[row.account_id].append(row)
    return out


def open_alerts(ref: FinalTables) -> list[AlertRow]:
    return list(ref.current()["open_alerts"].values())


# ---------------------------------------------------------------- accounts per phase


def test_accounts_per_phase(world: World) -> None:
    counts = Counter(j.phase for j in world.ref.journeys.values())
    total = sum(counts.values())
    expected = sorted(
        ((p, order(p), n, approx(n / total)) for p, n in counts.items()),
        key=lambda r: (r[1] == 0, r[1], r[0]),
    )
    assert world.view("SELECT * FROM {db}.analytics_accounts_per_phase") == expected
    assert len(expected) >= 5


def test_accounts_per_phase_by_segment(world: World) -> None:
    counts = Counter((j.segment or "", j.phase) for j in world.ref.journeys.values())
    sizes = Counter(j.segment or "" for j in world.ref.journeys.values())
    expected = sorted(
        ((s, p, order(p), n, approx(n / sizes[s])) for (s, p), n in counts.items()),
        key=lambda r: (r[0], r[2] == 0, r[2], r[1]),
    )
    assert world.view("SELECT * FROM {db}.analytics_accounts_per_phase_by_segment") == expected
    assert len(sizes) >= 3


# ---------------------------------------------------------------- cohorts and time


def test_monthly_cohort_funnel_with_median_days(world: World) -> None:
    transitions = entered(world.ref)
    cohorts: dict[date, list[Any]] = defaultdict(list)
    for j in world.ref.journeys.values():
        moment = datetime.fromtimestamp(j.first_seen / 1000, tz=UTC)
        cohorts[date(moment.year, moment.month, 1)].append(j)
    expected = []
    for month in sorted(cohorts):
        members = cohorts[month]
        for i, phase in enumerate(PHASES, start=1):
            reached = sum(1 for j in members if order(j.phase) >= i)
            from_first, from_previous = [], []
            for j in members:
                t = transitions.get((j.account_id, phase))
                if t is None:
                    continue
                from_first.append((t.transitioned_at - j.first_seen) / DAY)
                before = transitions.get((j.account_id, t.from_phase or ""))
                if before is not None:
                    from_previous.append((t.transitioned_at - before.transitioned_at) / DAY)
            expected.append(
                (
                    month,
                    phase,
                    i,
                    len(members),
                    reached,
                    approx(reached / len(members)),
                    len(from_first),
                    approx(median(from_first)),
                    approx(median(from_previous)),
                )
            )
    got = world.view("SELECT * FROM {db}.analytics_cohort_funnel")
    assert got == expected
    assert len(cohorts) >= 4 and any(r[7] for r in got if r[1] == "loyalty")


def test_time_in_phase_and_stalled_share(world: World) -> None:
    ref, as_of = world.ref, world.as_of
    transitions = entered(ref)
    stalled = {a.account_id for a in open_alerts(ref) if a.kind == "deal_stalled"}
    expected = []
    for phase in sorted({p for _, p in transitions}, key=lambda p: (order(p) == 0, order(p), p)):
        now = [j for j in ref.journeys.values() if j.phase == phase]
        spent = [
            (nxt.transitioned_at - t.transitioned_at) / DAY
            for (account, to), t in transitions.items()
            if to == phase
            for nxt in transitions.values()
            if nxt.account_id == account and nxt.from_phase == phase
        ]
        stalled_now = sum(1 for j in now if j.account_id in stalled)
        expected.append(
            (
                phase,
                order(phase),
                sum(1 for _, p in transitions if p == phase),
                len(now),
                approx(median([(as_of - j.phase_since) / DAY for j in now])),
                len(spent),
                approx(median(spent)),
                stalled_now,
                approx(stalled_now / len(now)) if now else None,
                as_of,
            )
        )
    got = world.view(
        "SELECT * EXCEPT (as_of), toUnixTimestamp64Milli(as_of) FROM {db}.analytics_time_in_phase"
    )
    assert got == expected
    assert sum(r[7] for r in expected) > 0  # some accounts are stalled


# ---------------------------------------------------------------- touchpoints


def windows(ref: FinalTables) -> list[tuple[TransitionRow, int]]:
    """Each transition with the moment its window opens (entering the phase it left)."""
    transitions = entered(ref)
    out = []
    for t in transitions.values():
        if not t.from_phase:
            since = -(2**62)
        else:
            before = transitions.get((t.account_id, t.from_phase))
            since = before.transitioned_at if before is not None else 0
        out.append((t, since))
    return out


def touchpoints(ref: FinalTables) -> tuple[Counter[Any], dict[Any, set[str]], Counter[Any]]:
    by_account = account_events(ref)
    counts: Counter[Any] = Counter()
    accounts: dict[Any, set[str]] = defaultdict(set)
    made = Counter((t.from_phase or "", t.to_phase) for t in entered(ref).values())
    for t, since in windows(ref):
        for row in by_account.get(t.account_id, []):
            if since < row.record.ts <= t.transitioned_at:
                key = (t.from_phase or "", t.to_phase, row.record.channel, row.record.type)
                counts[key] += 1
                accounts[key].add(t.account_id)
    return counts, accounts, made


def test_touchpoints_that_precede_each_transition(world: World) -> None:
    counts, accounts, made = touchpoints(world.ref)
    expected = sorted(
        (
            (
                f,
                to,
                ch,
                ty,
                n,
                len(accounts[(f, to, ch, ty)]),
                made[(f, to)],
                approx(len(accounts[(f, to, ch, ty)]) / made[(f, to)]),
            )
            for (f, to, ch, ty), n in counts.items()
        ),
        key=lambda r: (r[0], r[1], -r[4], r[2], r[3]),
    )
    assert world.view("SELECT * FROM {db}.analytics_transition_touchpoints") == expected
    assert {r[2] for r in expected} == {"web", "email", "order", "sales"}


def test_channels_that_precede_each_transition(world: World) -> None:
    counts, accounts, made = touchpoints(world.ref)
    per_channel: Counter[Any] = Counter()
    who: dict[Any, set[str]] = defaultdict(set)
    for (f, to, ch, _), n in counts.items():
        per_channel[(f, to, ch)] += n
        who[(f, to, ch)] |= accounts[(f, to, ch, _)]
    expected = sorted(
        (
            (
                f,
                to,
                ch,
                n,
                len(who[(f, to, ch)]),
                made[(f, to)],
                approx(len(who[(f, to, ch)]) / made[(f, to)]),
            )
            for (f, to, ch), n in per_channel.items()
        ),
        key=lambda r: (r[0], r[1], -r[3], r[2]),
    )
    assert world.view("SELECT * FROM {db}.analytics_transition_channels") == expected


# ---------------------------------------------------------------- DMU coverage


def coverage(ref: FinalTables) -> dict[str, tuple[list[str], int]]:
    """Per account: the roles engaged (sorted) and the contacts engaged."""
    out = {}
    by_account = account_events(ref)
    for account in ref.journeys:
        active = [
            r
            for r in by_account.get(account, [])
            if (r.record.channel, r.record.type) not in SUPPLIER
        ]
        roles = sorted({r.record.dmu_role for r in active if r.record.dmu_role})
        contacts = len({r.record.contact_id for r in active if r.record.contact_id})
        out[account] = (roles, contacts)
    return out


def test_dmu_coverage_per_account(world: World) -> None:
    seen = coverage(world.ref)
    expected = sorted(
        (
            a,
            j.phase,
            order(j.phase),
            j.segment or "",
            seen[a][0],
            len(seen[a][0]),
            seen[a][1],
            int("decider" in seen[a][0]),
        )
        for a, j in world.ref.journeys.items()
    )
    got = sorted(world.view("SELECT * FROM {db}.analytics_dmu_coverage"))
    assert got == expected
    assert {len(r[4]) for r in expected} >= {1, 3, 5}


def test_dmu_roles_per_phase(world: World) -> None:
    seen = coverage(world.ref)
    expected = []
    phases = {j.phase for j in world.ref.journeys.values()}
    for phase in sorted(phases, key=lambda p: (order(p) == 0, order(p), p)):
        members = [a for a, j in world.ref.journeys.items() if j.phase == phase]
        for role in ROLES:
            engaged = sum(1 for a in members if role in seen[a][0])
            expected.append(
                (phase, order(phase), role, len(members), engaged, approx(engaged / len(members)))
            )
    assert world.view("SELECT * FROM {db}.analytics_dmu_roles") == expected


def test_accounts_in_decision_without_a_decider(world: World) -> None:
    seen, as_of = coverage(world.ref), world.as_of
    expected = sorted(
        (
            (
                a,
                j.segment or "",
                j.phase_since,
                approx((as_of - j.phase_since) / DAY),
                seen[a][0],
                seen[a][1],
                as_of,
            )
            for a, j in world.ref.journeys.items()
            if j.phase == "decision" and "decider" not in seen[a][0]
        ),
        key=lambda r: (-(as_of - r[2]), r[0]),
    )
    got = world.view(
        "SELECT account_id, segment, toUnixTimestamp64Milli(decision_since), days_in_decision, "
        "roles_engaged, contacts_engaged, toUnixTimestamp64Milli(as_of) "
        "FROM {db}.analytics_decision_without_decider"
    )
    assert got == expected
    assert expected, "the simulation has deals where no decider took part"


# ---------------------------------------------------------------- alerts and orders


def parse_ms(text: str) -> int:
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


def cart_value(alert: AlertRow, events: list[StoredEvent]) -> float:
    """Lines added in the cart episode, less those whose SKU was removed after them."""
    details = orjson.loads(alert.details)
    since, until = parse_ms(details["cart_started_at"]), parse_ms(details["last_cart_activity_at"])
    added, removed = [], []
    for row in events:
        if row.record.type not in ("add_to_cart", "remove_from_cart"):
            continue
        if not since <= row.record.ts <= until:
            continue
        props = orjson.loads(row.record.properties)
        items = props.get("items")
        lines = items if isinstance(items, list) and items else [props]
        for line in lines:
            if row.record.type == "add_to_cart":
                value = float(line.get("price", 0)) * float(line.get("quantity", 0))
                added.append((row.record.ts, line.get("sku", ""), value))
            else:
                removed.append((row.record.ts, line.get("sku", "")))
    return sum(
        v for ts, sku, v in added if not any(r_sku == sku and r_ts >= ts for r_ts, r_sku in removed)
    )


def test_open_alerts_with_cart_value_and_deal_age(world: World) -> None:
    ref, as_of = world.ref, world.as_of
    by_account = account_events(ref)
    expected = []
    for alert in open_alerts(ref):
        j = ref.journeys.get(alert.account_id)
        cart = deal = age = None
        if alert.kind == "cart_abandoned":
            cart = approx(cart_value(alert, by_account.get(alert.account_id, [])))
        if alert.kind == "deal_stalled":
            deal = parse_ms(orjson.loads(alert.details)["open_since"])
            age = approx((as_of - deal) / DAY)
        expected.append(
            (
                alert.alert_id,
                alert.kind,
                alert.account_id,
                j.phase if j else "",
                (j.segment or "") if j else "",
                alert.raised_at,
                approx((as_of - alert.raised_at) / DAY),
                cart,
                deal,
                age,
            )
        )
    expected.sort(key=lambda r: (-r[5], r[0]))
    got = world.view(
        "SELECT alert_id, kind, account_id, phase, segment, toUnixTimestamp64Milli(raised_at), "
        "days_open, cart_value, toUnixTimestamp64Milli(deal_opened_at), deal_age_days "
        "FROM {db}.analytics_open_alerts"
    )
    assert got == expected
    kinds = Counter(r[1] for r in expected)
    assert kinds["cart_abandoned"] and kinds["deal_stalled"]
    assert all(r[7] > 0 for r in got if r[1] == "cart_abandoned")


def test_repeat_order_intervals_of_loyal_accounts(world: World) -> None:
    ref, as_of = world.ref, world.as_of
    by_account = account_events(ref)
    expected = []
    for account in sorted(a for a, j in ref.journeys.items() if j.phase == "loyalty"):
        j = ref.journeys[account]
        times = sorted(
            r.record.ts
            for r in by_account.get(account, [])
            if (r.record.channel, r.record.type) == ("order", "order_placed")
        )
        gaps = [(b - a) / DAY for a, b in zip(times, times[1:], strict=False)]
        expected.append(
            (
                account,
                j.segment or "",
                j.phase_since,
                len(times),
                times[0] if times else None,
                times[-1] if times else None,
                [approx(g) for g in gaps],
                approx(median(gaps)),
                approx(statistics.fmean(gaps)) if gaps else None,
                approx((as_of - times[-1]) / DAY) if times else None,
            )
        )
    got = world.view(
        "SELECT account_id, segment, toUnixTimestamp64Milli(loyal_since), orders, "
        "toUnixTimestamp64Milli(first_order_at), toUnixTimestamp64Milli(last_order_at), "
        "interval_days, median_interval_days, mean_interval_days, days_since_last_order "
        "FROM {db}.analytics_repeat_orders"
    )
    assert got == expected
    assert any(r[3] >= 3 for r in expected)


def test_a_supplier_action_does_not_engage_a_role(
    ch_sink: Callable[[str], ClickHouseSink], ch_database: str
) -> None:
    sink = ch_sink(ch_database)
    sink.add(
        Output(
            events=[
                StoredEvent(ev("sent", 0, email="d@acme.nl", dmu_role="decider"), "acme"),
                StoredEvent(ev("quote_sent", 1, contact_id="c2", dmu_role="decider"), "acme"),
                StoredEvent(ev("pricing_view", 2, contact_id="c1", dmu_role="buyer"), "acme"),
                StoredEvent(ev("open", 3, email="u@acme.nl", dmu_role="user"), "acme"),
            ],
            journeys=[
                JourneyRow("acme", "decision", ms(1), ms(0), ms(3), ms(3), 4, 2, (), "growers", 1)
            ],
        )
    )
    sink.flush()
    rows = sink.client.query(
        "SELECT roles_engaged, contacts_engaged, decider_engaged "
        f"FROM {ch_database}.analytics_dmu_coverage"
    ).result_rows
    assert rows == [(["buyer", "user"], 1, 0)]
    missing = sink.client.query(
        f"SELECT account_id, days_in_decision FROM {ch_database}.analytics_decision_without_decider"
    ).result_rows
    assert missing == [("acme", pytest.approx(2 / 24))]


# ---------------------------------------------------------------- the customer pyramid

TIERS = ["top", "big", "medium", "small", "inactive", "prospect", "suspect"]


def expected_tiers(ref: FinalTables) -> dict[str, tuple[str, float]]:
    """Each account's tier and revenue, worked out from the contract's words."""
    as_of = max(r.record.ts for r in ref.events.values())
    since = as_of - 365 * DAY
    revenue: dict[str, float] = defaultdict(float)
    earlier: set[str] = set()
    for row in ref.events.values():
        if (row.record.channel, row.record.type) != ("order", "order_placed"):
            continue
        if not row.account_id:
            continue
        if row.record.ts < since:
            earlier.add(row.account_id)
        elif row.record.ts <= as_of:
            amount = orjson.loads(row.record.properties).get("amount", 0)
            revenue[row.account_id] += float(amount) if isinstance(amount, int | float) else 0.0
    customers = sorted((a for a in ref.journeys if revenue[a] > 0), key=lambda a: (-revenue[a], a))
    n = len(customers)
    tiers: dict[str, tuple[str, float]] = {}
    for rank, account in enumerate(customers, start=1):
        if rank <= -(-n // 100):
            tier = "top"
        elif rank <= -(-n // 20):
            tier = "big"
        elif rank <= -(-n // 5):
            tier = "medium"
        else:
            tier = "small"
        tiers[account] = (tier, revenue[account])
    for account, journey in ref.journeys.items():
        if account in tiers:
            continue
        if account in earlier:
            tier = "inactive"
        elif order(journey.phase) >= 2:
            tier = "prospect"
        else:
            tier = "suspect"
        tiers[account] = (tier, revenue[account])
    return tiers


def test_customer_tiers_rank_accounts_by_last_years_revenue(world: World) -> None:
    expected = expected_tiers(world.ref)
    got = {
        account: (tier, revenue)
        for account, tier, revenue in world.view(
            "SELECT account_id, tier, revenue FROM {db}.analytics_customer_tiers"
        )
    }
    assert set(got) == set(expected)
    for account, (tier, revenue) in expected.items():
        assert got[account][0] == tier, account
        assert got[account][1] == approx(revenue), account
    present = Counter(tier for tier, _ in expected.values())
    assert {"top", "big", "medium", "small", "prospect", "suspect"} <= set(present)


def test_customer_pyramid_counts_every_tier_top_first(world: World) -> None:
    expected = expected_tiers(world.ref)
    total = sum(revenue for _, revenue in expected.values())
    rows = world.view(
        "SELECT tier, tier_order, accounts, revenue, revenue_share "
        "FROM {db}.analytics_customer_pyramid"
    )
    assert [r[0] for r in rows] == TIERS
    for tier, position, accounts, revenue, share in rows:
        mine = [r for t, r in expected.values() if t == tier]
        assert (position, accounts) == (TIERS.index(tier) + 1, len(mine))
        assert revenue == approx(sum(mine))
        assert share == approx(sum(mine) / total)


def test_customer_tiers_at_the_boundaries(
    ch_sink: Callable[[str], ClickHouseSink], ch_database: str
) -> None:
    """300 customers: ceil(1%) = 3 top, ceil(5%) = 15, ceil(20%) = 60 (not 16 or 61 from
    floating point); an order 366 days before the latest event makes an account inactive."""
    start = datetime(2026, 1, 1, tzinfo=UTC).timestamp()

    def line(n: int, account: str, channel: str, type_: str, at: float, **props: Any) -> bytes:
        moment = datetime.fromtimestamp(start + at, tz=UTC).isoformat()
        event = {"event_id": f"b{n}", "channel": channel, "type": type_, "occurred_at": moment}
        return orjson.dumps({**event, "account_id": account, "properties": props})

    lines = [
        line(n, f"c{n:03d}", "order", "order_placed", n, amount=float(1000 - n)) for n in range(300)
    ]
    lines.append(line(300, "old", "order", "order_placed", 299 - 366 * 86400, amount=5.0))
    lines.append(line(301, "looker", "web", "pricing_view", 0))
    lines.append(line(302, "reader", "web", "page_view", 0))
    sink = ch_sink(ch_database)
    replay([(f"b:{n}", raw) for n, raw in enumerate(lines)], sink, EngineConfig.default(), 0)
    rows = sink.client.query(
        f"SELECT account_id, tier FROM {ch_database}.analytics_customer_tiers"
    ).result_rows
    tiers = {str(account): str(tier) for account, tier in rows}
    counts = Counter(tiers.values())
    assert (counts["top"], counts["big"], counts["medium"], counts["small"]) == (3, 12, 45, 240)
    assert [tiers[f"c{n:03d}"] for n in (0, 2, 3, 14)] == ["top", "top", "big", "big"]
    assert [tiers[f"c{n:03d}"] for n in (15, 59, 60)] == ["medium", "medium", "small"]
    assert (tiers["old"], tiers["looker"], tiers["reader"]) == ("inactive", "prospect", "suspect")


# ---------------------------------------------------------------- attribution

MODELS = ["first_touch", "last_touch", "linear", "position_based", "time_decay"]


def credits(model: str, times: list[int], at: int, half_life: int) -> list[float]:
    """The contract's credit of each touchpoint (sorted) of a conversion at `at`."""
    n = len(times)
    if model == "first_touch":
        return [1.0 if i == 0 else 0.0 for i in range(n)]
    if model == "last_touch":
        return [1.0 if i == n - 1 else 0.0 for i in range(n)]
    if model == "linear":
        return [1 / n] * n
    if model == "position_based":
        if n <= 2:
            return [1 / n] * n
        return [0.4 if i in (0, n - 1) else 0.2 / (n - 2) for i in range(n)]
    weights = [2 ** (-(at - t) / half_life) for t in times]
    return [w / sum(weights) for w in weights]


def expected_attribution(
    ref: FinalTables, lookback: int = 90 * DAY, half_life: int = 7 * DAY
) -> dict[tuple[str, str, str, str], tuple[float, float]]:
    """(account, to_phase, touch event, model) -> (credit, revenue), from the contract."""
    by_account = account_events(ref)
    by_id = {row.record.event_id: row.record for row in ref.events.values()}
    out = {}
    for (account, to_phase), t in entered(ref).items():
        at = t.transitioned_at
        touches = sorted(
            (r.record.ts, r.record.event_id)
            for r in by_account.get(account, [])
            if (r.record.channel, r.record.type) not in SUPPLIER
            and at - lookback <= r.record.ts <= at
        )
        amount = 0.0
        if to_phase == "purchase":
            value = orjson.loads(by_id[t.event_id].properties).get("amount", 0)
            amount = float(value) if isinstance(value, int | float) else 0.0
        for model in MODELS:
            shares = credits(model, [ts for ts, _ in touches], at, half_life)
            for (_, event_id), credit in zip(touches, shares, strict=True):
                out[(account, to_phase, event_id, model)] = (credit, credit * amount)
    return out


def test_attribution_credits_every_touch_of_every_conversion(world: World) -> None:
    expected = expected_attribution(world.ref)
    rows = world.view(
        "SELECT account_id, to_phase, touch_event_id, model, credit, revenue "
        "FROM {db}.attribution_current"
    )
    got = {(a, p, e, m): (c, r) for a, p, e, m, c, r in rows}
    assert len(got) == len(rows)
    assert set(got) == set(expected)
    for key, (credit, revenue) in expected.items():
        assert got[key][0] == approx(credit), key
        assert got[key][1] == approx(revenue), key
    sums: dict[tuple[str, str, str], float] = defaultdict(float)
    for (account, phase, _, model), (credit, _) in got.items():
        sums[(account, phase, model)] += credit
    assert all(total == pytest.approx(1.0) for total in sums.values())
    assert any(
        phase == "purchase" and revenue > 0 for (_, phase, _, _), (_, revenue) in got.items()
    )


def test_attribution_by_channel_and_campaign_sum_the_credits(world: World) -> None:
    expected = expected_attribution(world.ref)
    channels: dict[tuple[str, str, str], list[float]] = defaultdict(lambda: [0.0, 0.0])
    by_id = {row.record.event_id: row.record for row in world.ref.events.values()}
    campaigns: dict[tuple[str, str, str], float] = defaultdict(float)
    for (_, phase, event_id, model), (credit, revenue) in expected.items():
        record = by_id[event_id]
        channels[(phase, model, record.channel)][0] += credit
        channels[(phase, model, record.channel)][1] += revenue
        campaign = orjson.loads(record.properties).get("utm_campaign") or ""
        campaigns[(phase, model, campaign)] += credit
    got = world.view("SELECT * FROM {db}.analytics_attribution_by_channel")
    assert {(p, m, c) for p, m, c, _, _ in got} == set(channels)
    for phase, model, channel, conversions, revenue in got:
        assert conversions == approx(channels[(phase, model, channel)][0])
        assert revenue == approx(channels[(phase, model, channel)][1])
    by_campaign = world.view(
        "SELECT to_phase, model, campaign, conversions FROM {db}.analytics_attribution_by_campaign"
    )
    assert {(p, m, c): v for p, m, c, v in by_campaign} == {
        k: approx(v) for k, v in campaigns.items()
    }
    assert any(c != "" for _, _, c, _ in by_campaign)


def test_attribution_follows_the_stored_lookback_and_half_life(
    ch_sink: Callable[[str], ClickHouseSink], ch_database: str
) -> None:
    from journeys.sinks.clickhouse.derived import write_derived_settings

    start = datetime(2026, 3, 1, tzinfo=UTC).timestamp()

    def line(n: int, type_: str, days: float, **props: Any) -> bytes:
        moment = datetime.fromtimestamp(start + days * 86400, tz=UTC).isoformat()
        channel = "order" if type_ == "order_placed" else "web"
        event = {"event_id": f"a{n}", "channel": channel, "type": type_, "occurred_at": moment}
        return orjson.dumps({**event, "account_id": "acme", "properties": props})

    lines = [
        line(0, "page_view", 0, utm_campaign="spring"),
        line(1, "page_view", 20, url="https://shop.example/blog"),
        line(2, "pricing_view", 28),
        line(3, "order_placed", 30, amount=1000.0),
    ]
    sink = ch_sink(ch_database)
    replay([(f"a:{n}", raw) for n, raw in enumerate(lines)], sink, EngineConfig.default(), 0)

    def purchase(model: str) -> list[tuple[Any, ...]]:
        return [
            tuple(r)
            for r in sink.client.query(
                "SELECT touch_event_id, credit, revenue, campaign, content "
                f"FROM {ch_database}.attribution_current "
                "WHERE to_phase = 'purchase' AND model = {m:String} ORDER BY touch_at",
                parameters={"m": model},
            ).result_rows
        ]

    linear = purchase("linear")
    assert [r[0] for r in linear] == ["a0", "a1", "a2", "a3"]
    assert [r[2] for r in linear] == [approx(250.0)] * 4
    assert (linear[0][3], linear[1][4]) == ("spring", "https://shop.example/blog")
    position = [r[1] for r in purchase("position_based")]
    assert position == [approx(0.4), approx(0.1), approx(0.1), approx(0.4)]
    decay = [r[1] for r in purchase("time_decay")]
    weights = [2 ** (-30 / 7), 2 ** (-10 / 7), 2 ** (-2 / 7), 1.0]
    assert decay == [approx(w / sum(weights)) for w in weights]

    write_derived_settings(
        sink.client,
        ch_database,
        {"attribution_lookback_ms": 5.0 * DAY, "attribution_half_life_ms": 1.0 * DAY},
    )
    assert [r[0] for r in purchase("first_touch")] == ["a2", "a3"]
    decay = [r[1] for r in purchase("time_decay")]
    assert decay == [approx(0.25 / 1.25), approx(1 / 1.25)]


def test_replay_stores_the_attribution_settings_it_runs_with(
    chdb_dsn: str, database_name: Callable[[str], str], tmp_path: Path
) -> None:
    from journeys.cmd_core import replay_files
    from journeys.schemas.settings import Settings
    from journeys.sinks.clickhouse.client import connect

    events = tmp_path / "events.jsonl"
    days = [0, 10, 19, 20]
    types = ["page_view", "pricing_view", "page_view", "order_placed"]
    rows = []
    for n, (day, type_) in enumerate(zip(days, types, strict=True)):
        moment = datetime(2026, 5, 1 + day, tzinfo=UTC).isoformat()
        channel = "order" if type_ == "order_placed" else "web"
        rows.append(
            {"event_id": f"s{n}", "channel": channel, "type": type_, "occurred_at": moment}
            | {"account_id": "acme", "properties": {"amount": 10.0}}
        )
    events.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    db = database_name("derived")
    settings = Settings.model_validate(
        {
            "clickhouse_url": chdb_dsn,
            "clickhouse_database": db,
            "data_dir": tmp_path,
            "attribution_lookback": "2d",  # as JOURNEYS_ATTRIBUTION_LOOKBACK is written
            "attribution_half_life": "1d",
        }
    )
    replay_files((str(events),), settings, quiet=True)
    got = (
        connect(chdb_dsn)
        .query(
            f"SELECT touch_event_id, credit FROM {db}.attribution_current "
            "WHERE to_phase = 'purchase' AND model = 'time_decay' ORDER BY touch_at"
        )
        .result_rows
    )
    assert [r[0] for r in got] == ["s2", "s3"]
    assert [r[1] for r in got] == [approx(0.5 / 1.5), approx(1 / 1.5)]
