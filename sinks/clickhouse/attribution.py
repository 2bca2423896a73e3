"""Identity re-attribution of stored events, done inside ClickHouse.

An identity link says an alias (a contact_id, anonymous_id or email) belongs
to an account, or that one account was merged into another. Events stored
before the link must follow it; so must events stored after it, which
happens when output arrives out of order (several sink processes, a
re-delivered batch). And a link can change: an alias re-linked to the
account it met earlier in event time, an account merged elsewhere.

Every stored event keeps the account the journey engine gave it
(`engine_account_id`, '' for none), so its account can always be worked out
again from scratch, the way `sinks.reference.attributed_account` does: the
engine's account, else the account of its contact_id link, else of its
anonymous_id link, else of its email link (its *base*); then the merges
from the base to the end of the chain.

After each flush the writer recomputes the events the batch may have
changed (`candidates`): those carrying an alias the batch linked, those of
the batch stored without an account, and those whose base is an account the
batch merged, an account merged into one of those (upstream), or a merged
account the batch's events were stored under. A moved event is written again
with a higher version: at least `REATTRIBUTED` + the latest link time it
followed, and always above the row it replaces.

A flush reads only the events it can move, not the table (which is sorted by
event_id): their event_ids come from one projection per looked-up column
(migration 0011), their FINAL rows through the sorting key, and their wide
columns (properties, context) only where one moves. So a backfill's cost
grows with its input, not with the square of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from clickhouse_connect.driver.binding import BS, must_escape
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
    "dmu_role, segment, properties, context, late, engine_account_id, version"
)


@dataclass(frozen=True)
class Candidates:
    """What a batch could change.

    `aliases`: per alias kind, the aliases linked in the batch and those of the
    batch's events stored without an account. `merged`: accounts the batch
    merged into another. `accounts`: the accounts the batch's events were
    stored under (an earlier merge may apply to them).
    """

    aliases: dict[str, list[str]]
    merged: list[str]
    accounts: list[str]

    def __bool__(self) -> bool:
        return bool(self.merged) or bool(self.accounts) or any(self.aliases.values())


_ESCAPES = str.maketrans({c: BS + c for c in must_escape})


class StringArray:
    """A list of strings bound as one `Array(String)` query parameter, formatted once.

    clickhouse-connect formats each bound string character by character in Python
    (`escape_str`): for the thousands of aliases of a batch that took longer than
    the queries, and held the GIL the engine needs. This formats the same literal
    with the driver's own escapes, one C pass per value; the driver passes an
    object that is neither a string nor a list through `str()` unchanged.
    """

    __slots__ = ("literal",)

    def __init__(self, values: list[str]) -> None:
        self.literal = "[" + ", ".join(f"'{v.translate(_ESCAPES)}'" for v in values) + "]"

    def __str__(self) -> str:
        return self.literal


def candidates(out: Output) -> Candidates:
    """The aliases and accounts whose stored events this batch may re-attribute."""
    aliases: dict[str, set[str]] = {kind: set() for kind in ALIAS_ORDER}
    merged: set[str] = set()
    accounts: set[str] = set()
    for link in out.links:
        if link.kind == "account":
            merged.add(link.alias)
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
    return Candidates({k: sorted(v) for k, v in aliases.items()}, sorted(merged), sorted(accounts))


def reattribute(client: Client, db: str, todo: Candidates) -> int:
    """Move stored events to the accounts their links give; the number of events moved.

    Needs the batch's events and links to be in ClickHouse already. Reads only the
    events the batch can move (see `_ids`), and their wide columns only where one moves.
    """
    if not todo:
        return 0
    affected = set(todo.merged) | _upstream(client, db, set(todo.merged))
    if todo.accounts:
        affected |= set(_merges_from(client, db, set(todo.accounts), depth=1))
    aliases = _with_linked(client, db, todo.aliases, affected)
    params: dict[str, Any] = {kind: StringArray(aliases[kind]) for kind in ALIAS_ORDER}
    params["affected"] = StringArray(sorted(affected))
    params |= _joined_aliases(client, db, params)
    bases = {
        str(row[0])
        for row in client.query(
            f"SELECT DISTINCT base FROM ({_based(db, _NARROW)}) WHERE base != ''",
            parameters=params,
        ).result_rows
    }
    if not bases:
        return 0
    moves = follow_merges(_merges_from(client, db, bases))
    merged = sorted(moves)
    params |= {
        "merged": StringArray(merged),
        "ends": StringArray([moves[a][0] for a in merged]),
        "at": [moves[a][1] for a in merged],
    }
    summary = client.command(_move(db), parameters=params)
    return int(getattr(summary, "written_rows", 0) or 0)


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


def _merges_from(
    client: Client, db: str, accounts: set[str], depth: int = MAX_CHAIN
) -> dict[str, tuple[str, int]]:
    """Every stored merge reachable from these accounts: {merged: (into, link time)}."""
    merges: dict[str, tuple[str, int]] = {}
    frontier = set(accounts)
    for _ in range(depth):
        if not frontier:
            break
        rows = client.query(
            f"SELECT alias, account_id, toUnixTimestamp64Milli(linked_at) "
            f"FROM {db}.identity_links FINAL "
            "WHERE kind = 'account' AND alias IN {accounts:Array(String)}",
            parameters={"accounts": StringArray(sorted(frontier))},
        ).result_rows
        found = {str(alias): (str(into), int(at)) for alias, into, at in rows}
        merges.update(found)
        frontier = {into for into, _ in found.values()} - merges.keys()
    return merges


def _upstream(client: Client, db: str, accounts: set[str]) -> set[str]:
    """Accounts whose stored merge chains run through any of `accounts`."""
    found: set[str] = set()
    frontier = set(accounts)
    for _ in range(MAX_CHAIN):
        if not frontier:
            break
        rows = client.query(
            f"SELECT alias FROM {db}.identity_links FINAL "
            "WHERE kind = 'account' AND account_id IN {accounts:Array(String)}",
            parameters={"accounts": StringArray(sorted(frontier))},
        ).result_rows
        frontier = {str(alias) for (alias,) in rows} - found - accounts
        found |= frontier
    return found


def _with_linked(
    client: Client, db: str, aliases: dict[str, list[str]], affected: set[str]
) -> dict[str, list[str]]:
    """Per alias kind, the batch's aliases and those linked to an affected account
    (FINAL links, looked up once per flush and bound to every query after)."""
    found = {kind: set(aliases.get(kind, [])) for kind in ALIAS_ORDER}
    if affected:
        rows = client.query(
            f"SELECT kind, alias FROM {db}.identity_links FINAL "
            "WHERE kind IN {kinds:Array(String)} AND account_id IN {affected:Array(String)}",
            parameters={"kinds": list(ALIAS_ORDER), "affected": StringArray(sorted(affected))},
        ).result_rows
        for kind, alias in rows:
            found[str(kind)].add(str(alias))
    return {kind: sorted(values) for kind, values in found.items()}


def _joined_aliases(client: Client, db: str, params: dict[str, Any]) -> dict[str, StringArray]:
    """The aliases of the candidates stored without an account, per kind: the only
    aliases whose links can decide a candidate's base (bound as `join_<kind>`)."""
    groups = ", ".join(f"groupUniqArray(e.{kind})" for kind in ALIAS_ORDER)
    ((*found,),) = client.query(
        f"SELECT {groups} FROM {db}.events AS e FINAL "
        f"WHERE e.event_id IN ({_ids(db)}) AND ({_filter('e.')}) "
        "AND e.engine_account_id = ''",
        parameters=params,
    ).result_rows
    return {
        f"join_{kind}": StringArray(sorted(str(v) for v in values if v))
        for kind, values in zip(ALIAS_ORDER, found, strict=True)
    }


