"""`journeys forget` against the real embedded ClickHouse: nothing of the person is left,
and the account's journey is what a replay without the person's events gives."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner
from clickhouse_connect.driver.client import Client

from journeys.cli import main
from journeys.schemas.privacy import ConsentMode
from journeys.schemas.record import EventRecord
from journeys.sinks.clickhouse.client import connect
from journeys.sinks.clickhouse.queries import snapshot
from tests.unit.engine.journey import ev

pytestmark = pytest.mark.integration

BOB = {"email": "bob@acme.nl", "contact_id": "c-bob-17", "anonymous_id": "anon-bob-9f3e"}
JAN = {"email": "jan.visser@gmail.com", "anonymous_id": "anon-jan-77aa"}

#: Company acme.nl: Anna and Bob; Bob visits first, puts a cart together and leaves it
#: (an abandoned cart), and asks for a quote; Anna orders later. Jan is a free-mail
#: contact (his own account). The dead letter carries Bob's email.
EVENTS = [
    ev("page_view", 0, event_id="b1", anonymous_id=BOB["anonymous_id"]),
    ev("pricing_view", 1, event_id="b2", anonymous_id=BOB["anonymous_id"]),
    ev(
        "signup",
        2,
        event_id="b3",
        email=BOB["email"],
        contact_id=BOB["contact_id"],
        anonymous_id=BOB["anonymous_id"],
        dmu_role="buyer",
    ),  # fmt: skip
    ev("add_to_cart", 3, event_id="b4", contact_id=BOB["contact_id"]),
    ev("page_view", 10, event_id="a1", email="anna@acme.nl", contact_id="c-anna"),
    ev("product_view", 30, event_id="a2", email="anna@acme.nl", dmu_role="decider"),
    ev("quote_requested", 40, event_id="b5", email=BOB["email"]),
    ev("order_placed", 60, event_id="a3", email="anna@acme.nl"),
    ev("page_view", 5, event_id="j1", anonymous_id=JAN["anonymous_id"]),
    ev(
        "quote_requested", 6, event_id="j2", email=JAN["email"], anonymous_id=JAN["anonymous_id"]
    ),  # fmt: skip
    ev("page_view", 100, event_id="x1", email="kees@other.de"),
]
BAD = [b'{"channel":"fax","type":"x","occurred_at":"2026-01-01T00:00:00Z","email":"bob@acme.nl"}']


def _person(record: EventRecord, person: dict[str, str]) -> bool:
    return any(getattr(record, k) == v for k, v in person.items())


def _write(path: Path, events: list[EventRecord], bad: list[bytes]) -> Path:
    path.write_bytes(b"\n".join([e.to_json() for e in events] + bad) + b"\n")
    return path


def _cli(args: list[str], dsn: str, db: str, data_dir: Path) -> Any:
    if args[0] == "forget":
        args = [*args, "--no-kafka"]  # a replay-built database, no broker
    result = CliRunner().invoke(
        main,
        [*args, "--clickhouse-url", dsn, "--clickhouse-database", db, "--data-dir", str(data_dir)],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    return result


def _replayed(path: Path, dsn: str, db: str, data_dir: Path) -> None:
    _cli(["replay", "--quiet", str(path)], dsn, db, data_dir)


def scan(client: Client, db: str, needles: list[str]) -> list[tuple[str, str]]:
    """(table, needle) for every needle found in any column of any row of any table."""
    tables = client.query(
        "SELECT name FROM system.tables WHERE database = {db:String} AND engine NOT LIKE '%View'",
        parameters={"db": db},
    ).result_rows
    found = []
    for (table,) in tables:
        columns = [c[0] for c in client.query(f"DESCRIBE TABLE {db}.{table}").result_rows]
        row = " || '|' || ".join(f"toString({c})" for c in columns)
        for needle in needles:
            n = client.query(
                f"SELECT count() FROM {db}.{table} WHERE positionCaseInsensitive({row}, "
                "{n:String}) > 0",
                parameters={"n": needle},
            ).result_rows[0][0]
            if n:
                found.append((table, needle))
    return found


def _account(snap: dict[str, list[dict[str, Any]]], account: str) -> dict[str, Any]:
    def rows(table: str) -> list[dict[str, Any]]:
        return [r for r in snap[table] if r["account_id"] == account]

    return {t: rows(t) for t in ("journeys", "phase_transitions", "alerts")}


def test_forget_leaves_nothing_and_the_account_equals_a_replay_without_the_person(
    tmp_path: Path, chdb_dsn: str, database_name: Callable[[str], str]
) -> None:
    client = connect(chdb_dsn)
    db, reference = database_name("forget"), database_name("without")
    _replayed(_write(tmp_path / "all.jsonl", EVENTS, BAD), chdb_dsn, db, tmp_path)
    before = _account(snapshot(client, db), "acme.nl")
    assert scan(client, db, list(BOB.values())), "the person is stored before the request"

    result = _cli(["forget", "--email", "BOB@acme.nl"], chdb_dsn, db, tmp_path)
    assert "erased" in result.output

    assert scan(client, db, list(BOB.values())) == []
    others = [e for e in EVENTS if not _person(e, BOB)]
    _replayed(_write(tmp_path / "without.jsonl", others, []), chdb_dsn, reference, tmp_path)
    after, expected = (
        _account(snapshot(client, db), "acme.nl"),
        _account(snapshot(client, reference), "acme.nl"),
    )
    assert after == expected
    assert after != before  # Bob's cart and quote moved the account; now they do not
    # every other account is untouched
    left, ref = snapshot(client, db), snapshot(client, reference)
    for table in ("journeys", "phase_transitions", "alerts", "events"):
        assert left[table] == ref[table], table


def test_forget_a_free_mail_contact_erases_their_own_account(
    tmp_path: Path, chdb_dsn: str, database_name: Callable[[str], str]
) -> None:
    client = connect(chdb_dsn)
    db = database_name("freemail")
    _replayed(_write(tmp_path / "all.jsonl", EVENTS, BAD), chdb_dsn, db, tmp_path)
    _cli(["forget", "--anonymous-id", JAN["anonymous_id"]], chdb_dsn, db, tmp_path)
    assert scan(client, db, list(JAN.values())) == []
    assert scan(client, db, list(BOB.values()))  # only Jan was asked for


def test_forget_a_company_erases_every_person_in_it(
    tmp_path: Path, chdb_dsn: str, database_name: Callable[[str], str]
) -> None:
    client = connect(chdb_dsn)
    db = database_name("company")
    _replayed(_write(tmp_path / "all.jsonl", EVENTS, BAD), chdb_dsn, db, tmp_path)
    _cli(["forget", "--account-id", "acme.nl"], chdb_dsn, db, tmp_path)
    assert scan(client, db, ["acme.nl", "c-anna", *BOB.values()]) == []
    assert scan(client, db, ["kees@other.de", JAN["email"]])  # other companies stay


def test_the_audit_keeps_counts_and_a_hash_only(
    tmp_path: Path, chdb_dsn: str, database_name: Callable[[str], str]
) -> None:
    client = connect(chdb_dsn)
    db = database_name("audit")
    _replayed(_write(tmp_path / "all.jsonl", EVENTS, BAD), chdb_dsn, db, tmp_path)
    _cli(["forget", "--contact-id", BOB["contact_id"]], chdb_dsn, db, tmp_path)
    rows = client.query(
        f"SELECT kind, identifier_hash, status, erased, accounts_recomputed "
        f"FROM {db}.privacy_requests FINAL"
    ).result_rows
    assert len(rows) == 1
    kind, digest, status, erased, recomputed = rows[0]
    assert (kind, status, recomputed) == ("contact_id", "erased", 1)
    # rows as stored: an event re-attributed to its account is a second version of it
    assert erased["events"] >= 5 and erased["dead_letters"] == 1 and erased["identity_links"] >= 3
    assert len(digest) == 64 and BOB["contact_id"] not in digest
    suppressed = client.query(f"SELECT count() FROM {db}.privacy_suppressions").result_rows
    assert suppressed[0][0] == 3  # his email, contact and anonymous id

    again = _cli(["forget", "--email", BOB["email"]], chdb_dsn, db, tmp_path)  # idempotent
    assert "rows erased: events 0, identity_links 0, dead_letters 0" in again.output
    statuses = client.query(f"SELECT status FROM {db}.privacy_requests FINAL").result_rows
    assert statuses == [("erased",), ("erased",)]


def _linked(events: list[EventRecord], email: str) -> dict[str, set[str]]:
    """The person's identifiers as the input links them (email, contact, anonymous id)."""
    found: dict[str, set[str]] = {"email": {email}, "contact_id": set(), "anonymous_id": set()}
    while True:
        size = sum(map(len, found.values()))
        for e in events:
            if any(getattr(e, k) and getattr(e, k).lower() in v for k, v in found.items()):
                for k, v in found.items():
                    if getattr(e, k):
                        v.add(getattr(e, k).lower() if k == "email" else getattr(e, k))
        if sum(map(len, found.values())) == size:
            return found


