"""Erasure (GDPR article 17) in ClickHouse: find a person or company, delete, recompute.

`forget` is the one implementation behind `journeys forget` and the
collector's `POST /v1/privacy/forget`:

1. **Find** every identifier of the person through the identity graph: the
   stored events carrying the given email, contact or anonymous id give
   their other identifiers, and those give more, until nothing new comes
   (`find_identifiers`). For `account_id` the company is the account, the
   accounts merged into it, and every person seen in them.
2. **Suppress**: their salted hashes go on `privacy_suppressions` first, so
   nothing of theirs is stored again from now on.
3. **Erase**: events, identity links and dead letters (payload or reason
   containing one of the identifiers) of the person, and every row of an
   account whose id is itself one of them (a free-mail contact is its own
   account) or the company asked for. `ALTER TABLE ... DELETE` with
   `mutations_sync = 2`, not a lightweight `DELETE FROM`: a lightweight
   delete only masks rows until a later merge, while a mutation rewrites the
   parts, so when `forget` returns the bytes are gone from every replica's
   active parts (both work on the embedded engine and on a server; on a
   cluster the mutation runs on `<table>_local ON CLUSTER`).
4. **Recompute** the accounts the erased events belonged to, from their
   remaining events (`journeys.sinks.clickhouse.recompute`).
5. **Audit**: a `privacy_requests` row with the request's kind, the hash of
   the identifier, the rows erased per table, and no personal data.

Not done here: the streaming engine's state (its in-memory journeys and the
compacted changelogs of the workers) is not erased; a running worker keeps
its counts until its state is rebuilt (docs/privacy.md).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from clickhouse_connect.driver.client import Client

from journeys.schemas.privacy import IdentifierKind, identifier_hash, normalise_identifier
from journeys.sinks.clickhouse.client import run, select
from journeys.streams.engine import EngineConfig

#: Rounds of the identity-graph search (each adds what the last one found).
MAX_ROUNDS = 20
#: Identifiers shorter than this match dead letters only as a JSON string (`"value"`).
SHORT_IDENTIFIER = 6
#: Mutations wait for every replica (2), so the rows are gone when `forget` returns.
MUTATION_SETTINGS = "SETTINGS mutations_sync = 2"


@dataclass(frozen=True)
class ForgetRequest:
    """What a data subject (or a company) asked to be erased."""

    kind: IdentifierKind
    value: str
    source: str = "cli"


@dataclass
class Identifiers:
    """Everything that names the person (or company) in stored data."""

    emails: set[str] = field(default_factory=set)
    contacts: set[str] = field(default_factory=set)
    anonymous: set[str] = field(default_factory=set)
    #: Accounts erased whole: the company asked for (and those merged into it), or an
    #: account whose id is one of the person's identifiers.
    accounts: set[str] = field(default_factory=set)

    def pairs(self) -> list[tuple[IdentifierKind, str]]:
        """(kind, value) of every identifier."""
        found: list[tuple[IdentifierKind, str]] = [("email", v) for v in sorted(self.emails)]
        found += [("contact_id", v) for v in sorted(self.contacts)]
        found += [("anonymous_id", v) for v in sorted(self.anonymous)]
        found += [("account_id", v) for v in sorted(self.accounts)]
        return found

    def hashes(self, salt: bytes) -> set[str]:
        """Their salted hashes, as the suppression list keeps them."""
        return {identifier_hash(salt, kind, value) for kind, value in self.pairs()}

    def values(self) -> list[str]:
        """Every identifier's text (for searching dead letters)."""
        return sorted({value for _, value in self.pairs()})

    def parameters(self) -> dict[str, Any]:
        """Query parameters of the conditions below."""
        return {
            "emails": sorted(self.emails),
            "contacts": sorted(self.contacts),
            "anons": sorted(self.anonymous),
            "accounts": sorted(self.accounts),
            "aliases": sorted(self.emails | self.contacts | self.anonymous | self.accounts),
            "needles": _needles(self.values()),
        }


@dataclass
class ForgetResult:
    """What a request did: its id, status, and rows erased per table."""

    request_id: str
    status: str
    identifiers: int = 0
    erased: dict[str, int] = field(default_factory=dict)
    accounts_recomputed: int = 0