def _filter(e: str) -> str:
    """Which stored events a batch may move (columns prefixed with `e`): those stored
    under an affected account, and those stored without one that carry an alias of the
    batch or an alias linked to an affected account (both bound per kind, `_with_linked`)."""
    aliases = " OR ".join(f"{e}{kind} IN {{{kind}:Array(String)}}" for kind in ALIAS_ORDER)
    return (
        f"{e}engine_account_id IN {{affected:Array(String)}} "
        f"OR ({e}engine_account_id = '' AND ({aliases}))"
    )


def _ids(db: str) -> str:
    """The event_ids of every stored row (any version) `_filter` could select: one
    lookup per column, each answered by that column's projection (migration 0011), not
    by a scan of the table, which is sorted by event_id. A superset: the FINAL rows of
    these event_ids, read through the sorting key, are filtered again."""
    columns = [("engine_account_id", "affected"), *((kind, kind) for kind in ALIAS_ORDER)]
    return " UNION ALL ".join(
        f"SELECT event_id FROM {db}.events WHERE {column} IN {{{name}:Array(String)}}"
        for column, name in columns
    )


_COPIED = (
    "event_id",
    "channel",
    "type",
    "occurred_at",
    "contact_id",
    "anonymous_id",
    "email",
    "dmu_role",
    "segment",
    "properties",
    "context",
    "late",
    "engine_account_id",
    "version",
)
#: The columns deciding whether a candidate moves needs besides its base (no wide ones).
_NARROW = ("event_id",)
_JOINS = (("contact_id", "lc"), ("anonymous_id", "la"), ("email", "le"))


