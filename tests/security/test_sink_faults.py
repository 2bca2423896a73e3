"""The sink under ClickHouse faults: an outage on any write is waited out, and rows ClickHouse
refuses for good become dead letters while the rest is stored and committed (issue 17, "the
sink"). The loop runs with a fake Kafka consumer (as in tests/unit/test_output_consumer.py)
over the real embedded engine; refusals are real: a table constraint ClickHouse enforces, or
the driver's own error with a permanent code."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pyarrow as pa
import pytest
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

from journeys.schemas.codec import DEAD_LETTER_PAYLOAD_BYTES, decode_rows, encode_row, pack
from journeys.schemas.errors import SinkUnavailable
from journeys.schemas.rows import IdentityLink, Output, StoredEvent
from journeys.sinks.background import BackgroundSink
from journeys.sinks.clickhouse.errors import RowsRejected, SinkRejected, translate
from journeys.sinks.clickhouse.writer import ClickHouseSink
from journeys.sinks.consumer import Backoff, OutputConsumer
from journeys.sinks.memory import MemorySink
from tests.unit.engine.journey import ev
from tests.unit.test_output_consumer import ROWS, SETTINGS, FakeConsumer, Message

#: Seconds after which a loop that has not finished is stopped (the old code never finished).
PATIENCE = 8.0


class FaultyClient:
    """The real client, whose inserts first fail `outages` times as a server that is down
    does, and which refuses, with the driver's own error, every insert holding a row of
    `refused` (by event_id) the way ClickHouse refuses a value of the wrong type. Outages
    meet inserts into tables whose qualified name holds `down_at`."""

    def __init__(
        self,
        inner: Client,
        outages: int = 0,
        refused: frozenset[str] = frozenset(),
        down_at: str = ".",
    ) -> None:
        self.inner = inner
        self.outages = outages
        self.refused = refused
        self.down_at = down_at
        self.inserts: list[tuple[str, int]] = []

    def insert_arrow(self, table: str, data: pa.Table, **kwargs: Any) -> Any:
        if self.outages and self.down_at in table:
            self.outages -= 1
            raise OperationalError(
                "Error HTTPConnectionPool(host='ch', port=8123): Connection refused"
            )
        if "event_id" in data.column_names and self.refused & set(data["event_id"].to_pylist()):
            raise DatabaseError(
                "Code: 53. DB::Exception: Type mismatch in IN or VALUES section. (TYPE_MISMATCH)",
                code=53,
                name="TYPE_MISMATCH",
            )
        self.inserts.append((table, data.num_rows))
        return self.inner.insert_arrow(table, data, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class CheckingConsumer(FakeConsumer):
    """A fake Kafka consumer that, at each commit, checks ClickHouse holds what it acknowledges."""

    def __init__(self, polls: list[dict[Any, list[Message]]], stored: Callable[[], int]) -> None:
        super().__init__(polls)
        self.stored = stored
        self.stored_at_commit: list[int] = []

    def commit(self, offsets: dict[Any, Any], timeout_ms: int) -> None:
        self.stored_at_commit.append(self.stored())
        super().commit(offsets, timeout_ms)


def event(event_id: str, context: str = "{}") -> StoredEvent:
    return StoredEvent(replace(ev("page_view", 0, event_id=event_id), context=context), "acme")


def message(offset: int, *rows: StoredEvent) -> Message:
    packed = list(pack(encode_row(row) for row in rows))
    assert len(packed) == 1
    return Message(offset, packed[0])


def count(writer: ClickHouseSink, database: str, sql: str) -> int:
    return int(writer.client.query(sql.format(db=database)).result_rows[0][0])


def run_bounded(out: OutputConsumer) -> None:
    """Run the loop; stop it after PATIENCE seconds if it is still waiting."""
    timer = threading.Timer(PATIENCE, out.stop)
    timer.start()
    try:
        out.run()
    finally:
        timer.cancel()
        timer.join()


@pytest.fixture()
def writer(chdb_dsn: str) -> Callable[..., ClickHouseSink]:
    """A factory of set-up ClickHouse sinks on a database of the session's engine."""

    def make(database: str, batch_rows: int = 200_000) -> ClickHouseSink:
        sink = ClickHouseSink(chdb_dsn, database, batch_rows=batch_rows)
        sink.setup()
        return sink

    return make


def loop(sink: ClickHouseSink, consumer: FakeConsumer, client: Any = None) -> OutputConsumer:
    """The sink loop over a fake Kafka consumer, its writer's client replaced by `client`."""
    out = OutputConsumer(SETTINGS, sink, Backoff(first=0.01, cap=0.05))
    out._connect = lambda: consumer  # type: ignore[method-assign]
    consumer.stop = out._stop
    out.setup()
    if client is not None:
        sink._client = client
    return out


