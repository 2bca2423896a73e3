"""What moves accounts, for the journey map: attribution, engagement, the customer pyramid and
each account's own page.

Each part reads its view only when the database has it (`Tables.names`, read once), so a
database made before a view existed still gives a map: the page says "no data" for that
panel. The attribution is kept per conversion and (channel, campaign), with each model's
credit and revenue side by side, so the page can filter by segment and period and switch the
model without asking the database again. Account pages embed each account's latest
`EVENTS_PER_ACCOUNT` events, fewer when there are so many accounts that this would pass
`EVENTS_IN_ALL` (never fewer than `EVENTS_AT_LEAST`); the page says when an account has more.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from clickhouse_connect.driver.client import Client

from journeys.schemas.record import DMU_ROLES
from journeys.sinks.clickhouse.client import select
from journeys.sinks.report.source import Tables

MODELS = ("first_touch", "last_touch", "linear", "position_based", "time_decay")
HEAT = ("hot", "warm", "cold")
TIERS = ("top", "big", "medium", "small", "inactive", "prospect", "suspect")
#: How many of an account's latest events its page embeds: keeps the file a few MB.
EVENTS_PER_ACCOUNT = 200
#: The most events embedded in all (about 20 bytes each), and the fewest per account.
EVENTS_IN_ALL = 200_000
EVENTS_AT_LEAST = 20
#: An alert's status on an account page: open, resolved, or withdrawn by a later correction.
STATUSES = ("open", "resolved", "withdrawn")

Indexer = Callable[[list[str], str], int]


def index(names: list[str], name: str) -> int:
    """The position of `name` in `names`, appended when new (names travel once in the page)."""
    if name not in names:
        names.append(name)
    return names.index(name)


def engagement(client: Client, tables: Tables, ids: dict[str, int]) -> dict[str, Any]:
    """Score and heat per account (`analytics_engagement`), or `available: False` without it."""
    n = len(ids)
    out: dict[str, Any] = {
        "available": "analytics_engagement" in tables.names,
        "names": list(HEAT),
        "as_of": None,
        "score": [None] * n,
        "heat": [-1] * n,
    }
    if not out["available"]:
        return out
    rows = select(
        client,
        "SELECT account_id, score, tier, toUnixTimestamp64Milli(toDateTime64(as_of, 3, 'UTC')) "
        f"FROM {tables.database}.analytics_engagement",
    )
    for account_id, score, tier, as_of in rows:
        account = ids.get(str(account_id))
        if account is None:
            continue
        out["score"][account] = round(float(score), 2)
        out["heat"][account] = HEAT.index(str(tier)) if str(tier) in HEAT else -1
        out["as_of"] = int(as_of) if as_of is not None else out["as_of"]
    return out


def customer_tiers(client: Client, tables: Tables, ids: dict[str, int]) -> dict[str, Any]:
    """Tier and 12 months' revenue per account (`analytics_customer_tiers`)."""
    n = len(ids)
    out: dict[str, Any] = {
        "available": "analytics_customer_tiers" in tables.names,
        "names": list(TIERS),
        "tier": [-1] * n,
        "revenue": [0.0] * n,
    }
    if not out["available"]:
        return out
    rows = select(
        client, f"SELECT account_id, tier, revenue FROM {tables.database}.analytics_customer_tiers"
    )
    for account_id, tier, revenue in rows:
        account = ids.get(str(account_id))
        if account is None:
            continue
        out["tier"][account] = index(out["names"], str(tier))
        out["revenue"][account] = round(float(revenue), 2)
    return out


