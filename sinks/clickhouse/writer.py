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

Derived rows carry their generation (`journeys rebuild`, migration 0010).
A batch's `generations` rows (a journey partition reporting that it holds a
generation) are inserted after its derived rows, so a generation is never
complete before its rows are stored; after such a batch, and at setup, the
rows of generations older than the live one are deleted
(`sinks.clickhouse.generations.prune_generations`).

`add()` only buffers: the caller decides when to write, and `flush()` is the
one write path, so that the sink process's retry waits out an outage on
every write (`sinks.consumer`). A failed flush keeps its batch for the retry.
Rows ClickHouse refuses for what they hold (`RowsRejected`: a value that does
not fit, a broken table constraint) would be refused on every retry: the
insert is halved until the refused rows stand alone (about 2·k·log2(n)
inserts for k refused rows among n), the other rows are stored, and each
refused row becomes a dead letter (source `sink:<table>`, the translated
error as reason, the row's internal JSON as payload, capped as every dead
letter is by `fit_dead_letter`). Its id is its payload's digest, so a
re-delivered batch refuses into the same dead letter. A refused dead letter
cannot be dead-lettered again: it is logged and counted in `dropped`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import pyarrow as pa
from clickhouse_connect.driver.client import Client

from journeys.schemas.codec import Row, encode_row, fit_dead_letter
from journeys.schemas.errors import SinkUnavailable
from journeys.schemas.rows import AlertRow, DeadLetterRow, JourneyRow, Output, TransitionRow
from journeys.sinks.clickhouse.attribution import candidates, reattribute
from journeys.sinks.clickhouse.client import connect
from journeys.sinks.clickhouse.errors import RowsRejected, clickhouse_errors
from journeys.sinks.clickhouse.generations import prune_generations
from journeys.sinks.clickhouse.migrate import migrate

log = logging.getLogger(__name__)

_TS = pa.timestamp("ms", tz="UTC")
ON_TIME, LATE = 2, 1


def _strings(values: list[Any]) -> pa.Array:
    return pa.array([v or "" for v in values], type=pa.string())


def _generation(rows: Sequence[TransitionRow | JourneyRow | AlertRow]) -> pa.Array:
    return pa.array([r.generation for r in rows], pa.uint32())


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
            "generation": _generation(rows),
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
            "engagement": pa.array([r.engagement for r in rows], pa.float64()),
            "engagement_at": pa.array([r.engagement_at for r in rows], _TS),
            "engagement_half_life_ms": pa.array(
                [r.engagement_half_life_ms for r in rows], pa.uint64()
            ),
            "engagement_warm": pa.array([r.engagement_warm for r in rows], pa.float64()),
            "engagement_hot": pa.array([r.engagement_hot for r in rows], pa.float64()),
            "generation": _generation(rows),
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
            "generation": _generation(rows),
        }
    )


