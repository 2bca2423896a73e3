"""Reading a running pipeline: the read-only ClickHouse HTTP endpoint of the process that
holds the embedded engine, with real clients (clickhouse-connect over HTTP, SQLAlchemy's
clickhousedb dialect, pandas) while a ClickHouseSink writes in the same process, and the
project's own commands going through it while another process holds the data directory.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import clickhouse_connect
import pytest
from clickhouse_connect.driver.exceptions import DatabaseError
from pydantic import SecretStr

from journeys.schemas.rows import Output, StoredEvent
from journeys.sinks.clickhouse.http_reader import ReadServer, serve_readonly
from journeys.sinks.clickhouse.read_access import ReadAccess
from journeys.sinks.clickhouse.writer import ClickHouseSink
from tests.unit.engine.journey import ev

pytestmark = pytest.mark.integration

BATCHES, PER_BATCH = 30, 200
ACCESS = ReadAccess("reader", SecretStr("test-read-password"))
USER, PASSWORD = "reader", "test-read-password"


@pytest.fixture()
def endpoint(chdb_dsn: str) -> Iterator[Callable[[str], ReadServer]]:
    """Serve one test database's reads (the endpoint serves one database)."""
    servers: list[ReadServer] = []

    def serve(database: str) -> ReadServer:
        server = serve_readonly(chdb_dsn, "127.0.0.1", 0, access=ACCESS, database=database)
        servers.append(server)
        return server

    yield serve
    for server in servers:
        server.close()


def _batch(n: int) -> Output:
    events = [
        StoredEvent(
            ev(
                "page_view",
                n + i / PER_BATCH,
                event_id=f"b{n:03d}e{i:04d}",
                account_id=f"acct-{i % 7}",
            ),
            f"acct-{i % 7}",
        )
        for i in range(PER_BATCH)
    ]
    return Output(events=events)


def test_clients_read_over_http_while_the_sink_writes(
    ch_sink: Callable[[str], ClickHouseSink],
    database_name: Callable[[str], str],
    endpoint: Callable[[str], ReadServer],
) -> None:
    db = database_name("read")
    writer = ch_sink(db)
    server = endpoint(db)
    done = threading.Event()
    failures: list[BaseException] = []

    def write() -> None:
        try:
            for n in range(BATCHES):
                writer.add(_batch(n))
                writer.flush()
        except BaseException as exc:
            failures.append(exc)
        finally:
            done.set()

    client = clickhouse_connect.get_client(
        host="127.0.0.1", port=server.port, database=db, username=USER, password=PASSWORD
    )
    thread = threading.Thread(target=write)
    thread.start()
    seen = []
    while not done.is_set():
        seen.append(client.query("SELECT count() FROM events_current").result_rows[0][0])
        time.sleep(0.02)
    thread.join()
    assert not failures
    seen.append(client.query("SELECT count() FROM events_current").result_rows[0][0])
    assert seen == sorted(seen), "a reader saw rows disappear"
    assert seen[-1] == BATCHES * PER_BATCH
    assert len(set(seen)) > 2, "reads did not interleave with the writes"

    # Parameters, types, pandas and empty results with their columns.
    rows = client.query(
        "SELECT account_id, count() AS n FROM events_current WHERE account_id = {a:String} "
        "GROUP BY account_id",
        parameters={"a": "acct-3"},
    ).result_rows
    assert rows == [("acct-3", sum(1 for i in range(PER_BATCH) if i % 7 == 3) * BATCHES)]
    frame = client.query_df(
        "SELECT event_id, occurred_at FROM events_current ORDER BY event_id LIMIT 3"
    )
    assert list(frame.columns) == ["event_id", "occurred_at"] and len(frame) == 3
    empty = client.query("SELECT event_id, account_id FROM events_current WHERE event_id = 'none'")
    assert empty.column_names == ("event_id", "account_id") and empty.result_rows == []

    # Read-only: writes, DDL, a second statement and files are refused with ClickHouse's code.
    for statement in (
        f"INSERT INTO {db}.dead_letters (dead_letter_id) VALUES ('x')",
        f"DROP TABLE {db}.events",
        "SELECT 1; SELECT 2",
        "SELECT 1 INTO OUTFILE '/tmp/journeys-read-endpoint-test.csv'",
    ):
        with pytest.raises(DatabaseError, match="164"):
            client.command(statement)
    with pytest.raises(DatabaseError, match="READONLY"):
        client.query("SELECT * FROM file('/etc/hostname', 'LineAsString')")
    assert not Path("/tmp/journeys-read-endpoint-test.csv").exists()
    assert (
        client.query("SELECT count() FROM events_current").result_rows[0][0] == BATCHES * PER_BATCH
    )


