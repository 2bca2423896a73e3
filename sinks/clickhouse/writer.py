"""The ClickHouse sink: buffered engine output, written one Arrow insert per table.

Writes are idempotent (every table is a ReplacingMergeTree with a
deterministic key and version), so a batch written twice changes nothing.
After each flush, identity links re-attribute stored events inside
ClickHouse (`sinks.clickhouse.attribution`), whichever of an event and its
link was written first; `sinks.reference.final_tables` is the reference for
the result.

Event row versions: late events 1, on-time events 2, re-attributed rows
above 1000; so a late re-delivery never replaces the row the journey stage
wrote, and a re-attribution is never undone by a re-delivered batch. The
table ranks rows by the earliest occurred_at before the version (its
`precedence` column, migration 0002), so of two deliveries of one event_id
the earlier one is kept, whichever came first.

No table is partitioned, so an insert of any time span is one insert (a
backfill of many years never meets ClickHouse's partitions-per-insert limit).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pyarrow as pa
from clickhouse_connect.driver.client import Client

from journeys.schemas.errors import SinkUnavailable
from journeys.schemas.rows import Output
from journeys.sinks.clickhouse.attribution import candidates, reattribute
from journeys.sinks.clickhouse.client import connect
from journeys.sinks.clickhouse.errors import clickhouse_errors
from journeys.sinks.clickhouse.migrate import migrate

log = logging.getLogger(__name__)

_TS = pa.timestamp("ms", tz="UTC")
ON_TIME, LATE = 2, 1


def _strings(values: list[Any]) -> pa.Array:
    return pa.array([v or "" for v in values], type=pa.string())


def _events(out: Output) -> pa.Table:
    records = [row.record for row in out.events]
    return pa.table(
        {
            "event_id": pa.array([r.event_id for r in records], pa.string()),
            "channel": pa.array([r.channel for r in records], pa.string()),
            "type": pa.array([r.type for r in records], pa.string()),
            "occurred_at": pa.array([r.ts for r in records], _TS),
            "account_id": _strings([row.account_id for row in out.events]),
            "contact_id": _strings([r.contact_id for r in records]),
            "anonymous_id": _strings([r.anonymous_id for r in records]),
            "email": _strings([r.email for r in records]),
            "dmu_role": _strings([r.dmu_role for r in records]),
            "segment": _strings([r.segment for r in records]),
            "properties": pa.array([r.properties for r in records], pa.string()),
            "context": pa.array([r.context for r in records], pa.string()),
            "late": pa.array([1 if row.late else 0 for row in out.events], pa.uint8()),
            "engine_account_id": _strings([row.account_id for row in out.events]),
            "version": pa.array([LATE if row.late else ON_TIME for row in out.events], pa.uint64()),
        }
    )


def _transitions(out: Output) -> pa.Table:
    rows = out.transitions
    return pa.table(
        {
            "account_id": pa.array([r.account_id for r in rows], pa.string()),
            "from_phase": _strings([r.from_phase for r in rows]),
            "to_phase": pa.array([r.to_phase for r in rows], pa.string()),
            "transitioned_at": pa.array([r.transitioned_at for r in rows], _TS),
            "event_id": pa.array([r.event_id for r in rows], pa.string()),
            "event_type": pa.array([r.event_type for r in rows], pa.string()),
            "channel": pa.array([r.channel for r in rows], pa.string()),
            "version": pa.array([r.version for r in rows], pa.uint64()),
            "is_deleted": pa.array([1 if r.deleted else 0 for r in rows], pa.uint8()),
        }
    )


def _journeys(out: Output) -> pa.Table:
    rows = out.journeys
    return pa.table(
        {
            "account_id": pa.array([r.account_id for r in rows], pa.string()),
            "phase": pa.array([r.phase for r in rows], pa.string()),
            "phase_since": pa.array([r.phase_since for r in rows], _TS),
            "first_seen": pa.array([r.first_seen for r in rows], _TS),
            "last_seen": pa.array([r.last_seen for r in rows], _TS),
            "last_activity": pa.array([r.last_activity for r in rows], _TS),
            "events": pa.array([r.events for r in rows], pa.uint64()),
            "contacts": pa.array([r.contacts for r in rows], pa.uint32()),
            "dmu_roles": pa.array([list(r.dmu_roles) for r in rows], pa.list_(pa.string())),
            "segment": _strings([r.segment for r in rows]),
            "version": pa.array([r.version for r in rows], pa.uint64()),
            "is_deleted": pa.array([1 if r.deleted else 0 for r in rows], pa.uint8()),
        }
    )


def _alerts(out: Output) -> pa.Table:
    rows = out.alerts
    return pa.table(
        {
            "alert_id": pa.array([r.alert_id for r in rows], pa.string()),
            "kind": pa.array([r.kind for r in rows], pa.string()),
            "account_id": pa.array([r.account_id for r in rows], pa.string()),
            "raised_at": pa.array([r.raised_at for r in rows], _TS),
            "details": pa.array([r.details for r in rows], pa.string()),
            "resolved_at": pa.array([r.resolved_at for r in rows], _TS),
            "withdrawn": pa.array([1 if r.withdrawn else 0 for r in rows], pa.uint8()),
            "version": pa.array([r.version for r in rows], pa.uint64()),
        }
    )


def _dead_letters(out: Output) -> pa.Table:
    rows = out.dead_letters
    return pa.table(
        {
            "dead_letter_id": pa.array([r.dead_letter_id for r in rows], pa.string()),
            "received_at": pa.array([r.received_at for r in rows], _TS),
            "reason": pa.array([r.reason for r in rows], pa.string()),
            "payload": pa.array([r.payload for r in rows], pa.binary()),
            "source": pa.array([r.source for r in rows], pa.string()),
        }
    )


def _links(out: Output) -> pa.Table:
    rows = out.links
    return pa.table(
        {
            "kind": pa.array([r.kind for r in rows], pa.string()),
            "alias": pa.array([r.alias for r in rows], pa.string()),
            "account_id": pa.array([r.account_id for r in rows], pa.string()),
            "linked_at": pa.array([r.linked_at for r in rows], _TS),
        }
    )


_TABLES: tuple[tuple[str, str, Callable[[Output], pa.Table]], ...] = (
    ("events", "events", _events),
    ("transitions", "phase_transitions", _transitions),
    ("journeys", "journeys", _journeys),
    ("alerts", "alerts", _alerts),
    ("dead_letters", "dead_letters", _dead_letters),
    ("links", "identity_links", _links),
)


class ClickHouseSink:
    """Buffers engine output and writes it to ClickHouse (embedded or server)."""

    def __init__(self, dsn: str, database: str, batch_rows: int = 200_000) -> None:
        self._dsn = dsn
        self._database = database
        self._batch_rows = batch_rows
        self._pending = Output()
        self._client: Client | None = None

    @property
    def client(self) -> Client:
        """The connected client (after `setup()`)."""
        if self._client is None:
            raise SinkUnavailable("the ClickHouse sink is not set up; call setup() first")
        return self._client

    def setup(self) -> None:
        """Connect and apply pending migrations."""
        self._client = connect(self._dsn)
        applied = migrate(self._client, self._database)
        if applied:
            log.info("applied migrations %s to %s", applied, self._database)

    def add(self, output: Output) -> None:
        """Buffer rows; flush when the buffer holds `batch_rows`."""
        self._pending.extend(output)
        if len(self._pending) >= self._batch_rows:
            self.flush()

    def flush(self) -> None:
        """Write everything buffered: one insert per table, then re-attribution."""
        out, self._pending = self._pending, Output()
        if not len(out):
            return
        client = self.client
        try:
            with clickhouse_errors(self._dsn, "write"):
                for attribute, table, build in _TABLES:
                    if getattr(out, attribute):
                        client.insert_arrow(f"{self._database}.{table}", build(out))
                reattribute(client, self._database, candidates(out))
        except BaseException:
            self._pending = _merged(out, self._pending)  # keep the batch for a retry
            raise

    def close(self) -> None:
        """Flush what is left (the shared client stays open for this process)."""
        if self._client is not None:
            self.flush()


def _merged(first: Output, second: Output) -> Output:
    out = Output()
    out.extend(first)
    out.extend(second)
    return out
