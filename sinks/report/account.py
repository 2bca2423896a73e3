"""One account's journey for an account manager: where it is, who is involved, what happened.

`account_timeline` reads the account's journey row, transitions, events
(counted per channel and type, the latest ones in full), the contacts seen
with their DMU roles, and its alerts; and what moves it: its engagement score and heat, its
customer tier and 12 months' revenue, and per transition the touches credited with each
attribution model's credit (each from its view, when the database has it). An id that is an
alias (an email domain merged into an ERP account, a contact, an anonymous visitor) is
followed to the account it belongs to.
"""

from __future__ import annotations

from typing import Any

from clickhouse_connect.driver.client import Client

from journeys.schemas.record import format_ms
from journeys.sinks.clickhouse.client import select
from journeys.sinks.report.moves import MODELS
from journeys.sinks.report.source import Tables


def _ms(value: Any) -> str | None:
    return format_ms(int(value)) if value is not None else None


def resolve_account(client: Client, tables: Tables, wanted: str) -> tuple[str | None, str | None]:
    """(the account `wanted` names, how it was found) or (None, None)."""
    journeys = tables.current("journeys")
    rows = select(
        client, f"SELECT count() FROM {journeys} WHERE account_id = {{a:String}}", {"a": wanted}
    )
    if rows and rows[0][0]:
        return wanted, None
    links = select(
        client,
        f"SELECT kind, account_id FROM {tables.current('identity_links')} "
        "WHERE alias = {a:String} ORDER BY kind = 'account' DESC LIMIT 1",
        {"a": wanted},
    )
    seen: set[str] = {wanted}
    while links:
        kind, account = str(links[0][0]), str(links[0][1])
        if account in seen:
            break
        seen.add(account)
        rows = select(
            client,
            f"SELECT count() FROM {journeys} WHERE account_id = {{a:String}}",
            {"a": account},
        )
        if rows and rows[0][0]:
            return account, f"{wanted} is an alias ({kind}) of account {account}"
        links = select(
            client,
            f"SELECT kind, account_id FROM {tables.current('identity_links')} "
            "WHERE alias = {a:String} AND kind = 'account' LIMIT 1",
            {"a": account},
        )
    return None, None


def account_timeline(
    client: Client, database: str, wanted: str, recent: int = 20
) -> dict[str, Any] | None:
    """Everything about one account, or None if no account has that id or alias."""
    tables = Tables(client, database)
    account_id, via = resolve_account(client, tables, wanted)
    if account_id is None:
        return None
    params = {"a": account_id}
    journey = _journey(client, tables, params)
    transitions: list[dict[str, Any]] = [
        {
            "from_phase": str(f) or None,
            "to_phase": str(t),
            "at": _ms(at),
            "event_type": str(et),
            "channel": str(ch),
            "event_id": str(e),
        }
        for f, t, at, et, ch, e in select(
            client,
            "SELECT from_phase, to_phase, toUnixTimestamp64Milli(transitioned_at), event_type, "
            "channel, event_id "
            f"FROM {tables.current('phase_transitions')} WHERE account_id = {{a:String}} "
            "ORDER BY transitioned_at, to_phase",
            params,
        )
    ]
    channels = [
        {"channel": str(ch), "type": str(ty), "events": int(n), "first": _ms(lo), "last": _ms(hi)}
        for ch, ty, n, lo, hi in select(
            client,
            "SELECT channel, type, count(), toUnixTimestamp64Milli(min(occurred_at)), "
            f"toUnixTimestamp64Milli(max(occurred_at)) FROM {tables.current('events')} "
            "WHERE account_id = {a:String} GROUP BY channel, type "
            "ORDER BY channel, count() DESC, type",
            params,
        )
    ]
    contacts = [
        {
            "contact": str(c),
            "email": str(em) or None,
            "dmu_roles": [str(r) for r in roles],
            "events": int(n),
            "first": _ms(lo),
            "last": _ms(hi),
        }
        for c, em, roles, n, lo, hi in select(
            client,
            "SELECT if(contact_id != '', contact_id, email) AS who, any(email), "
            "arraySort(groupUniqArrayIf(dmu_role, dmu_role != '')), count(), "
            "toUnixTimestamp64Milli(min(occurred_at)), toUnixTimestamp64Milli(max(occurred_at)) "
            f"FROM {tables.current('events')} WHERE account_id = {{a:String}} AND who != '' "
            "GROUP BY who ORDER BY min(occurred_at)",
            params,
        )
    ]
    events = [
        {
            "at": _ms(at),
            "channel": str(ch),
            "type": str(ty),
            "contact": str(c) or None,
            "dmu_role": str(r) or None,
            "event_id": str(e),
        }
        for at, ch, ty, c, r, e in select(
            client,
            "SELECT toUnixTimestamp64Milli(occurred_at), channel, type, "
            "if(contact_id != '', contact_id, if(email != '', email, anonymous_id)), dmu_role, "
            "event_id "
            f"FROM {tables.current('events')} WHERE account_id = {{a:String}} "
            "ORDER BY occurred_at DESC, event_id LIMIT {n:UInt32}",
            {**params, "n": recent},
        )
    ]
    touches = _credited(client, tables, params)
    for transition in transitions:
        transition["credited"] = touches.get((transition["to_phase"], transition["event_id"]), [])
    return {
        "account_id": account_id,
        "resolved": via,
        "journey": journey,
        "engagement": _engagement(client, tables, params),
        "customer": _customer(client, tables, params),
        "transitions": transitions,
        "channels": channels,
        "contacts": contacts,
        "recent_events": list(reversed(events)),
        "alerts": _alerts(client, tables, params),
    }


