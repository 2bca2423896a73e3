"""Generations of derived rows in ClickHouse: which one is live, how far a new one is.

`journeys rebuild --rules FILE` derives every journey, transition and alert
again as a new generation (migration 0010). Each journey partition reports in
`generations` when it holds the new generation; the generation is complete,
and the `_current` views switch to it (`generation_current`), when every
partition has reported. Once it is, the rows of older generations only take
space: `prune_generations` deletes them.
"""

from __future__ import annotations

from clickhouse_connect.driver.client import Client

from journeys.sinks.clickhouse.client import select
from journeys.sinks.clickhouse.forget import delete_where

#: The tables whose rows carry a generation.
DERIVED = ("journeys", "phase_transitions", "alerts")


def live_filter(db: str) -> str:
    """A condition on `generation` that keeps the rows the `_current` views show."""
    return f"generation = (SELECT generation FROM {db}.generation_current)"


def live_generation(client: Client, db: str) -> int:
    """The newest generation every partition has reported; 0 when none was."""
    return int(select(client, f"SELECT generation FROM {db}.generation_current")[0][0])


def generation_progress(client: Client, db: str, generation: int) -> tuple[int, int]:
    """(partitions that reported `generation`, partitions it needs); (0, 0) when none did."""
    rows = select(
        client,
        f"SELECT uniqExact(partition), max(partitions) FROM {db}.generations FINAL "
        "WHERE generation = {generation:UInt32}",
        {"generation": generation},
    )
    return int(rows[0][0]), int(rows[0][1])


def next_generation(client: Client, db: str) -> int:
    """The number for a new rebuild: one above every generation ever reported (at least 1)."""
    return int(select(client, f"SELECT max(generation) FROM {db}.generations")[0][0]) + 1


def prune_generations(client: Client, db: str) -> dict[str, int]:
    """Delete the rows of generations older than the live one; rows deleted per table.

    Nothing while generation 0 is live. Newer generations (a rebuild under way)
    are kept."""
    live = live_generation(client, db)
    if live == 0:
        return {}
    where, params = "generation < {live:UInt32}", {"live": live}
    return {table: delete_where(client, db, table, where, params) for table in DERIVED}
