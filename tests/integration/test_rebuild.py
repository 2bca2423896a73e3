"""`journeys rebuild --no-kafka` on the real embedded ClickHouse: new rules over the stored
events give what a replay with those rules gives, as a new generation."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from journeys.cli import main
from journeys.producers.simulator import simulate
from journeys.sinks.clickhouse.client import connect, select
from journeys.sinks.clickhouse.queries import snapshot
from tests.unit.engine.test_rebuild import OTHER

pytestmark = pytest.mark.integration


def invoke(*args: str) -> str:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def derived(snap: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    """What rules derive (events, links and dead letters aside)."""
    return {k: v for k, v in snap.items() if k in {"journeys", "phase_transitions", "alerts"}}


def test_rebuild_gives_a_replay_with_the_new_rules(
    tmp_path: Path, chdb_dsn: str, database_name: Callable[[str], str]
) -> None:
    """Replay with the built-in rules, rebuild with others: every `_current` view (and
    attribution, engagement) equals a replay with the other rules from the start; a
    replay after the rebuild writes into the live generation."""
    data = tmp_path / "in.jsonl"
    data.write_bytes(b"\n".join(simulate(accounts=40, days=60, seed=3)) + b"\n")
    rules = tmp_path / "other.toml"
    rules.write_text(OTHER)
    old, new = database_name("rbo"), database_name("rbn")
    where = ["--clickhouse-url", chdb_dsn, "--data-dir", str(tmp_path)]
    invoke("replay", "-q", str(data), *where, "--clickhouse-database", old)
    client = connect(chdb_dsn)
    before = derived(snapshot(client, old))
    out = invoke(
        "rebuild", "--no-kafka", "--rules", str(rules), *where, "--clickhouse-database", old
    )
    assert "is live" in out
    invoke("replay", "-q", str(data), *where, "--clickhouse-database", new, "--rules", str(rules))
    rebuilt, replayed = snapshot(client, old), snapshot(client, new)
    assert derived(rebuilt) == derived(replayed)
    assert derived(rebuilt) != before  # the other rules change the journeys
    for view in ("attribution_current", "analytics_engagement"):
        query = f"SELECT * FROM {{db}}.{view} ORDER BY ALL"
        assert select(client, query.format(db=old)) == select(client, query.format(db=new))
    (generation,) = select(client, f"SELECT generation FROM {old}.generation_current")[0]
    assert generation > 0
    assert select(client, f"SELECT DISTINCT generation FROM {old}.journeys") == [(generation,)]
    # A replay into the rebuilt database writes into its live generation: still visible.
    invoke("replay", "-q", str(data), *where, "--clickhouse-database", old, "--rules", str(rules))
    assert derived(snapshot(client, old)) == derived(replayed)
