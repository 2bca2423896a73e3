"""Versioned schema migrations that resume where they stopped.

Each `migrations/NNNN_name.sql` file is applied once, in order, and recorded
in `schema_migrations`. A CREATE (`IF NOT EXISTS`, `OR REPLACE`) can run again
at any time; every other statement (the RENAME, copy and DROP of a table
rebuilt with new keys) is recorded on its own (`NNNN_name#3`), so an upgrade
interrupted half-way resumes after the last one that completed instead of
renaming or copying twice. Those are still written to be safe to repeat
(`IF EXISTS`, copies into a ReplacingMergeTree) for the moment between a
statement and its record.

`{db}` in a file is the database name, which `Settings` restricts to an
identifier; values are always bound as parameters.
"""

from __future__ import annotations

import re
from importlib import resources

from clickhouse_connect.driver.client import Client

from journeys.sinks.clickhouse.client import run, select

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def migration_files() -> list[tuple[str, str]]:
    """(name, SQL) of every migration, in order."""
    folder = resources.files("journeys.sinks.clickhouse").joinpath("migrations")
    names = sorted(p.name for p in folder.iterdir() if p.name.endswith(".sql"))
    return [(name.removesuffix(".sql"), folder.joinpath(name).read_text("utf-8")) for name in names]


def statements(sql: str) -> list[str]:
    """The statements of a migration file, comments dropped."""
    body = "\n".join(line for line in sql.splitlines() if not line.strip().startswith("--"))
    return [s.strip() for s in body.split(";") if s.strip()]


def migrate(client: Client, database: str) -> list[str]:
    """Create the database and apply pending migrations; the names of the files applied."""
    if not _IDENTIFIER.match(database):
        raise ValueError(f"not a database name: {database!r}")
    run(client, f"CREATE DATABASE IF NOT EXISTS {database}")
    run(
        client,
        f"CREATE TABLE IF NOT EXISTS {database}.schema_migrations "
        "(name String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) "
        "ENGINE = ReplacingMergeTree ORDER BY name",
    )
    done = {
        row[0] for row in select(client, f"SELECT name FROM {database}.schema_migrations FINAL")
    }
    applied = []
    for name, sql in migration_files():
        if name in done:
            continue
        for number, statement in enumerate(statements(sql), start=1):
            step = f"{name}#{number}"
            if step in done:
                continue
            run(client, statement.replace("{db}", database))
            if not statement.startswith("CREATE "):
                _record(client, database, step)
        _record(client, database, name)
        applied.append(name)
    return applied


def _record(client: Client, database: str, name: str) -> None:
    run(
        client,
        f"INSERT INTO {database}.schema_migrations (name) VALUES ({{name:String}})",
        {"name": name},
    )
