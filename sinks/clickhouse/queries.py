"""Read-side queries: what `journeys demo` prints and what tests compare.

Every query reads current state (a `_current` view, or a table with FINAL,
of journeys, transitions and alerts the live generation's rows only) and
binds its values as parameters; the database name is an identifier checked
by `Settings`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from clickhouse_connect.driver.client import Client

from journeys.sinks.clickhouse.client import select
from journeys.sinks.clickhouse.generations import DERIVED, live_filter

TABLES = ("events", "phase_transitions", "journeys", "alerts", "dead_letters", "identity_links")
#: The contract's default phases, in journey order (rules files may define others).
DEFAULT_PHASES = ("awareness", "consideration", "decision", "purchase", "delivery", "loyalty")


def accounts_per_phase(
    client: Client, db: str, phases: Sequence[str] = DEFAULT_PHASES
) -> list[tuple[str, int]]:
    """(phase, accounts currently in it), in phase order; phases not in `phases` last, by name."""
    rows = select(
        client,
        "SELECT phase, count() AS n, indexOf({phases:Array(String)}, phase) AS i "
        f"FROM {db}.journeys FINAL WHERE {live_filter(db)} GROUP BY phase "
        "ORDER BY i = 0, i, phase",
        parameters={"phases": list(phases)},
    )
    return [(str(phase), int(n)) for phase, n, _ in rows]


def funnel(client: Client, db: str, phases: list[str]) -> list[tuple[str, int]]:
    """(phase, accounts that reached it or a later phase), in phase order."""
    rows = select(
        client,
        f"SELECT indexOf({{phases:Array(String)}}, phase) AS i, count() "
        f"FROM {db}.journeys FINAL WHERE {live_filter(db)} GROUP BY i",
        parameters={"phases": phases},
    )
    current = {int(i): int(n) for i, n in rows}
    return [
        (phase, sum(n for i, n in current.items() if i >= position))
        for position, phase in enumerate(phases, start=1)
    ]


def median_days_between_phases(client: Client, db: str) -> list[tuple[str, str, float]]:
    """(from, to, median days between entering `from` and entering `to`) per transition."""
    rows = select(
        client,
        f"SELECT from_phase, to_phase, "
        f"median(dateDiff('second', p.transitioned_at, t.transitioned_at)) / 86400 AS days, "
        f"min(t.transitioned_at) AS first "
        f"FROM {db}.phase_transitions AS t FINAL "
        f"INNER JOIN (SELECT account_id, to_phase AS phase, transitioned_at "
        f"FROM {db}.phase_transitions FINAL WHERE {live_filter(db)}) AS p "
        f"ON t.account_id = p.account_id AND t.from_phase = p.phase "
        f"WHERE t.from_phase != '' AND t.{live_filter(db)} GROUP BY from_phase, to_phase "
        "ORDER BY days, from_phase, to_phase",
    )
    return [(str(a), str(b), float(days)) for a, b, days, _ in rows]


def open_alerts(client: Client, db: str) -> list[tuple[str, int]]:
    """(kind, alerts raised and neither resolved nor withdrawn)."""
    rows = select(
        client,
        f"SELECT kind, count() FROM {db}.open_alerts GROUP BY kind ORDER BY kind",
    )
    return [(str(kind), int(n)) for kind, n in rows]


def table_counts(client: Client, db: str) -> dict[str, int]:
    """Rows per table as read with FINAL (derived tables: the live generation's)."""
    parts = " UNION ALL ".join(
        f"SELECT '{name}' AS t, count() AS n FROM {db}.{name} FINAL"
        + (f" WHERE {live_filter(db)}" if name in DERIVED else "")
        for name in TABLES
    )
    return {str(t): int(n) for t, n in select(client, parts)}


_ORDER = {
    "events": "event_id",
    "phase_transitions": "account_id, to_phase",
    "journeys": "account_id",
    "alerts": "alert_id",
    "dead_letters": "dead_letter_id",
    "identity_links": "kind, alias",
    "attribution": "account_id, to_phase, model, touch_event_id",
}


def snapshot(client: Client, db: str) -> dict[str, list[dict[str, Any]]]:
    """Every table's current rows as its `<table>_current` view shows them, sorted by key.

    The documented views are what two runs must agree on: no write bookkeeping
    (versions, deletions, the engine's own account of a re-attributed event),
    no withdrawn alerts.
    """
    out = {}
    for table, order in _ORDER.items():
        result = client.query(f"SELECT * FROM {db}.{table}_current ORDER BY {order}")
        out[table] = [
            dict(zip(result.column_names, row, strict=True)) for row in result.result_rows
        ]
    return out
