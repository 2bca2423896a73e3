"""The journey map's figures, gathered once from ClickHouse into plain, compact data.

The page filters by segment and period in the browser, so the data is kept
at the grain those filters need: one entry per account (segment, phase,
first seen, DMU roles), per transition and per phase stay, touchpoints
counted per (segment, day, phase at the time, channel), and the open alerts.
Times are milliseconds since the epoch (UTC), days are days since the epoch.
Phase and other names are indexes into the lists beside them. What moves accounts
(attribution, engagement, the customer pyramid, each account's page) comes from `moves`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from clickhouse_connect.driver.client import Client

from journeys.schemas.record import DMU_ROLES, format_ms, to_ms
from journeys.sinks.clickhouse.client import select
from journeys.sinks.report import moves
from journeys.sinks.report.source import Tables

#: The label of touchpoints before an account's first activity (supplier actions such as mailings).
BEFORE = "(before the journey)"
DAY_MS = 86_400_000


@dataclass
class Stay:
    """Time an account spent in one phase, from `entered` to `left` (None: still in it)."""

    account: int
    phase: int
    entered: int
    left: int | None


_index = moves.index


def gather(client: Client, database: str, phases: Sequence[str], rules: str) -> dict[str, Any]:
    """Everything the journey map shows, as JSON-ready data."""
    tables = Tables(client, database)
    phase_names = list(phases)
    segments: list[str] = []
    channels: list[str] = []
    accounts = _accounts(client, tables, phase_names, segments)
    ids = {account_id: i for i, account_id in enumerate(accounts["id"])}
    transitions = _transitions(client, tables, phase_names, ids)
    now = _now(client, tables)
    stays = phase_stays(transitions)
    touchpoints = _touchpoints(client, tables, phase_names, segments, channels)
    credited = moves.credited(client, tables, ids, phase_names, channels)
    events = moves.account_events(client, tables, ids, channels)
    return {
        "generated_at": format_ms(now) if now else None,
        "now": now,
        "database": database,
        "rules": rules,
        "phases": phase_names,
        "before": BEFORE,
        "segments": segments,
        "channels": channels,
        "roles": list(DMU_ROLES),
        "accounts": accounts,
        "transitions": transitions,
        "stays": {
            "account": [s.account for s in stays],
            "phase": [s.phase for s in stays],
            "entered": [s.entered for s in stays],
            "left": [s.left for s in stays],
        },
        "touchpoints": touchpoints,
        "alerts": _alerts(client, tables, ids, now),
        "credited": credited,
        "engagement": moves.engagement(client, tables, ids),
        "tiers": moves.customer_tiers(client, tables, ids),
        "events": events,
        "account_alerts": moves.account_alerts(client, tables, ids),
    }


def _accounts(
    client: Client, tables: Tables, phases: list[str], segments: list[str]
) -> dict[str, list[Any]]:
    rows = select(
        client,
        "SELECT account_id, segment, phase, toUnixTimestamp64Milli(first_seen), "
        "toUnixTimestamp64Milli(phase_since), dmu_roles, "
        "if(last_activity IS NULL, NULL, toUnixTimestamp64Milli(assumeNotNull(last_activity))), "
        f"events FROM {tables.current('journeys')} ORDER BY account_id",
    )
    out: dict[str, list[Any]] = {
        k: []
        for k in ("id", "segment", "phase", "first_seen", "since", "roles", "active", "events")
    }
    for account_id, segment, phase, first_seen, since, roles, active, events in rows:
        out["id"].append(str(account_id))
        out["segment"].append(_index(segments, str(segment or "(none)")))
        out["phase"].append(_index(phases, str(phase)))
        out["first_seen"].append(int(first_seen))
        out["since"].append(int(since))
        out["roles"].append(roles_mask(roles))
        out["active"].append(None if active is None else int(active))
        out["events"].append(int(events))
    return out


def roles_mask(roles: Sequence[str]) -> int:
    """DMU roles as a bit set over `DMU_ROLES` (compact in the page)."""
    return sum(1 << DMU_ROLES.index(r) for r in set(roles) if r in DMU_ROLES)


def _transitions(
    client: Client, tables: Tables, phases: list[str], ids: dict[str, int]
) -> dict[str, list[int]]:
    rows = select(
        client,
        "SELECT account_id, from_phase, to_phase, toUnixTimestamp64Milli(transitioned_at) "
        f"FROM {tables.current('phase_transitions')} "
        "ORDER BY account_id, transitioned_at, to_phase",
    )
    out: dict[str, list[int]] = {"account": [], "from": [], "to": [], "at": []}
    for account_id, from_phase, to_phase, at in rows:
        account = ids.get(str(account_id))
        if account is None:  # a transition of an account merged away since: not current
            continue
        out["account"].append(account)
        out["from"].append(_index(phases, str(from_phase)) if from_phase else -1)
        out["to"].append(_index(phases, str(to_phase)))
        out["at"].append(int(at))
    return out


def phase_stays(transitions: dict[str, list[int]]) -> list[Stay]:
    """Each phase an account entered, until it entered the next (None while it is still there)."""
    stays: list[Stay] = []
    rows = sorted(zip(transitions["account"], transitions["at"], transitions["to"], strict=True))
    for i, (account, at, phase) in enumerate(rows):
        following = rows[i + 1] if i + 1 < len(rows) else None
        left = following[1] if following is not None and following[0] == account else None
        stays.append(Stay(account, phase, at, left))
    return stays


def _now(client: Client, tables: Tables) -> int | None:
    rows = select(
        client,
        f"SELECT toUnixTimestamp64Milli(max(occurred_at)), count() FROM {tables.current('events')}",
    )
    return int(rows[0][0]) if rows and rows[0][1] else None


def _touchpoints(
    client: Client, tables: Tables, phases: list[str], segments: list[str], channels: list[str]
) -> dict[str, list[int]]:
    rows = select(
        client,
        "SELECT j.segment, toUInt32(toDate(e.occurred_at)) AS day, t.to_phase, e.channel, count() "
        f"FROM (SELECT account_id, occurred_at, channel FROM {tables.current('events')} "
        "WHERE account_id != '') AS e "
        "ASOF LEFT JOIN (SELECT account_id, to_phase, transitioned_at "
        f"FROM {tables.current('phase_transitions')}) AS t "
        "ON e.account_id = t.account_id AND e.occurred_at >= t.transitioned_at "
        f"INNER JOIN (SELECT account_id, segment FROM {tables.current('journeys')}) AS j "
        "ON e.account_id = j.account_id "
        "GROUP BY j.segment, day, t.to_phase, e.channel ORDER BY day",
    )
    out: dict[str, list[int]] = {"segment": [], "day": [], "phase": [], "channel": [], "n": []}
    for segment, day, phase, channel, n in rows:
        out["segment"].append(_index(segments, str(segment or "(none)")))
        out["day"].append(int(day))
        out["phase"].append(_index(phases, str(phase)) if phase else -1)
        out["channel"].append(_index(channels, str(channel)))
        out["n"].append(int(n))
    return out


def _alerts(
    client: Client, tables: Tables, ids: dict[str, int], now: int | None
) -> list[dict[str, Any]]:
    if "analytics_open_alerts" in tables.names:  # the documented view has both figures
        rows = select(
            client,
            "SELECT alert_id, kind, account_id, toUnixTimestamp64Milli(raised_at), details, "
            f"cart_value, deal_age_days FROM {tables.database}.analytics_open_alerts "
            "ORDER BY raised_at, alert_id",
        )
    else:
        values = cart_values(client, tables)
        rows = [
            (*row, values.get(str(row[0])), None)
            for row in select(
                client,
                "SELECT alert_id, kind, account_id, toUnixTimestamp64Milli(raised_at), details "
                f"FROM {tables.open_alerts()} ORDER BY raised_at, alert_id",
            )
        ]
    alerts = []
    for alert_id, kind, account_id, raised_at, details, cart_value, deal_age in rows:
        parsed = _details(str(details))
        alerts.append(
            {
                "alert_id": str(alert_id),
                "kind": str(kind),
                "account_id": str(account_id),
                "account": ids.get(str(account_id), -1),
                "raised_at": int(raised_at),
                "details": parsed,
                "cart_value": None if cart_value is None else round(float(cart_value), 2),
                "deal_age_days": (
                    _deal_age(parsed, now) if deal_age is None else round(float(deal_age), 1)
                ),
            }
        )
    return alerts


def cart_values(client: Client, tables: Tables) -> dict[str, float]:
    """Per open cart alert: the value of the items added to the cart during its episode."""
    rows = select(
        client,
        "SELECT a.alert_id, sum(c.value) FROM (SELECT alert_id, account_id, "
        "parseDateTime64BestEffort(JSONExtractString(details, 'cart_started_at'), 3, 'UTC') "
        "AS s, parseDateTime64BestEffort(JSONExtractString(details, 'last_cart_activity_at'), "
        "3, 'UTC') AS l "
        f"FROM {tables.open_alerts()} WHERE kind = 'cart_abandoned') AS a "
        "INNER JOIN (SELECT account_id, occurred_at, "
        "arraySum(arrayMap(x -> JSONExtractFloat(x, 'price') * JSONExtractFloat(x, 'quantity'), "
        "JSONExtractArrayRaw(properties, 'items'))) AS value "
        f"FROM {tables.current('events')} WHERE type = 'add_to_cart') AS c "
        "ON c.account_id = a.account_id "
        "WHERE c.occurred_at >= a.s AND c.occurred_at <= a.l GROUP BY a.alert_id",
    )
    return {str(alert_id): round(float(value), 2) for alert_id, value in rows}


def _details(text: str) -> dict[str, Any]:
    try:
        parsed = orjson.loads(text)
    except orjson.JSONDecodeError:
        return {"text": text}
    return parsed if isinstance(parsed, dict) else {"value": parsed}


def _deal_age(details: dict[str, Any], now: int | None) -> float | None:
    since = details.get("open_since")
    if not since or now is None:
        return None
    try:
        opened = datetime.fromisoformat(str(since).replace("Z", "+00:00"))
    except ValueError:
        return None
    return round((now - to_ms(opened)) / DAY_MS, 1)
