"""Retention: events and dead letters leave ClickHouse `JOURNEYS_RETENTION` after they came.

Applied as a table TTL when the sink (or `journeys replay`) starts, not as a
constant in a migration, because it is a setting: each start compares the
tables' TTL with the setting and changes it only when they differ (`ALTER
TABLE ... MODIFY TTL`, or `REMOVE TTL` for `off`). Events expire the
retention after they happened or were stored, whichever is later
(`greatest(occurred_at, inserted_at)`): in a live pipeline that is event
time, while history imported today (a backfill, a replay of old files, a
test's fixed dates) is kept the retention from its import instead of
vanishing at the next merge. Dead letters expire by arrival
(`received_at`). ClickHouse drops expired rows in its merges (`OPTIMIZE
... FINAL` forces one). Derived rows (journeys, transitions, alerts) are
per company and stay; a person's own account (a free-mail contact) is
erased by `journeys forget`.
"""

from __future__ import annotations

import logging

from clickhouse_connect.driver.client import Client

from journeys.schemas.settings import Settings
from journeys.sinks.clickhouse.client import run, select
from journeys.sinks.clickhouse.forget import storage_table

log = logging.getLogger(__name__)

#: Tables with a retention, and the time their rows expire after.
EXPIRING = {"events": "greatest(occurred_at, inserted_at)", "dead_letters": "received_at"}


def ttl_expression(start: str, retention_ms: int) -> str:
    """The TTL of a table whose rows expire `retention_ms` after `start`."""
    return f"{start} + toIntervalSecond({max(retention_ms // 1000, 1)})"


def apply_retention(client: Client, db: str, retention_ms: int | None) -> list[str]:
    """Make each table's TTL follow the setting (None: no TTL); the tables changed."""
    changed = []
    for table, start in EXPIRING.items():
        name, cluster = storage_table(client, db, table)
        target = f"{db}.{name}{cluster}"
        current = _current_ttl(client, db, name)
        wanted = ttl_expression(start, retention_ms) if retention_ms is not None else None
        if current == wanted:
            continue
        if wanted is None:
            run(client, f"ALTER TABLE {target} REMOVE TTL")
        else:
            run(client, f"ALTER TABLE {target} MODIFY TTL {wanted}")
        changed.append(table)
    return changed


def _current_ttl(client: Client, db: str, table: str) -> str | None:
    """The TTL expression of a table, as ClickHouse writes it back (None: no TTL)."""
    rows = select(
        client,
        "SELECT engine_full FROM system.tables WHERE database = {db:String} AND name = {t:String}",
        {"db": db, "t": table},
    )
    engine = str(rows[0][0]) if rows else ""
    if " TTL " not in engine:
        return None
    return engine.split(" TTL ", 1)[1].split(" SETTINGS ", 1)[0].strip()


def follow_retention_setting(client: Client, settings: Settings) -> None:
    """At a writer's start: the TTLs follow `JOURNEYS_RETENTION` (logged when changed)."""
    changed = apply_retention(client, settings.clickhouse_database, settings.retention_ms)
    if changed:
        log.info("retention %s applied to %s", settings.retention.strip(), ", ".join(changed))