@pytest.mark.integration
def test_an_outage_on_a_write_the_buffer_size_triggers_is_waited_out(
    writer: Callable[..., ClickHouseSink],
    database_name: Callable[[str], str],
) -> None:
    """A poll larger than `batch_rows` used to be written by `add()`, outside the retry: an
    outage then crashed the sink. Now it is waited out, written once, committed after."""
    sink = writer(db := database_name("s"), batch_rows=2)
    client = FaultyClient(sink.client, outages=3)
    stored = lambda: count(sink, db, "SELECT count() FROM {db}.events")  # noqa: E731
    consumer = CheckingConsumer(
        [{ROWS: [message(0, event("a"), event("b")), message(1, event("c"))]}], stored
    )
    out = loop(sink, consumer, client)
    run_bounded(out)
    assert consumer.commits == [{ROWS: 2}]
    assert consumer.stored_at_commit == [3]  # nothing acknowledged that was not stored
    assert stored() == 3  # not doubled
    assert out.progress.retries == 3 and out.progress.problem is None


@pytest.mark.integration
def test_rows_a_table_constraint_refuses_become_dead_letters_and_the_rest_is_committed(
    writer: Callable[..., ClickHouseSink],
    database_name: Callable[[str], str],
) -> None:
    """An operator caps `context` with a CHECK constraint; ClickHouse refuses two events
    (code 469, permanent). They used to be retried forever, holding up every other row."""
    sink = writer(db := database_name("s"))
    sink.client.command(
        f"ALTER TABLE {db}.events ADD CONSTRAINT context_size CHECK length(context) <= 1000"
    )
    small, huge = '{"x":"' + "y" * 2_000 + '"}', '{"x":"' + "z" * 100_000 + '"}'
    good = [event(f"ok{i}") for i in range(20)]
    rows = [*good[:7], event("too-long", small), *good[7:15], event("far-too-long", huge)]
    rows += good[15:]
    stored = lambda: count(sink, db, "SELECT count() FROM {db}.events")  # noqa: E731
    consumer = CheckingConsumer([{ROWS: [message(0, *rows[:10]), message(1, *rows[10:])]}], stored)
    out = loop(sink, consumer)
    run_bounded(out)
    assert consumer.commits == [{ROWS: 2}] and consumer.stored_at_commit == [20]
    assert out.progress.problem is None
    ids = sink.client.query(f"SELECT event_id FROM {db}.events FINAL").result_rows
    assert sorted(r[0] for r in ids) == sorted(e.record.event_id for e in good)
    letters = sink.client.query(
        f"SELECT source, reason, payload FROM {db}.dead_letters FINAL ORDER BY length(payload)"
    ).result_rows
    assert len(letters) == 2 and sink.refused == 2 and sink.dropped == 0
    (small_source, small_reason, small_payload), (huge_source, huge_reason, huge_payload) = letters
    assert small_source == huge_source == "sink:events"
    for reason in (small_reason, huge_reason):
        assert "code 469 VIOLATED_CONSTRAINT" in reason and "constraint" in reason
    [back] = decode_rows(small_payload.encode())
    assert isinstance(back, StoredEvent) and back.record.event_id == "too-long"
    assert len(huge_payload) == DEAD_LETTER_PAYLOAD_BYTES and "payload truncated" in huge_reason


@pytest.mark.integration
def test_the_driver_s_permanent_refusal_is_isolated_and_not_retried(
    writer: Callable[..., ClickHouseSink],
    database_name: Callable[[str], str],
) -> None:
    """A TYPE_MISMATCH (code 53) is `SinkRejected`: retrying cannot help. The refused row is
    found by halving, dead-lettered; the other rows are stored once and committed."""
    sink = writer(db := database_name("s"))
    client = FaultyClient(sink.client, refused=frozenset({"bad"}))
    rows = [event(f"ok{i}") for i in range(31)]
    rows.insert(17, event("bad"))
    stored = lambda: count(sink, db, "SELECT count() FROM {db}.events")  # noqa: E731
    consumer = CheckingConsumer([{ROWS: [message(5, *rows)]}], stored)
    out = loop(sink, consumer, client)
    run_bounded(out)
    assert consumer.commits == [{ROWS: 6}] and consumer.stored_at_commit == [31]
    assert out.progress.retries == 0 and out.progress.problem is None
    events_inserted = sum(n for table, n in client.inserts if table.endswith(".events"))
    assert events_inserted == 31  # every good row written exactly once
    assert len([t for t, _ in client.inserts if t.endswith(".events")]) <= 2 * 5  # log2(32)
    [(source, reason)] = sink.client.query(
        f"SELECT source, reason FROM {db}.dead_letters FINAL"
    ).result_rows
    assert source == "sink:events" and "code 53 TYPE_MISMATCH" in reason