def _mine(record: EventRecord, ids: dict[str, set[str]]) -> bool:
    return any(
        (v := getattr(record, k)) and (v.lower() if k == "email" else v) in values
        for k, values in ids.items()
    )


def test_forget_on_simulated_journeys_equals_a_replay_without_the_person(
    tmp_path: Path, chdb_dsn: str, database_name: Callable[[str], str]
) -> None:
    from journeys.producers.simulator import simulate
    from journeys.schemas.errors import InvalidEvent
    from journeys.schemas.event import parse_event

    events = []
    for line in simulate(accounts=25, days=200, seed=11):
        try:
            events.append(parse_event(line))
        except InvalidEvent:
            pass
    emails: dict[str, set[str]] = {}
    for e in events:
        if e.email and not e.account_id:
            emails.setdefault(e.email.rpartition("@")[2], set()).add(e.email.lower())
    # a person of a company with several, whose events name no account of their own: the
    # account keeps its identity without them (see docs/privacy.md for one that bridges
    # the company's domain to its ERP account)
    candidates = [
        (email, _linked(events, email))
        for domain in sorted(emails, key=lambda d: (-len(emails[d]), d))
        for email in sorted(emails[domain])
        if len(emails[domain]) > 1
    ]
    person, ids = next(
        (email, ids)
        for email, ids in candidates
        if not any(e.account_id for e in events if _mine(e, ids))
    )
    others = [e for e in events if not _mine(e, ids)]
    assert len(events) - len(others) >= 5

    client = connect(chdb_dsn)
    db, reference = database_name("sim"), database_name("simref")
    _replayed(_write(tmp_path / "all.jsonl", events, []), chdb_dsn, db, tmp_path)
    _replayed(_write(tmp_path / "without.jsonl", others, []), chdb_dsn, reference, tmp_path)
    _cli(["forget", "--email", person], chdb_dsn, db, tmp_path)

    assert scan(client, db, sorted(set().union(*ids.values()))) == []
    left, ref = snapshot(client, db), snapshot(client, reference)
    for table in ("journeys", "phase_transitions", "alerts", "events"):
        assert left[table] == ref[table], table


