"""Settings that ClickHouse's own derived views read: written where SQL can see them.

Attribution is worked out by ClickHouse from the current events and
transitions (migration 0007), so its lookback and half-life must live in the
database, not only in the process's settings. Each process that writes a
database (the sink, `journeys replay`, the demo) stores the values it was
started with in `derived_settings` when it starts; the views read the latest.
"""

from __future__ import annotations

import time

from clickhouse_connect.driver.client import Client

from journeys.schemas.settings import Settings
from journeys.sinks.clickhouse.client import run


def derived_values(settings: Settings) -> dict[str, float]:
    """The values the derived views need, by the name they read them under."""
    return {
        "attribution_lookback_ms": float(settings.attribution_lookback),
        "attribution_half_life_ms": float(settings.attribution_half_life),
    }


def write_derived_settings(client: Client, database: str, values: dict[str, float]) -> None:
    """Store `values` as the current ones (a newer version than any before)."""
    version = time.time_ns()
    rows = ", ".join(f"({{n{i}:String}}, {{v{i}:Float64}}, {version})" for i in range(len(values)))
    params: dict[str, object] = {}
    for i, (name, value) in enumerate(values.items()):
        params[f"n{i}"], params[f"v{i}"] = name, value
    run(
        client,
        f"INSERT INTO {database}.derived_settings (name, value, version) VALUES {rows}",
        params,
    )