def _needles(values: Iterable[str]) -> list[str]:
    """What dead letters are searched for: short values only as a quoted JSON string."""
    return [v if len(v) >= SHORT_IDENTIFIER else f'"{v}"' for v in values if v]


# ------------------------------------------------------------------ finding people

_LINKED = """
SELECT DISTINCT lower(email), contact_id, anonymous_id FROM {db}.events
WHERE lower(email) IN {{emails:Array(String)}} OR contact_id IN {{contacts:Array(String)}}
   OR anonymous_id IN {{anons:Array(String)}} OR account_id IN {{accounts:Array(String)}}
   OR engine_account_id IN {{accounts:Array(String)}}
"""


def find_identifiers(client: Client, db: str, request: ForgetRequest) -> Identifiers:
    """The request's identifier and everything the stored events link to it."""
    found = Identifiers()
    value = normalise_identifier(request.kind, request.value)
    if request.kind == "account_id":
        found.accounts = _company(client, db, request.value.strip())
    else:
        getattr(found, _SETS[request.kind]).add(value)
    for _ in range(MAX_ROUNDS):
        before = len(found.pairs())
        for email, contact, anonymous in select(client, _LINKED.format(db=db), found.parameters()):
            found.emails.update([email] if email else [])
            found.contacts.update([contact] if contact else [])
            found.anonymous.update([anonymous] if anonymous else [])
        if len(found.pairs()) == before:
            break
    found.accounts |= _own_accounts(client, db, found)
    return found


_SETS = {"email": "emails", "contact_id": "contacts", "anonymous_id": "anonymous"}


def _company(client: Client, db: str, account: str) -> set[str]:
    """An account and the accounts merged into it (`account` links)."""
    rows = select(
        client,
        f"SELECT DISTINCT alias FROM {db}.identity_links "
        "WHERE kind = 'account' AND account_id = {account:String}",
        {"account": account},
    )
    return {account, *(row[0] for row in rows)}


def _own_accounts(client: Client, db: str, found: Identifiers) -> set[str]:
    """Accounts whose id is one of the person's identifiers (a free-mail contact)."""
    names = sorted(found.emails | found.contacts | found.anonymous)
    rows = select(
        client,
        f"SELECT DISTINCT account_id FROM {db}.journeys WHERE account_id IN "
        "{names:Array(String)} UNION DISTINCT SELECT DISTINCT account_id FROM "
        f"{db}.events WHERE account_id IN {{names:Array(String)}}",
        {"names": names},
    )
    return {row[0] for row in rows if row[0]}


def affected_accounts(client: Client, db: str, found: Identifiers) -> set[str]:
    """Accounts the erased events belonged to that survive them (to recompute)."""
    rows = select(
        client,
        f"SELECT DISTINCT arrayJoin([account_id, engine_account_id]) FROM {db}.events "
        f"WHERE {_CONDITIONS['events']}",
        found.parameters(),
    )
    return {row[0] for row in rows if row[0]} - found.accounts


# ------------------------------------------------------------------ erasing

_CONDITIONS = {
    "events": "lower(email) IN {emails:Array(String)} OR contact_id IN {contacts:Array(String)} "
    "OR anonymous_id IN {anons:Array(String)} OR account_id IN {accounts:Array(String)} "
    "OR engine_account_id IN {accounts:Array(String)}",
    "identity_links": "alias IN {aliases:Array(String)} OR lower(alias) IN {emails:Array(String)} "
    "OR account_id IN {accounts:Array(String)}",
    "dead_letters": "arrayExists(x -> positionCaseInsensitive(payload, x) > 0 "
    "OR positionCaseInsensitive(reason, x) > 0, {needles:Array(String)})",
    "journeys": "account_id IN {accounts:Array(String)}",
    "phase_transitions": "account_id IN {accounts:Array(String)}",
    "alerts": "account_id IN {accounts:Array(String)}",
}


def delete_where(client: Client, db: str, table: str, where: str, params: dict[str, Any]) -> int:
    """Delete a table's rows matching `where` (a mutation, waited for); how many there were."""
    count = int(select(client, f"SELECT count() FROM {db}.{table} WHERE {where}", params)[0][0])
    if count:
        target = mutation_target(client, db, table)
        run(client, f"ALTER TABLE {target} DELETE WHERE {where} {MUTATION_SETTINGS}", params)
    return count