def _journey(client: Client, tables: Tables, params: dict[str, Any]) -> dict[str, Any]:
    rows = select(
        client,
        "SELECT phase, toUnixTimestamp64Milli(phase_since), toUnixTimestamp64Milli(first_seen), "
        "toUnixTimestamp64Milli(last_seen), "
        "if(last_activity IS NULL, NULL, toUnixTimestamp64Milli(assumeNotNull(last_activity))), "
        f"events, contacts, dmu_roles, segment FROM {tables.current('journeys')} "
        "WHERE account_id = {a:String}",
        params,
    )
    phase, since, first, last, active, events, contacts, roles, segment = rows[0]
    return {
        "phase": str(phase),
        "phase_since": _ms(since),
        "first_seen": _ms(first),
        "last_seen": _ms(last),
        "last_activity": _ms(active),
        "events": int(events),
        "contacts": int(contacts),
        "dmu_roles": [str(r) for r in roles],
        "segment": str(segment) or None,
    }


def _alerts(client: Client, tables: Tables, params: dict[str, Any]) -> list[dict[str, Any]]:
    """Every alert of the account with its status (withdrawn ones too: they were sent)."""
    withdrawn = "withdrawn" if tables.has_column("alerts", "withdrawn") else "0"
    rows = select(
        client,
        "SELECT alert_id, kind, toUnixTimestamp64Milli(raised_at), "
        "if(resolved_at IS NULL, NULL, toUnixTimestamp64Milli(assumeNotNull(resolved_at))), "
        f"{withdrawn}, details FROM {tables.final('alerts')} WHERE account_id = {{a:String}} "
        "ORDER BY raised_at, alert_id",
        params,
    )
    return [
        {
            "alert_id": str(i),
            "kind": str(k),
            "raised_at": _ms(r),
            "resolved_at": _ms(s),
            "status": "withdrawn" if w else ("raised" if s is None else "resolved"),
            "details": str(d),
        }
        for i, k, r, s, w, d in rows
    ]


def _engagement(client: Client, tables: Tables, params: dict[str, Any]) -> dict[str, Any] | None:
    """Score and heat as of the latest event stored (None without `analytics_engagement`)."""
    if "analytics_engagement" not in tables.names:
        return None
    rows = select(
        client,
        "SELECT score, tier, toUnixTimestamp64Milli(toDateTime64(as_of, 3, 'UTC')) "
        f"FROM {tables.database}.analytics_engagement WHERE account_id = {{a:String}}",
        params,
    )
    if not rows:
        return None
    score, tier, as_of = rows[0]
    return {"score": round(float(score), 3), "tier": str(tier), "as_of": _ms(as_of)}


