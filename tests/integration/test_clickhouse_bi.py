"""BI clients read the views: SQLAlchemy (clickhouse-connect's `clickhousedb` dialect, which
reaches the embedded engine too) and pandas, as docs/bi.md tells users to connect."""

from __future__ import annotations

import re
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pandas as pd  # type: ignore[import-untyped]  # no stubs in the test extra
import pytest
import sqlalchemy as sa

from journeys.producers.simulator import simulate
from journeys.sinks.clickhouse.writer import ClickHouseSink
from journeys.sinks.memory import MemorySink
from journeys.sinks.reference import FinalTables
from journeys.streams.engine import EngineConfig
from journeys.streams.replay import replay

pytestmark = pytest.mark.integration

VIEWS = {
    "events_current",
    "phase_transitions_current",
    "journeys_current",
    "alerts_current",
    "open_alerts",
    "identity_links_current",
    "dead_letters_current",
    "analytics_accounts_per_phase",
    "analytics_accounts_per_phase_by_segment",
    "analytics_cohort_funnel",
    "analytics_time_in_phase",
    "analytics_transition_touchpoints",
    "analytics_transition_channels",
    "analytics_dmu_coverage",
    "analytics_dmu_roles",
    "analytics_decision_without_decider",
    "analytics_open_alerts",
    "analytics_repeat_orders",
}


@pytest.fixture(scope="module")
def replayed(chdb_dsn: str) -> Iterator[tuple[sa.Engine, FinalTables]]:
    """A simulated replay, and a SQLAlchemy engine on its database (the URL of docs/bi.md)."""
    lines = [(f"sim:{n}", line) for n, line in enumerate(simulate(accounts=60, days=90, seed=3))]
    memory = MemorySink()
    replay(lines, memory, EngineConfig.default(), 0)
    db = f"bi_{uuid.uuid4().hex[:10]}"
    sink = ClickHouseSink(chdb_dsn, db)
    sink.setup()
    replay(lines, sink, EngineConfig.default(), 0)
    engine = sa.create_engine(f"clickhousedb://?dsn={chdb_dsn}&database={db}")
    yield engine, memory.final()
    engine.dispose()


def test_sqlalchemy_reflects_every_view(replayed: tuple[sa.Engine, FinalTables]) -> None:
    engine, _ = replayed
    with engine.connect() as connection:
        names = set(sa.inspect(connection).get_table_names())
        assert VIEWS <= names
        journeys = sa.Table("journeys_current", sa.MetaData(), autoload_with=connection)
        assert [c.name for c in journeys.columns] == [
            "account_id",
            "phase",
            "phase_since",
            "first_seen",
            "last_seen",
            "last_activity",
            "events",
            "contacts",
            "dmu_roles",
            "segment",
            "engagement",
            "engagement_at",
            "engagement_half_life_ms",
            "engagement_warm",
            "engagement_hot",
        ]


def test_sqlalchemy_core_queries_a_view(replayed: tuple[sa.Engine, FinalTables]) -> None:
    engine, ref = replayed
    with engine.connect() as connection:
        per_phase = sa.Table(
            "analytics_accounts_per_phase", sa.MetaData(), autoload_with=connection
        )
        query = sa.select(per_phase.c.phase, per_phase.c.accounts).where(per_phase.c.accounts > 0)
        got = dict(connection.execute(query).all())
    assert got == dict(Counter(j.phase for j in ref.journeys.values()))


def test_pandas_reads_plain_sql_and_gets_the_right_counts(
    replayed: tuple[sa.Engine, FinalTables],
) -> None:
    engine, ref = replayed
    current = ref.current()
    with engine.connect() as connection:
        counts = pd.read_sql(
            "SELECT (SELECT count() FROM events_current) AS events, "
            "(SELECT count() FROM phase_transitions_current) AS transitions, "
            "(SELECT count() FROM journeys_current) AS journeys, "
            "(SELECT count() FROM open_alerts) AS open_alerts, "
            "(SELECT countIf(account_id = '') FROM events_current) AS without_account",
            connection,
        )
        frame = pd.read_sql("SELECT * FROM analytics_open_alerts", connection)
        phases = pd.read_sql_table("journeys_current", connection)
    assert counts.iloc[0].to_dict() == {
        "events": len(current["events_current"]),
        "transitions": len(current["phase_transitions_current"]),
        "journeys": len(current["journeys_current"]),
        "open_alerts": len(current["open_alerts"]),
        "without_account": sum(1 for e in ref.events.values() if not e.account_id),
    }
    assert len(frame) == len(current["open_alerts"]) > 0
    assert str(frame["raised_at"].dtype).startswith("datetime64")
    assert phases["phase"].value_counts().to_dict() == dict(
        Counter(j.phase for j in ref.journeys.values())
    )


def doc_sql() -> list[str]:
    """Every ```sql block of docs/bi.md."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "bi.md").read_text("utf-8")
    return re.findall(r"```sql\n(.*?)```", text, re.S)


def test_every_sql_example_of_the_bi_guide_runs(replayed: tuple[sa.Engine, FinalTables]) -> None:
    engine, _ = replayed
    examples = doc_sql()
    assert len(examples) >= 8
    answered = 0
    with engine.connect() as connection:
        for block in examples:
            for statement in (s.strip() for s in block.split(";")):
                if not statement:
                    continue
                statement = re.sub(r"\$__timeFilter\((\w+)\)", r"\1 >= '2000-01-01'", statement)
                statement = statement.replace("journeys.", "")
                rows = connection.execute(sa.text(statement)).all()
                answered += bool(rows)
    assert answered >= 8  # the examples answer something on simulated data