@pytest.mark.integration
def test_a_refused_row_meets_an_outage_and_is_still_dead_lettered_once(
    writer: Callable[..., ClickHouseSink],
    database_name: Callable[[str], str],
) -> None:
    """A flush that fails midway keeps the whole batch; the retry refuses the same row into
    the same dead letter (its id is the row's digest)."""
    sink = writer(db := database_name("s"))
    client = FaultyClient(sink.client, 1, frozenset({"bad"}), down_at=".dead_letters")
    sink._client = client  # type: ignore[assignment]
    sink.add(Output(events=[event("ok"), event("bad")]))
    with pytest.raises(SinkUnavailable):
        sink.flush()
    sink.flush()
    assert count(sink, db, "SELECT count() FROM {db}.events") == 2  # written again,
    assert count(sink, db, "SELECT count() FROM {db}.events FINAL") == 1  # idempotently
    assert count(sink, db, "SELECT count() FROM {db}.dead_letters FINAL") == 1


def test_the_background_writer_never_skips_what_is_given_after_an_error() -> None:
    """The background writer used to drop every output given while an error waited for the
    caller: a flush retried after the error then succeeded without them."""
    gate = threading.Event()

    class WritesOnAdd(MemorySink):
        """Writes on every add, as the ClickHouse writer's `add` did at `batch_rows`; the
        first write fails (keeping its rows) once `gate` opens."""

        failed = False

        def add(self, output: Output) -> None:
            super().add(output)
            self.flush()

        def flush(self) -> None:
            gate.wait(PATIENCE)
            if not self.failed:
                self.failed = True
                raise SinkUnavailable("ClickHouse at h:8123 is unavailable")
            super().flush()

    inner = WritesOnAdd()
    sink = BackgroundSink(inner)
    sink.setup()
    links = [Output(links=[IdentityLink("email", f"a{i}", "acme", i)]) for i in range(2)]
    sink.add(links[0])  # the writer takes it and waits at the gate inside the write
    sink.add(links[1])  # queued before the error is known
    gate.set()
    with pytest.raises(SinkUnavailable):
        sink.flush()
    sink.flush()  # the caller's retry
    assert [link.alias for link in inner.written.links] == ["a0", "a1"]


def test_the_background_writer_flushes_a_due_buffer() -> None:
    """`add` never writes; the background writer flushes the inner sink once it is due, so
    a long replay's memory stays bounded."""

    class Small(MemorySink):
        @property
        def due(self) -> bool:
            return len(self.pending) >= 2

    inner = Small()
    sink = BackgroundSink(inner)
    sink.setup()
    for i in range(5):
        sink.add(Output(links=[IdentityLink("email", f"a{i}", "acme", i)]))
    sink.flush()
    assert inner.flushes == 3 and len(inner.written.links) == 5


@pytest.mark.parametrize(
    ("code", "kind"),
    [(469, RowsRejected), (53, RowsRejected), (131, RowsRejected), (60, SinkRejected)],
)
def test_only_codes_that_blame_the_rows_are_dead_lettered(code: int, kind: type) -> None:
    """A missing table or a refused grant is not the rows' fault: dead-lettering them would
    lose every row (and the dead letters would be refused too); those wait for a fix."""
    translated = translate(None, DatabaseError("refused", code=code, name="X"), "write")
    assert type(translated) is kind


def test_a_close_that_fails_on_the_way_out_goes_through_the_retry() -> None:
    """The loop's last write (closing the sink) used to run outside the retry: a failure
    there escaped `run()`. It gets the same retry, cut short by the stop."""

    class FailsAtClose(MemorySink):
        def close(self) -> None:
            raise SinkUnavailable("ClickHouse at h:8123 is unavailable")

    consumer = FakeConsumer([{ROWS: [message(0, event("a"))]}])
    out = OutputConsumer(SETTINGS, FailsAtClose(), Backoff(first=0.001, cap=0.004))
    out._connect = lambda: consumer  # type: ignore[method-assign]
    consumer.stop = out._stop
    out.setup()
    out.run()  # returns
    assert consumer.commits == [{ROWS: 1}] and out.progress.retries == 1
