"""One account's journey for an account manager: where it is, who is involved, what happened.

`account_timeline` reads the account's journey row, transitions, events
(counted per channel and type, the latest ones in full), the contacts seen
with their DMU roles, and its alerts. An id that is an alias (an email
domain merged into an ERP account, a contact, an anonymous visitor) is
followed to the account it belongs to.
"""

from __future__ import annotations

from typing import Any

from clickhouse_connect.driver.client import Client

from journeys.schemas.record import format_ms
from journeys.sinks.clickhouse.client import select
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
    transitions = [
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
    return {
        "account_id": account_id,
        "resolved": via,
        "journey": journey,
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
        f"{withdrawn}, details FROM {tables.database}.alerts FINAL WHERE account_id = {{a:String}} "
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
