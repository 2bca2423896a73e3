"""Identity re-attribution of stored events, done inside ClickHouse.

An identity link says an alias (a contact_id, anonymous_id or email) belongs
to an account, or that one account was merged into another. Events stored
before the link must follow it; so must events stored after it, which
happens when output arrives out of order (several sink processes, a
re-delivered batch). After each flush the writer therefore looks at both
sides of the batch: the links it wrote (which stored events do they move?)
and the events it wrote (is there a stored link for them already?).
`sinks.reference.attributed_account` is the reference for the answer: an event
stored without an account takes the account of its contact_id link, else
its anonymous_id link, else its email link; merged accounts are followed as
a chain.

A moved event is written again with a higher version: at least
`REATTRIBUTED` + the link's time in ms, and always above the row it
replaces, so the newest attribution wins whatever order links arrive in.

One case differs from the reference: an event already moved by a weaker
alias (say its anonymous_id) does not move again when a stronger alias (its
contact_id) is later linked to a different account, because the table
keeps only the current account. The engine links all aliases of an event
to the same journey in the same step, so its output never meets this case.
"""

from __future__ import annotations

from dataclasses import dataclass

from clickhouse_connect.driver.client import Client

from journeys.schemas.rows import Output

#: Alias kinds in the order they decide an unattributed event's account.
ALIAS_ORDER = ("contact_id", "anonymous_id", "email")
#: Versions of re-attributed rows start here (the engine writes 1 and 2).
REATTRIBUTED = 1000
#: How many merges deep stored chains of accounts are looked up in one flush.
MAX_CHAIN = 32

EVENT_COLUMNS = (
    "event_id, channel, type, occurred_at, account_id, contact_id, anonymous_id, email, "
    "dmu_role, segment, properties, context, late, version"
)


@dataclass(frozen=True)
class Candidates:
    """What a batch could change: per alias kind the aliases, and the accounts, involved."""

    aliases: dict[str, list[str]]
    accounts: list[str]

    def __bool__(self) -> bool:
        return bool(self.accounts) or any(self.aliases.values())


def candidates(out: Output) -> Candidates:
    """The aliases and accounts whose stored events this batch may re-attribute.

    Aliases: those linked in the batch, and those of the batch's events stored
    without an account. Accounts: those merged away in the batch, and those
    the batch's events were stored under (an earlier merge may apply to them).
    """
    aliases: dict[str, set[str]] = {kind: set() for kind in ALIAS_ORDER}
    accounts: set[str] = set()
    for link in out.links:
        if link.kind == "account":
            accounts.add(link.alias)
        elif link.kind in aliases:
            aliases[link.kind].add(link.alias)
    for row in out.events:
        if row.account_id:
            accounts.add(row.account_id)
            continue
        record = row.record
        for kind in ALIAS_ORDER:
            value = getattr(record, kind)
            if value:
                aliases[kind].add(value)
    return Candidates({k: sorted(v) for k, v in aliases.items()}, sorted(accounts))


def reattribute(client: Client, db: str, todo: Candidates) -> int:
    """Move stored events to the accounts their links give; the number of INSERTs run.

    Needs the batch's events and links to be in ClickHouse already.
    """
    if not todo:
        return 0
    statements = 0
    linked = _linked_aliases(client, db, todo.aliases)
    for kind in ALIAS_ORDER:
        aliases = sorted({alias for k, alias, _ in linked if k == kind})
        if aliases:
            _move(client, db, kind, aliases)
            statements += 1
    accounts = set(todo.accounts) | {account for _, _, account in linked}
    moves = follow_merges(_merges_from(client, db, accounts))
    if moves:
        _move_accounts(client, db, moves)
        statements += 1
    return statements


def follow_merges(merges: dict[str, tuple[str, int]]) -> dict[str, tuple[str, int]]:
    """Where each merged account's events end up: {account: (last account, latest link time)}.

    `merges` maps an account to the account it was merged into and when.
    Chains are followed the way `sinks.reference.attributed_account` does,
    stopping where a chain would loop.
    """
    moves = {}
    for start in merges:
        account, at, seen = start, 0, set()
        while account in merges and account not in seen:
            seen.add(account)
            account, linked_at = merges[account]
            at = max(at, linked_at)
        if account != start:
            moves[start] = (account, at)
    return moves