def _based(db: str, copied: tuple[str, ...] = _COPIED, among: str = "") -> str:
    """The candidate events (FINAL rows) with their base account before merges, and the
    time of the alias link it came from; `copied` columns of each. Links are read for
    the candidates' aliases only (`join_<kind>`). `among`: a subquery of event_ids the
    candidates are limited to (default: `_ids`)."""
    columns = ", ".join(f"e.{c} AS {c}" for c in copied)
    joins = " ".join(
        f"LEFT JOIN (SELECT alias, account_id, toUnixTimestamp64Milli(linked_at) AS at "
        f"FROM {db}.identity_links FINAL WHERE kind = '{kind}' "
        f"AND alias IN {{join_{kind}:Array(String)}}) AS {name} ON {name}.alias = e.{kind}"
        for kind, name in _JOINS
    )
    return (
        f"SELECT {columns}, e.account_id AS current, "
        "multiIf(e.engine_account_id != '', e.engine_account_id, "
        "lc.account_id != '', lc.account_id, la.account_id != '', la.account_id, "
        "le.account_id) AS base, "
        "multiIf(e.engine_account_id != '', 0, lc.account_id != '', lc.at, "
        "la.account_id != '', la.at, le.account_id != '', le.at, 0) AS base_at "
        f"FROM {db}.events AS e FINAL {joins} "
        f"WHERE e.event_id IN ({among or _ids(db)}) AND ({_filter('e.')})"
    )


_ENDS = "transform(base, {merged:Array(String)}, {ends:Array(String)}, base)"


def _move(db: str) -> str:
    """Write the candidates whose account changes again, at the end of their chain. The
    candidates are decided on their narrow columns first; only the moving ones are read
    whole."""
    chain_at = "transform(base, {merged:Array(String)}, {at:Array(Int64)}, toInt64(0))"
    moving = (
        f"SELECT event_id FROM (SELECT event_id, current, {_ENDS} AS moved "
        f"FROM ({_based(db, _NARROW)})) WHERE moved != current"
    )
    return (
        f"INSERT INTO {db}.events ({EVENT_COLUMNS}) "
        "SELECT event_id, channel, type, occurred_at, moved, contact_id, anonymous_id, email, "
        "dmu_role, segment, properties, context, late, engine_account_id, "
        f"greatest(version + 1, toUInt64({REATTRIBUTED} + greatest(base_at, {chain_at}))) "
        f"FROM (SELECT *, {_ENDS} AS moved FROM ({_based(db, _COPIED, moving)})) "
        "WHERE moved != current"
    )