def credited(
    client: Client, tables: Tables, ids: dict[str, int], phases: list[str], channels: list[str]
) -> dict[str, Any]:
    """Per conversion and (channel, campaign): touches, each model's credit and revenue.

    Conversions of accounts merged away since have account -1: the views count them, and
    so does the page's whole-database view."""
    campaigns: list[str] = []
    out: dict[str, Any] = {
        "available": "attribution_current" in tables.names,
        "models": list(MODELS),
        "campaigns": campaigns,
        "account": [],
        "phase": [],
        "at": [],
        "channel": [],
        "campaign": [],
        "touches": [],
        "credit": [[] for _ in MODELS],
        "revenue": [[] for _ in MODELS],
    }
    if not out["available"]:
        return out
    credit_cols = ", ".join(f"sumIf(credit, model = '{m}')" for m in MODELS)
    revenue_cols = ", ".join(f"sumIf(revenue, model = '{m}')" for m in MODELS)
    rows = select(
        client,
        "SELECT account_id, to_phase, toUnixTimestamp64Milli(transitioned_at), channel, "
        f"campaign, countIf(model = '{MODELS[0]}'), {credit_cols}, {revenue_cols} "
        f"FROM {tables.current('attribution')} "
        "GROUP BY account_id, to_phase, transitioned_at, conversion_event_id, channel, campaign "
        "ORDER BY transitioned_at, account_id, to_phase, channel, campaign",
    )
    k = len(MODELS)
    for row in rows:
        account_id, phase, at, channel, campaign, touches = row[:6]
        out["account"].append(ids.get(str(account_id), -1))
        out["phase"].append(index(phases, str(phase)))
        out["at"].append(int(at))
        out["channel"].append(index(channels, str(channel)))
        out["campaign"].append(index(campaigns, str(campaign)))
        out["touches"].append(int(touches))
        for m in range(k):
            out["credit"][m].append(round(float(row[6 + m]), 4))
            out["revenue"][m].append(round(float(row[6 + k + m]), 2))
    return out


def events_cap(accounts: int) -> int:
    """How many of each account's latest events the page embeds."""
    return max(EVENTS_AT_LEAST, min(EVENTS_PER_ACCOUNT, EVENTS_IN_ALL // max(accounts, 1)))


def account_events(
    client: Client, tables: Tables, ids: dict[str, int], channels: list[str]
) -> dict[str, Any]:
    """Each account's latest events (`events_cap`): time, channel, type, DMU role, contact.

    Contacts are their contact ids (never an email address: the file gets mailed around)."""
    types: list[str] = []
    contacts: list[str] = []
    cap = events_cap(len(ids))
    out: dict[str, Any] = {
        "cap": cap,
        "types": types,
        "contacts": contacts,
        "account": [],
        "at": [],
        "channel": [],
        "type": [],
        "role": [],
        "contact": [],
    }
    rows = select(
        client,
        "SELECT account_id, toUnixTimestamp64Milli(occurred_at), channel, type, dmu_role, "
        f"contact_id FROM {tables.current('events')} WHERE account_id != '' "
        "ORDER BY account_id, occurred_at DESC, event_id DESC LIMIT {n:UInt32} BY account_id",
        {"n": cap},
    )
    for account_id, at, channel, type_, role, contact in reversed(rows):
        account = ids.get(str(account_id))
        if account is None:
            continue
        out["account"].append(account)
        out["at"].append(int(at))
        out["channel"].append(index(channels, str(channel)))
        out["type"].append(index(types, str(type_)))
        out["role"].append(DMU_ROLES.index(str(role)) if str(role) in DMU_ROLES else -1)
        out["contact"].append(index(contacts, str(contact)) if contact else -1)
    return out


def account_alerts(client: Client, tables: Tables, ids: dict[str, int]) -> dict[str, Any]:
    """Every alert of every current account, with its status (withdrawn ones were sent too)."""
    kinds: list[str] = []
    withdrawn = "withdrawn" if tables.has_column("alerts", "withdrawn") else "0"
    rows = select(
        client,
        "SELECT account_id, kind, toUnixTimestamp64Milli(raised_at), "
        "if(resolved_at IS NULL, NULL, toUnixTimestamp64Milli(assumeNotNull(resolved_at))), "
        f"{withdrawn} FROM {tables.final('alerts')} ORDER BY raised_at, alert_id",
    )
    out: dict[str, Any] = {
        "kinds": kinds,
        "statuses": list(STATUSES),
        "account": [],
        "kind": [],
        "raised_at": [],
        "resolved_at": [],
        "status": [],
    }
    for account_id, kind, raised_at, resolved_at, gone in rows:
        account = ids.get(str(account_id))
        if account is None:
            continue
        out["account"].append(account)
        out["kind"].append(index(kinds, str(kind)))
        out["raised_at"].append(int(raised_at))
        out["resolved_at"].append(None if resolved_at is None else int(resolved_at))
        out["status"].append(2 if gone else (0 if resolved_at is None else 1))
    return out