def test_sqlalchemy_reflects_and_reads_through_the_endpoint(
    ch_sink: Callable[[str], ClickHouseSink],
    database_name: Callable[[str], str],
    endpoint: Callable[[str], ReadServer],
) -> None:
    import sqlalchemy as sa

    db = database_name("sqla")
    writer = ch_sink(db)
    server = endpoint(db)
    writer.add(_batch(0))
    writer.flush()
    engine = sa.create_engine(
        f"clickhousedb://reader:test-read-password@127.0.0.1:{server.port}/{db}"
    )
    with engine.connect() as connection:
        inspector = sa.inspect(connection)
        names = set(inspector.get_table_names()) | set(inspector.get_view_names())
        assert {"events", "events_current", "journeys_current"} <= names
        columns = {c["name"] for c in inspector.get_columns("events")}
        assert {"event_id", "account_id", "occurred_at"} <= columns
        rows = connection.execute(
            sa.text(
                "SELECT account_id, count() AS n FROM events_current "
                "GROUP BY account_id ORDER BY account_id"
            )
        ).all()
    assert sum(n for _, n in rows) == PER_BATCH and rows[0][0] == "acct-0"
    engine.dispose()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


HOLDER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from pydantic import SecretStr
    from journeys.schemas.rows import JourneyRow, Output, StoredEvent
    from journeys.sinks.clickhouse.http_reader import serve_readonly
    from journeys.sinks.clickhouse.read_access import ReadAccess, kept_password
    from journeys.sinks.clickhouse.writer import ClickHouseSink
    from tests.unit.engine.journey import ev

    dsn, port = sys.argv[1], int(sys.argv[2])
    writer = ClickHouseSink(dsn, "journeys")
    writer.setup()
    events = [StoredEvent(ev("page_view", i, event_id=f"h{i}"), "acme") for i in range(5)]
    day = 86_400_000
    journey = JourneyRow(
        "acme", "awareness", day, day, 2 * day, 2 * day, 5, 1, ("buyer",), "growers", 1
    )
    writer.add(Output(events=events, journeys=[journey]))
    writer.flush()
    access = ReadAccess("reader", SecretStr(kept_password(Path(sys.argv[3]))))
    server = (
        serve_readonly(dsn, "127.0.0.1", port, access=access, database="journeys")
        if port
        else None
    )
    print("ready", flush=True)
    sys.stdin.read()
    """
)


def _journeys(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "journeys", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


@pytest.mark.parametrize("serve", [True, False])
def test_commands_read_through_the_endpoint_of_the_process_holding_the_data(
    tmp_path: Path, serve: bool
) -> None:
    data = tmp_path / "data"
    port = _free_port()
    env = {**os.environ, "JOURNEYS_DATA_DIR": str(data), "JOURNEYS_READ_PORT": str(port)}
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            HOLDER,
            f"chdb://{data / 'clickhouse'}",
            str(port if serve else 0),
            str(data),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[2],
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        result = _journeys("query", "--json", "SELECT count() AS n FROM events_current", env=env)
        if serve:
            assert result.returncode == 0, result.stderr
            assert '"n": 5' in result.stdout
            account = _journeys("account", "acme", "--json", env=env)
            assert account.returncode == 0 and '"account_id": "acme"' in account.stdout
            page = tmp_path / "map.html"
            report = _journeys("report", "-o", str(page), env=env)
            assert report.returncode == 0, report.stderr
            assert page.stat().st_size > 1000
        else:
            assert result.returncode == 1
            assert "another process holds the embedded database" in result.stderr
            assert f"no read endpoint answers on 127.0.0.1:{port}" in result.stderr
            assert "Traceback" not in result.stderr
    finally:
        assert holder.stdin is not None and holder.stdout is not None
        holder.stdin.close()
        holder.wait(30)
        holder.stdout.close()