def storage_table(client: Client, db: str, table: str) -> tuple[str, str]:
    """The table that holds `table`'s rows and the clause that reaches all of them: the
    table itself (''), or on a cluster (a Distributed table in front of `<table>_local`)
    the local tables of every node (` ON CLUSTER '{cluster}'`)."""
    engine = select(
        client,
        "SELECT engine FROM system.tables WHERE database = {db:String} AND name = {t:String}",
        {"db": db, "t": table},
    )
    if engine and engine[0][0] == "Distributed":
        return f"{table}_local", " ON CLUSTER '{cluster}'"
    return table, ""


def mutation_target(client: Client, db: str, table: str) -> str:
    """What an ALTER of `table` names (see `storage_table`)."""
    name, cluster = storage_table(client, db, table)
    return f"{db}.{name}{cluster}"


def erase(client: Client, db: str, found: Identifiers) -> dict[str, int]:
    """Delete every row naming the person or an erased account; rows erased per table."""
    params = found.parameters()
    return {
        table: delete_where(client, db, table, where, params)
        for table, where in _CONDITIONS.items()
    }


# ------------------------------------------------------------------ the list and the audit


def add_suppressions(client: Client, db: str, hashes: Iterable[str], request_id: str) -> None:
    """Put hashes on the suppression list (`privacy_suppressions`)."""
    added = _datetime(_now_ms())
    rows = [[h, request_id, added] for h in sorted(hashes)]
    if rows:
        client.insert(
            f"{db}.privacy_suppressions",
            rows,
            column_names=["identifier_hash", "request_id", "added_at"],
        )


def load_suppressions(client: Client, db: str) -> set[str]:
    """Every hash on the suppression list."""
    return {
        row[0] for row in select(client, f"SELECT identifier_hash FROM {db}.privacy_suppressions")
    }


def record_request(
    client: Client, db: str, request: ForgetRequest, salt: bytes, result: ForgetResult,
    requested_at: int,
) -> None:  # fmt: skip
    """Write the request's audit row (a newer version of it each time it moves on)."""
    finished = _datetime(_now_ms()) if result.status != "started" else None
    client.insert(
        f"{db}.privacy_requests",
        [
            [
                result.request_id,
                request.kind,
                identifier_hash(salt, request.kind, request.value),
                request.source,
                _datetime(requested_at),
                finished,
                result.status,
                result.identifiers,
                result.erased,
                result.accounts_recomputed,
                time.time_ns(),
            ]
        ],
        column_names=[
            "request_id", "kind", "identifier_hash", "source", "requested_at", "finished_at",
            "status", "identifiers", "erased", "accounts_recomputed", "version",
        ],
    )  # fmt: skip


def _now_ms() -> int:
    return int(time.time() * 1000)


def _datetime(ms: int) -> Any:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ms / 1000, tz=UTC)


# ------------------------------------------------------------------ the whole request


def forget(
    client: Client, dsn: str, db: str, config: EngineConfig, salt: bytes, request: ForgetRequest
) -> tuple[ForgetResult, set[str]]:
    """Erase a person or company (see the module docstring); the result and the hashes
    put on the suppression list (for the caller to publish to the running processes)."""
    from journeys.sinks.clickhouse.recompute import recompute_accounts

    requested_at = _now_ms()
    result = ForgetResult(request_id=uuid.uuid4().hex, status="started")
    record_request(client, db, request, salt, result, requested_at)
    try:
        found = find_identifiers(client, db, request)
        hashes = found.hashes(salt)
        add_suppressions(client, db, hashes, result.request_id)
        accounts = affected_accounts(client, db, found)
        result.identifiers = len(found.pairs())
        result.erased = erase(client, db, found)
        result.accounts_recomputed = recompute_accounts(client, dsn, db, config, accounts)
        result.status = "erased"
    except BaseException:
        result.status = "failed"
        record_request(client, db, request, salt, result, requested_at)
        raise
    record_request(client, db, request, salt, result, requested_at)
    return result, hashes