def test_replaying_the_input_after_a_forget_stores_nothing_of_the_person(
    tmp_path: Path, chdb_dsn: str, database_name: Callable[[str], str]
) -> None:
    from journeys.cmd_core import replay_files
    from journeys.schemas.settings import Settings

    client = connect(chdb_dsn)
    db = database_name("again")
    path = _write(tmp_path / "all.jsonl", EVENTS, BAD)
    _replayed(path, chdb_dsn, db, tmp_path)
    _cli(["forget", "--email", BOB["email"]], chdb_dsn, db, tmp_path)
    settings = Settings(clickhouse_url=chdb_dsn, clickhouse_database=db, data_dir=tmp_path)
    summary = replay_files((str(path),), settings, quiet=True)  # the same export, sent again
    assert summary.withheld == {"suppressed": 6}  # his five events and his dead letter
    assert scan(client, db, list(BOB.values())) == []


def test_replay_honours_consent(
    tmp_path: Path, chdb_dsn: str, database_name: Callable[[str], str]
) -> None:
    from journeys.cmd_core import replay_files
    from journeys.schemas.settings import Settings

    denied = orjson.dumps({"consent": {"categoryPreferences": {"Analytics": False}}}).decode()
    events = [
        replace(ev("page_view", 1, event_id="d1", email="eva@firma.de"), context=denied),
        ev("page_view", 2, event_id="g1", email="tom@firma.de"),
    ]
    path = _write(tmp_path / "consent.jsonl", events, [])
    client = connect(chdb_dsn)
    modes: list[tuple[ConsentMode, str, int]] = [
        ("drop", "consent_dropped", 1),
        ("anonymise", "consent_anonymised", 2),
    ]
    for mode, reason, stored in modes:
        db = database_name(mode)
        settings = Settings(
            clickhouse_url=chdb_dsn, clickhouse_database=db, data_dir=tmp_path, consent_mode=mode
        )
        summary = replay_files((str(path),), settings, quiet=True)
        assert summary.withheld == {reason: 1}
        assert client.query(f"SELECT count() FROM {db}.events").result_rows[0][0] == stored
        assert scan(client, db, ["eva@firma.de"]) == []
