"""Reading the pipeline's database from a command, and its current rows table by table.

`open_reader(settings)` connects to the configured ClickHouse. With the
embedded engine held by a running sink (`journeys run` or `journeys sink`),
it reads through that sink's read-only endpoint instead
(`JOURNEYS_READ_HOST`:`JOURNEYS_READ_PORT`) with its user and password
(`JOURNEYS_READ_USER`, `JOURNEYS_READ_PASSWORD` or the one kept under the
data dir), and says what to do when there is none. `Tables` names each
table's current rows: the `<table>_current` views when the database has
them, else the table read with FINAL.
"""

from __future__ import annotations

import os

import clickhouse_connect
from clickhouse_connect.driver.client import Client

from journeys.schemas.errors import SinkUnavailable
from journeys.schemas.settings import Settings
from journeys.sinks.clickhouse.client import connect, is_open, select
from journeys.sinks.clickhouse.errors import held_elsewhere
from journeys.sinks.clickhouse.read_access import read_access


def open_reader(settings: Settings) -> Client:
    """A client that can read the pipeline's database now."""
    dsn = settings.clickhouse_dsn
    if not dsn.startswith("chdb://"):
        return connect(dsn)
    path = os.path.realpath(dsn.removeprefix("chdb://").split("?", 1)[0])
    if is_open(dsn):  # this process holds it (a sink in this process)
        return connect(dsn)
    if not held_elsewhere(path):
        if not os.path.isdir(path):
            raise SinkUnavailable(
                f"no data at {path}: run `journeys demo`, `journeys replay FILE` or the pipeline "
                "first, or point JOURNEYS_DATA_DIR / JOURNEYS_CLICKHOUSE_URL at your data"
            )
        return connect(dsn)
    return _through_endpoint(settings, path)


def _through_endpoint(settings: Settings, path: str) -> Client:
    where = f"{settings.read_host}:{settings.read_port}"
    if not settings.read_port:
        raise SinkUnavailable(
            f"another process holds the embedded database at {path} and JOURNEYS_READ_PORT is 0, "
            "so nothing serves its reads: restart that sink with JOURNEYS_READ_PORT set (default "
            "8124), or stop it"
        )
    access = read_access(settings)
    try:
        client = clickhouse_connect.get_client(
            host=settings.read_host,
            port=settings.read_port,
            username=access.user,
            password=access.password.get_secret_value(),
            compress=False,
            connect_timeout=3,
            send_receive_timeout=300,
        )
        client.command("SELECT 1")
    except Exception as exc:
        raise SinkUnavailable(
            f"another process holds the embedded database at {path} (only one process may open "
            f"it) and no read endpoint answers on {where}: if it is `journeys run` or `journeys "
            f"sink`, give this command the same --read-port; otherwise stop that process ({exc})"
        ) from exc
    return client


def require_database(client: Client, database: str) -> None:
    """`SinkUnavailable` that says what to do when the database does not exist."""
    rows = select(
        client, "SELECT count() FROM system.databases WHERE name = {db:String}", {"db": database}
    )
    if not rows or not rows[0][0]:
        raise SinkUnavailable(
            f"there is no database {database!r} here yet: run `journeys demo`, `journeys replay "
            "FILE` or the pipeline first, or set JOURNEYS_CLICKHOUSE_DATABASE"
        )


class Tables:
    """FROM clauses for each table's current rows, views first."""

    def __init__(self, client: Client, database: str) -> None:
        self.database = database
        rows = select(
            client,
            "SELECT name FROM system.tables WHERE database = {db:String}",
            {"db": database},
        )
        self.names = {str(name) for (name,) in rows}
        columns = select(
            client,
            "SELECT table, name FROM system.columns WHERE database = {db:String}",
            {"db": database},
        )
        self.columns: dict[str, set[str]] = {}
        for table, name in columns:
            self.columns.setdefault(str(table), set()).add(str(name))

    def current(self, table: str) -> str:
        """`db.<table>_current` if the view exists, else `(SELECT * FROM db.<table> FINAL ...)`."""
        view = f"{table}_current"
        if view in self.names:
            return f"{self.database}.{view}"
        where = " WHERE NOT withdrawn" if "withdrawn" in self.columns.get(table, set()) else ""
        return f"(SELECT * FROM {self.database}.{table} FINAL{where})"

    def final(self, table: str) -> str:
        """`db.<table> FINAL`, every key's newest row (deleted or withdrawn ones too); of a
        table whose rows carry a generation, the live one's only (`generation_current`)."""
        if "generation_current" in self.names and self.has_column(table, "generation"):
            live = f"(SELECT generation FROM {self.database}.generation_current)"
            return f"(SELECT * FROM {self.database}.{table} FINAL WHERE generation = {live})"
        return f"{self.database}.{table} FINAL"

    def open_alerts(self) -> str:
        """Alerts raised and neither resolved nor withdrawn."""
        if "open_alerts" in self.names:
            return f"{self.database}.open_alerts"
        return f"(SELECT * FROM {self.current('alerts')} WHERE resolved_at IS NULL)"

    def has_column(self, table: str, column: str) -> bool:
        """Whether a table or view has a column."""
        return column in self.columns.get(table, set())