def _linked_aliases(
    client: Client, db: str, aliases: dict[str, list[str]]
) -> list[tuple[str, str, str]]:
    """(kind, alias, account) of every candidate alias that has a stored link."""
    if not any(aliases.values()):
        return []
    rows = client.query(
        f"SELECT kind, alias, account_id FROM {db}.identity_links FINAL WHERE "
        "(kind = 'contact_id' AND alias IN {contact_id:Array(String)}) OR "
        "(kind = 'anonymous_id' AND alias IN {anonymous_id:Array(String)}) OR "
        "(kind = 'email' AND alias IN {email:Array(String)})",
        parameters={kind: aliases.get(kind, []) for kind in ALIAS_ORDER},
    ).result_rows
    return [(str(kind), str(alias), str(account)) for kind, alias, account in rows]


def _merges_from(client: Client, db: str, accounts: set[str]) -> dict[str, tuple[str, int]]:
    """Every stored merge reachable from these accounts: {merged: (into, link time)}."""
    merges: dict[str, tuple[str, int]] = {}
    frontier = set(accounts)
    for _ in range(MAX_CHAIN):
        if not frontier:
            break
        rows = client.query(
            f"SELECT alias, account_id, toUnixTimestamp64Milli(linked_at) "
            f"FROM {db}.identity_links FINAL "
            "WHERE kind = 'account' AND alias IN {accounts:Array(String)}",
            parameters={"accounts": sorted(frontier)},
        ).result_rows
        found = {str(alias): (str(into), int(at)) for alias, into, at in rows}
        merges.update(found)
        frontier = {into for into, _ in found.values()} - merges.keys()
    return merges


_ALIAS_MATCH = {
    "contact_id": "e.contact_id",
    "anonymous_id": "e.anonymous_id",
    "email": "e.email",
}
_SELECT_MOVED = (
    f"INSERT INTO {{db}}.events ({EVENT_COLUMNS}) "
    "SELECT e.event_id, e.channel, e.type, e.occurred_at, l.account_id, e.contact_id, "
    "e.anonymous_id, e.email, e.dmu_role, e.segment, e.properties, e.context, e.late, "
    f"greatest(e.version + 1, toUInt64({REATTRIBUTED} + l.at)) "
    "FROM {db}.events AS e FINAL "
)


def _move(client: Client, db: str, kind: str, aliases: list[str]) -> None:
    """Give events stored without an account the account their linked alias of `kind` has."""
    column = _ALIAS_MATCH[kind]
    client.command(
        _SELECT_MOVED.format(db=db)
        + "INNER JOIN (SELECT alias, account_id, toUnixTimestamp64Milli(linked_at) AS at "
        f"FROM {db}.identity_links FINAL "
        "WHERE kind = {kind:String} AND alias IN {aliases:Array(String)}) AS l "
        f"ON {column} = l.alias "
        f"WHERE e.account_id = '' AND {column} IN {{aliases:Array(String)}}",
        parameters={"kind": kind, "aliases": aliases},
    )


def _move_accounts(client: Client, db: str, moves: dict[str, tuple[str, int]]) -> None:
    """Hand the events of merged accounts on to the account each chain ends at."""
    merged = sorted(moves)
    client.command(
        _SELECT_MOVED.format(db=db)
        + "INNER JOIN (SELECT m.1 AS alias, m.2 AS account_id, m.3 AS at FROM (SELECT "
        "arrayJoin(arrayZip({merged:Array(String)}, {into:Array(String)}, {at:Array(Int64)})) "
        "AS m)) AS l "
        "ON e.account_id = l.alias "
        "WHERE e.account_id IN {merged:Array(String)}",
        parameters={
            "merged": merged,
            "into": [moves[a][0] for a in merged],
            "at": [moves[a][1] for a in merged],
        },
    )
