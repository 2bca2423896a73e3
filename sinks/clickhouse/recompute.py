"""An account's journey, transitions and alerts rebuilt from its stored events.

After `forget` erased some of an account's events, its derived rows must be
what they would be had those events never come. The pure journey engine
(the one `journeys replay` runs) is run again over the account's remaining
events, each given the account as its own (they are all attributed to it
already), with event time advanced to the latest event stored, as a replay
of the whole input ends. Its rows are written with versions above every
stored row of the account; keys that no longer exist get a tombstone
(`is_deleted` transitions, withdrawn alerts); then the superseded rows are
deleted, so nothing derived from the erased events stays on disk. An
account left without events is erased whole.

On a rebuilt database (`journeys rebuild`) all of this happens in the live
generation, the one the `_current` views show: the engine tags its rows
with it, and versions, tombstones and deletions look at that generation
only (a rebuild under way writes a newer one, which it brings with it).

For databases built by `journeys replay` (no stream running). A running
stream keeps its own state and may publish rows of the account again with
its own (lower) versions, which these rows hide: see docs/privacy.md.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any

from clickhouse_connect.driver.client import Client

from journeys.schemas.record import EventRecord
from journeys.schemas.rows import AlertRow, Output, TransitionRow
from journeys.sinks.clickhouse.client import select
from journeys.sinks.clickhouse.forget import delete_where
from journeys.sinks.clickhouse.generations import DERIVED, live_generation
from journeys.sinks.clickhouse.writer import ClickHouseSink
from journeys.sinks.reference import FinalTables, final_tables
from journeys.streams.engine import EngineConfig, JourneyEngine

_EVENTS = """
SELECT {columns}
FROM {db}.events FINAL
WHERE account_id = {{account:String}}
ORDER BY occurred_at, event_id
"""


def stored_events(client: Client, db: str, account: str) -> list[EventRecord]:
    """The account's current events, in event-time order, each naming the account."""
    rows = select(client, _EVENTS.format(db=db, columns=STORED_COLUMNS), {"account": account})
    return [stored_record(r, account) for r in rows]


#: The columns `stored_record` reads, in its order.
STORED_COLUMNS = (
    "event_id, channel, type, toUnixTimestamp64Milli(occurred_at), contact_id, anonymous_id, "
    "email, dmu_role, segment, properties, context"
)


def stored_record(r: Sequence[Any], account: str | None) -> EventRecord:
    """The record of a stored event's row (`STORED_COLUMNS`), naming `account` as its own."""
    return EventRecord(
        event_id=r[0], channel=r[1], type=r[2], ts=int(r[3]), contact_id=r[4] or None,
        anonymous_id=r[5] or None, email=r[6] or None, account_id=account,
        dmu_role=r[7] or None, segment=r[8] or None, properties=r[9], context=r[10],
    )  # fmt: skip


def rebuilt(events: Iterable[EventRecord], config: EngineConfig, clock: int) -> FinalTables:
    """What the engine makes of the events, with event time advanced to `clock`."""
    engine = JourneyEngine(config, 1)
    engine.process_all(events)
    engine.advance_to(clock)
    return final_tables(engine.take())


def recompute_accounts(
    client: Client, dsn: str, db: str, config: EngineConfig, accounts: Iterable[str]
) -> int:
    """Rebuild each account's derived rows from its remaining events, in the live
    generation; how many."""
    todo = sorted(accounts)
    if not todo:
        return 0
    clock = int(
        select(client, f"SELECT toUnixTimestamp64Milli(max(occurred_at)) FROM {db}.events")[0][0]
    )
    sink = ClickHouseSink(dsn, db)
    sink.setup()
    config = replace(config, generation=live_generation(client, db))
    for account in todo:
        recompute_account(client, sink, db, config, account, clock)
    return len(todo)


def recompute_account(
    client: Client, sink: ClickHouseSink, db: str, config: EngineConfig, account: str, clock: int
) -> None:
    """Rebuild one account in `config.generation` (see the module docstring)."""
    events = stored_events(client, db, account)
    if not events:
        for table in DERIVED:
            delete_where(client, db, table, "account_id = {account:String}", {"account": account})
        return
    params = {"account": account, "generation": config.generation}
    tables = rebuilt(events, config, clock)
    base = _max_version(client, db, account, config.generation) + 1
    sink.add(_shifted(tables, account, base, config.generation))
    sink.add(_tombstones(client, db, account, tables, base, config.generation))
    sink.flush()
    for table in DERIVED:
        delete_where(
            client, db, table,
            f"account_id = {{account:String}} AND {_IN_GENERATION} AND version < {{base:UInt64}}",
            {**params, "base": base},
        )  # fmt: skip


#: Rows of the generation being recomputed (parameter `generation`).
_IN_GENERATION = "generation = {generation:UInt32}"


def _max_version(client: Client, db: str, account: str, generation: int) -> int:
    parts = " UNION ALL ".join(
        f"SELECT max(version) AS v FROM {db}.{t} "
        f"WHERE account_id = {{account:String}} AND {_IN_GENERATION}"
        for t in DERIVED
    )
    params = {"account": account, "generation": generation}
    return int(select(client, f"SELECT max(v) FROM ({parts})", params)[0][0] or 0)


def _shifted(tables: FinalTables, account: str, base: int, generation: int) -> Output:
    """The account's rebuilt rows, with versions above every stored one, in `generation`."""
    return Output(
        transitions=[
            replace(t, version=base + t.version, generation=generation)
            for t in tables.transitions.values()
            if t.account_id == account
        ],
        journeys=[
            replace(j, version=base + j.version, generation=generation)
            for j in tables.journeys.values()
            if j.account_id == account
        ],
        alerts=[
            replace(a, version=base + a.version, generation=generation)
            for a in tables.alerts.values()
            if a.account_id == account
        ],
    )


def _tombstones(
    client: Client, db: str, account: str, tables: FinalTables, base: int, generation: int
) -> Output:
    """Deletions of the account's stored transitions and alerts (of `generation`) the
    rebuild has not."""
    params = {"account": account, "generation": generation}
    phases = select(
        client,
        f"SELECT to_phase FROM {db}.phase_transitions FINAL "
        f"WHERE account_id = {{account:String}} AND is_deleted = 0 AND {_IN_GENERATION}",
        params,
    )
    alerts = select(
        client,
        f"SELECT alert_id, kind, raised_at FROM {db}.alerts FINAL "
        f"WHERE account_id = {{account:String}} AND withdrawn = 0 AND {_IN_GENERATION}",
        params,
    )
    return Output(
        transitions=[
            TransitionRow(
                account, None, phase, 0, "", "", "", base, deleted=True, generation=generation
            )
            for (phase,) in phases
            if (account, phase) not in tables.transitions
        ],
        alerts=[
            AlertRow(
                aid, kind, account, _ms(raised), "{}", base, withdrawn=True, generation=generation
            )
            for aid, kind, raised in alerts
            if aid not in tables.alerts
        ],
    )


def _ms(moment: object) -> int:
    from datetime import datetime

    return int(moment.timestamp() * 1000) if isinstance(moment, datetime) else 0