def _customer(client: Client, tables: Tables, params: dict[str, Any]) -> dict[str, Any] | None:
    """Customer tier, 12 months' revenue and rank (None without `analytics_customer_tiers`)."""
    if "analytics_customer_tiers" not in tables.names:
        return None
    rows = select(
        client,
        "SELECT tier, revenue, revenue_rank, orders_in_period "
        f"FROM {tables.database}.analytics_customer_tiers WHERE account_id = {{a:String}}",
        params,
    )
    if not rows:
        return None
    tier, revenue, rank, orders = rows[0]
    return {
        "tier": str(tier),
        "revenue": round(float(revenue), 2),
        "revenue_rank": None if rank is None else int(rank),
        "orders_in_period": int(orders),
    }


def _credited(
    client: Client, tables: Tables, params: dict[str, Any]
) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Per (to_phase, converting event id): its touches, oldest first, with every model's credit
    and revenue (empty without the attribution view)."""
    if "attribution_current" not in tables.names:
        return {}
    rows = select(
        client,
        "SELECT to_phase, conversion_event_id, touch_event_id, toUnixTimestamp64Milli(touch_at), "
        "channel, type, campaign, content, model, credit, revenue "
        f"FROM {tables.current('attribution')} WHERE account_id = {{a:String}} "
        "ORDER BY transitioned_at, to_phase, touch_at, touch_event_id",
        params,
    )
    out: dict[tuple[str, str], list[dict[str, Any]]] = {}
    seen: dict[tuple[str, str, str], dict[str, Any]] = {}
    for phase, conversion, touch, at, channel, type_, campaign, content, model, credit, rev in rows:
        key = (str(phase), str(conversion))
        entry = seen.get((*key, str(touch)))
        if entry is None:
            entry = {
                "event_id": str(touch),
                "at": _ms(at),
                "channel": str(channel),
                "type": str(type_),
                "campaign": str(campaign) or None,
                "content": str(content) or None,
                "credit": dict.fromkeys(MODELS, 0.0),
                "revenue": dict.fromkeys(MODELS, 0.0),
            }
            seen[(*key, str(touch))] = entry
            out.setdefault(key, []).append(entry)
        entry["credit"][str(model)] = float(credit)
        entry["revenue"][str(model)] = round(float(rev), 2)
    return out


def value_line(timeline: dict[str, Any]) -> str:
    """One line for `journeys account`: engagement score and tier, customer tier and revenue."""
    e, c = timeline.get("engagement"), timeline.get("customer")
    heat = f"engagement {e['score']:.1f} ({e['tier']})" if e else "engagement: no data"
    if not c:
        return f"  {heat}; customer tier: no data"
    rank = f", rank {c['revenue_rank']}" if c["revenue_rank"] else ""
    return (
        f"  {heat}; customer tier {c['tier']}, {c['revenue']:,.0f} revenue in 12 months "
        f"({c['orders_in_period']} order{'' if c['orders_in_period'] == 1 else 's'}{rank})"
    )


def credited_lines(transition: dict[str, Any]) -> list[str]:
    """Lines for `journeys account` under a transition: each touch credited, every model's credit.

    Columns: first touch, last touch, linear, position based, time decay."""
    touches = transition.get("credited") or []
    if not touches:
        return ["      no touchpoint in the lookback window"]
    lines = ["      touches credited          first   last  linear  posit.  decay"]
    for t in touches:
        what = f"{t['channel']}/{t['type']}" + (f" [{t['campaign']}]" if t["campaign"] else "")
        credits = "".join(f"{t['credit'][m]:>7.2f}" for m in MODELS)
        lines.append(f"      {t['at'][:16]} {what:<26.26}{credits}")
    revenue = touches[0]["revenue"]
    if any(v for v in revenue.values()):
        total = sum(t["revenue"]["linear"] for t in touches)
        lines.append(f"      revenue credited: {total:,.2f}")
    return lines
