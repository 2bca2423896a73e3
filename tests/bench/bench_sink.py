"""Benchmark: writing engine output to the embedded ClickHouse.

Run on demand (not part of the test suite); prints figures next to a
baseline from the same run, because these machines are shared:

    .venv/bin/python tests/bench/bench_sink.py [--rows 100000] [--repeat 3]

Each measure writes `--rows` events rows, built from simulated events, into
a fresh database (best of `--repeat`):

- arrow insert: `client.insert_arrow` of a ready Arrow table (the floor).
- column insert: `client.insert(..., column_oriented=True)` of ready Python
  columns.
- build arrow / build columns: turning `StoredEvent` rows into each form.
- flush: `ClickHouseSink.add` + `flush` end to end (build, insert, the
  re-attribution lookups for the batch's events and links).
- links, re-links: alias links that move the stored unattributed events, then
  the same aliases linked again, earlier in event time, to other accounts
  (every moved event moves once more).
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from clickhouse_connect.driver.client import Client

from journeys.producers.simulator import simulate
from journeys.schemas.errors import InvalidEvent
from journeys.schemas.event import parse_event
from journeys.schemas.identity import email_account
from journeys.schemas.rows import IdentityLink, Output, StoredEvent
from journeys.sinks.clickhouse import writer
from journeys.sinks.clickhouse.client import connect
from journeys.sinks.clickhouse.migrate import migrate


def stored_events(rows: int) -> list[StoredEvent]:
    """`rows` distinct events as the engine stores them; those with no account or email
    are unattributed."""
    out: dict[str, StoredEvent] = {}
    for seed in itertools.count(7):
        for line in simulate(accounts=rows // 20 + 1, days=60, seed=seed, invalid_share=0):
            try:
                record = parse_event(line)
            except InvalidEvent:
                continue
            account = record.account_id or (email_account(record.email) if record.email else None)
            out.setdefault(record.event_id, StoredEvent(record, account))
            if len(out) == rows:
                return list(out.values())
    raise AssertionError("unreachable")


def python_columns(out: Output) -> tuple[list[str], list[list[Any]]]:
    """The events table as Python columns (what a column-oriented insert takes)."""
    table = writer._events(out)
    names = table.column_names
    columns = []
    for name in names:
        if name == "occurred_at":
            columns.append([datetime.fromtimestamp(r.record.ts / 1000, tz=UTC) for r in out.events])
        else:
            columns.append(table.column(name).to_pylist())
    return names, columns


def best(repeat: int, prepare: Callable[[], Any], run: Callable[[Any], object]) -> float:
    """The fastest of `repeat` runs of `run(prepare())`, timing `run` only."""
    times = []
    for _ in range(repeat):
        ready = prepare()
        start = time.perf_counter()
        run(ready)
        times.append(time.perf_counter() - start)
    return min(times)


def fresh(client: Client) -> str:
    name = f"bench_{uuid.uuid4().hex[:8]}"
    migrate(client, name)
    return name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    dsn = f"chdb://{tempfile.mkdtemp(prefix='bench-sink-')}"
    client = connect(dsn)
    out = Output(events=stored_events(args.rows))
    unattributed = sum(1 for r in out.events if r.account_id is None)
    table = writer._events(out)
    names, columns = python_columns(out)
    n = args.rows

    aliases = sorted(
        {
            (kind, getattr(r.record, kind))
            for r in out.events
            if r.account_id is None
            for kind in ("contact_id", "anonymous_id", "email")
            if getattr(r.record, kind)
        }
    )
    links = Output(
        links=[
            IdentityLink(kind, alias, f"account-{i % 500}", 0)
            for i, (kind, alias) in enumerate(aliases)
        ]
    )

    def nothing() -> None:
        return None

    def ready_sink() -> writer.ClickHouseSink:
        sink = writer.ClickHouseSink(dsn, fresh(client))
        sink.setup()
        return sink

    def written_sink() -> writer.ClickHouseSink:
        sink = ready_sink()
        sink.add(out)
        sink.flush()
        return sink

    def flush(batch: Output) -> Callable[[writer.ClickHouseSink], None]:
        def run(sink: writer.ClickHouseSink) -> None:
            sink.add(batch)
            sink.flush()

        return run

    build_arrow = best(args.repeat, nothing, lambda _: writer._events(out))
    build_columns = best(args.repeat, nothing, lambda _: python_columns(out))
    arrow = best(
        args.repeat, lambda: fresh(client), lambda db: client.insert_arrow(f"{db}.events", table)
    )
    column = best(
        args.repeat,
        lambda: fresh(client),
        lambda db: client.insert(f"{db}.events", columns, column_names=names, column_oriented=True),
    )
    flushed = best(args.repeat, ready_sink, flush(out))
    linked = best(args.repeat, written_sink, flush(links))
    moved = unattributed_after(written_sink, links)
    relinks = Output(
        links=[
            IdentityLink(k.kind, k.alias, f"other-{i % 500}", -1) for i, k in enumerate(links.links)
        ]
    )

    def linked_sink() -> writer.ClickHouseSink:
        sink = written_sink()
        sink.add(links)
        sink.flush()
        return sink

    relinked = best(args.repeat, linked_sink, flush(relinks))

    print(f"{n:,} events rows, {unattributed:,} without an account")
    print(f"  arrow insert (floor)   {n / arrow:>12,.0f} rows/s  {arrow * 1000:7.0f} ms")
    print(
        f"  column insert          {n / column:>12,.0f} rows/s  {column * 1000:7.0f} ms"
        f"  ({column / arrow:.1f}x the floor)"
    )
    print(
        f"  build arrow table      {n / build_arrow:>12,.0f} rows/s  {build_arrow * 1000:7.0f} ms"
    )
    print(
        f"  build python columns   {n / build_columns:>12,.0f} rows/s  "
        f"{build_columns * 1000:7.0f} ms"
    )
    print(
        f"  flush (end to end)     {n / flushed:>12,.0f} rows/s  {flushed * 1000:7.0f} ms"
        f"  ({flushed / arrow:.1f}x the floor)"
    )
    print(
        f"  then {len(links.links):,} alias links moving {moved:,} stored events: "
        f"{linked * 1000:.0f} ms ({moved / linked:,.0f} moved rows/s)"
    )
    print(
        f"  then the same aliases re-linked elsewhere, moving them again: "
        f"{relinked * 1000:.0f} ms ({moved / relinked:,.0f} moved rows/s)"
    )


def unattributed_after(make: Callable[[], writer.ClickHouseSink], links: Output) -> int:
    """How many stored events the links move (checked, so the figure is honest)."""
    sink = make()
    db = sink._database
    before = sink.client.query(f"SELECT count() FROM {db}.events FINAL WHERE account_id = ''")
    sink.add(links)
    sink.flush()
    after = sink.client.query(f"SELECT count() FROM {db}.events FINAL WHERE account_id = ''")
    return int(before.result_rows[0][0]) - int(after.result_rows[0][0])


if __name__ == "__main__":
    main()