def _generations(out: Output) -> pa.Table:
    rows = out.generations
    return pa.table(
        {
            "generation": pa.array([r.generation for r in rows], pa.uint32()),
            "partition": pa.array([r.partition for r in rows], pa.uint32()),
            "partitions": pa.array([r.partitions for r in rows], pa.uint32()),
            "rules_hash": pa.array([r.rules_hash for r in rows], pa.string()),
            "rules": pa.array([r.rules for r in rows], pa.string()),
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
    # After the derived rows: a generation is never reported before its rows are stored.
    ("generations", "generations", _generations),
    ("dead_letters", "dead_letters", _dead_letters),
    ("links", "identity_links", _links),
)


#: A row of one table that ClickHouse refused, with its refusal.
Refused = tuple[Row, RowsRejected]


class ClickHouseSink:
    """Buffers engine output and writes it to ClickHouse (embedded or server)."""

    def __init__(self, dsn: str, database: str, batch_rows: int = 200_000) -> None:
        self._dsn = dsn
        self._database = database
        self._batch_rows = batch_rows
        self._pending = Output()
        self._client: Client | None = None
        #: Rows ClickHouse refused (dead-lettered unless counted in `dropped`).
        self.refused = 0
        #: Refused dead letters (which cannot be dead-lettered again), since setup.
        self.dropped = 0

    @property
    def client(self) -> Client:
        """The connected client (after `setup()`)."""
        if self._client is None:
            raise SinkUnavailable("the ClickHouse sink is not set up; call setup() first")
        return self._client

    @property
    def due(self) -> bool:
        """Whether the buffer holds `batch_rows` rows: a caller that buffers many steps
        flushes now, to keep memory bounded."""
        return len(self._pending) >= self._batch_rows

    def setup(self) -> None:
        """Connect, apply pending migrations, and delete the rows of generations older than
        the live one (left if the last run stopped between a generation and its pruning)."""
        self._client = connect(self._dsn)
        applied = migrate(self._client, self._database)
        if applied:
            log.info("applied migrations %s to %s", applied, self._database)
        self._prune(self._client)

    def add(self, output: Output) -> None:
        """Buffer rows; never writes (the caller flushes, inside its retry; see `due`)."""
        self._pending.extend(output)

    def flush(self) -> None:
        """Write everything buffered: one insert per table (refused rows dead-lettered),
        then re-attribution, then, when partitions reported a generation, the pruning of
        generations it made old. On any error the batch stays buffered for a retry."""
        out, self._pending = self._pending, Output()
        if not len(out):
            return
        client = self.client
        try:
            self._write(client, out)
            with clickhouse_errors(self._dsn, "write"):
                reattribute(client, self._database, candidates(out))
            if out.generations:
                self._prune(client)
        except BaseException:
            self._pending = _merged(out, self._pending)  # keep the batch for a retry
            raise

    def _prune(self, client: Client) -> None:
        """Delete the rows of generations older than the live one (`prune_generations`)."""
        deleted = prune_generations(client, self._database)
        if any(deleted.values()):
            log.info("deleted rows of old generations from %s: %s", self._database, deleted)

    def close(self) -> None:
        """Flush what is left (the shared client stays open for this process)."""
        if self._client is not None:
            self.flush()

    def _write(self, client: Client, out: Output) -> None:
        """Insert every table of `out`; refused rows become dead letters, written last."""
        refused: list[tuple[str, Refused]] = []
        for attribute, table, build in _TABLES:
            rows = getattr(out, attribute)
            if rows:
                refused += [(table, r) for r in self._insert(client, attribute, table, build, rows)]
        if not refused:
            return
        received_at = int(time.time() * 1000)
        letters = [refused_letter(table, row, exc, received_at) for table, (row, exc) in refused]
        log.warning(
            "ClickHouse refused %d rows (%s); stored them as dead letters",
            len(refused),
            ", ".join(sorted({table for table, _ in refused})),
        )
        self.refused += len(letters)
        if fails := self._insert(client, "dead_letters", "dead_letters", _dead_letters, letters):
            self._drop([letter for letter, _ in fails], fails[0][1])

    def _insert(
        self,
        client: Client,
        attribute: str,
        table: str,
        build: Callable[[Output], pa.Table],
        rows: Sequence[Row],
    ) -> list[Refused]:
        """Insert rows into a table; the rows ClickHouse refuses, isolated by halving."""
        part = Output()
        setattr(part, attribute, list(rows))
        try:
            with clickhouse_errors(self._dsn, "write"):
                client.insert_arrow(f"{self._database}.{table}", build(part))
            return []
        except RowsRejected as exc:
            if len(rows) == 1:
                return [(rows[0], exc)]
        half = len(rows) // 2
        return self._insert(client, attribute, table, build, rows[:half]) + self._insert(
            client, attribute, table, build, rows[half:]
        )

    def _drop(self, letters: list[Row], exc: RowsRejected) -> None:
        """Give up refused dead letters: they cannot be dead-lettered again."""
        self.dropped += len(letters)
        ids = [getattr(letter, "dead_letter_id", "?") for letter in letters]
        log.error("ClickHouse refused %d dead letters %s, dropped: %s", len(ids), ids[:10], exc)


def refused_letter(table: str, row: Row, exc: RowsRejected, received_at: int) -> DeadLetterRow:
    """The dead letter of a row ClickHouse refused: its internal JSON, and why."""
    reason = f"ClickHouse refused this row of {table}: {exc}"
    return fit_dead_letter(DeadLetterRow.of(encode_row(row), reason, f"sink:{table}", received_at))


def _merged(first: Output, second: Output) -> Output:
    out = Output()
    out.extend(first)
    out.extend(second)
    return out
