"""Retention: JOURNEYS_RETENTION as the TTL of events and dead letters, on a simulated
history of two and a half years, in the real embedded ClickHouse."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from clickhouse_connect.driver.client import Client

from journeys.schemas.settings import Settings
from journeys.sinks.clickhouse.client import connect
from journeys.sinks.clickhouse.migrate import migrate
from journeys.sinks.clickhouse.retention import apply_retention, follow_retention_setting

DAY = 86_400_000

#: A pipeline that ran for `days` days: one event a day, stored when it happened, and one
#: dead letter a day; `{imported}` more events of the same days imported just now.
_LIVE = """
INSERT INTO {db}.events (event_id, channel, type, occurred_at, account_id, properties,
                         context, version, inserted_at)
SELECT concat('live', toString(number)), 'web', 'page_view', at, 'acme', '{{}}', '{{}}', 2, at
FROM (SELECT number, fromUnixTimestamp64Milli({{now:Int64}} - number * {day} - 60000, 'UTC') AS at
      FROM numbers({{days:UInt32}}))
"""
_IMPORTED = """
INSERT INTO {db}.events (event_id, channel, type, occurred_at, account_id, properties,
                         context, version)
SELECT concat('import', toString(number)), 'order', 'order_placed',
       fromUnixTimestamp64Milli({{now:Int64}} - number * {day} - 60000, 'UTC'), 'acme', '{{}}',
       '{{}}', 2
FROM numbers({{days:UInt32}})
"""
_LETTERS = """
INSERT INTO {db}.dead_letters (dead_letter_id, received_at, reason, payload, source)
SELECT concat('dl', toString(number)),
       fromUnixTimestamp64Milli({{now:Int64}} - number * {day} - 60000, 'UTC'), 'not JSON',
       '{{bad', 'test'
FROM numbers({{days:UInt32}})
"""


def _history(client: Client, db: str, now: int, days: int) -> None:
    for sql in (_LIVE, _IMPORTED, _LETTERS):
        client.command(sql.format(db=db, day=DAY), parameters={"now": now, "days": days})


def _rows(client: Client, db: str, sql: str) -> int:
    return int(client.query(f"SELECT count() FROM {db}.{sql}").result_rows[0][0])


def _merge(client: Client, db: str) -> None:
    for table in ("events", "dead_letters"):
        client.command(f"OPTIMIZE TABLE {db}.{table} FINAL")


@pytest.mark.integration
def test_rows_older_than_the_retention_are_gone_after_a_merge(
    chdb_dsn: str, database_name: Callable[[str], str]
) -> None:
    client, db = connect(chdb_dsn), database_name("retention")
    migrate(client, db)
    now = int(time.time() * 1000)
    _history(client, db, now, 900)  # two and a half years
    assert _rows(client, db, "events WHERE event_id LIKE 'live%'") == 900

    settings = Settings(clickhouse_url=chdb_dsn, clickhouse_database=db)  # default: 730d
    follow_retention_setting(client, settings)
    _merge(client, db)
    assert _rows(client, db, "events WHERE event_id LIKE 'live%'") == 730
    assert _rows(client, db, "dead_letters") == 730
    old = f"toUnixTimestamp64Milli(occurred_at) < {now - 730 * DAY}"
    assert _rows(client, db, f"events WHERE event_id LIKE 'live%' AND {old}") == 0
    # history imported today is kept the retention from its import
    assert _rows(client, db, "events WHERE event_id LIKE 'import%'") == 900

    # the TTL follows the setting: shorter, unchanged on a second start, then off
    assert apply_retention(client, db, 365 * DAY) == ["events", "dead_letters"]
    _merge(client, db)
    assert _rows(client, db, "events WHERE event_id LIKE 'live%'") == 365
    assert _rows(client, db, "dead_letters") == 365
    assert apply_retention(client, db, 365 * DAY) == []
    assert apply_retention(client, db, None) == ["events", "dead_letters"]
    _history(client, db, now, 900)
    _merge(client, db)
    assert _rows(client, db, "events WHERE event_id LIKE 'live%'") == 900
    assert apply_retention(client, db, None) == []


def test_the_raw_topics_are_created_with_the_topic_retention() -> None:
    from journeys.producers.topics import _config

    settings = Settings(topic_retention=3 * DAY // 1000, topic_prefix="p.")  # seconds: 3d
    day_ms = str(3 * DAY)
    assert _config(settings, "p.journeys.events")["retention.ms"] == day_ms
    assert _config(settings, "p.journeys.dead-letters")["retention.ms"] == day_ms
    assert "retention.ms" not in _config(settings, "p.journeys.transitions")
    assert _config(settings, "p.journeys.internal.suppressions")["cleanup.policy"] == "compact"
