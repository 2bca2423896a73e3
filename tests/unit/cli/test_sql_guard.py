"""Which SQL the read-only entry points run."""

from __future__ import annotations

import pytest

from journeys.sinks.clickhouse.sql_guard import output_format, refusal, without_format


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 1",
        "  select count() from events_current;",
        "WITH x AS (SELECT 1) SELECT * FROM x",
        "(SELECT 1) UNION ALL (SELECT 2)",
        "SHOW TABLES",
        "DESCRIBE TABLE journeys",
        "DESC journeys",
        "EXISTS TABLE journeys",
        "EXPLAIN SELECT 1",
        "-- a comment; DROP TABLE x\nSELECT 1",
        "/* DELETE */ SELECT ';' AS semicolon",
        "SELECT 'INTO OUTFILE' AS words",
    ],
)
def test_reads_pass(sql: str) -> None:
    assert refusal(sql) is None


@pytest.mark.parametrize(
    ("sql", "reason"),
    [
        ("INSERT INTO t VALUES (1)", "INSERT is not allowed"),
        ("drop table journeys", "DROP is not allowed"),
        ("SELECT 1; DROP TABLE t", "one statement"),
        ("SELECT 1; SELECT 2", "one statement"),
        ("SELECT * FROM t INTO OUTFILE '/tmp/x'", "INTO OUTFILE"),
        ("SET readonly = 0", "SET is not allowed"),
        ("", "empty query"),
        ("  ;  ", "empty query"),
    ],
)
def test_everything_else_is_refused(sql: str, reason: str) -> None:
    refused = refusal(sql)
    assert refused is not None and reason in refused


def test_the_trailing_format_clause_is_found_outside_literals() -> None:
    assert output_format("SELECT 1 FORMAT JSON") == "JSON"
    assert output_format("SELECT 1 SETTINGS max_threads = 1 FORMAT Native;") == "Native"
    assert output_format("SELECT 1 FORMAT CSV SETTINGS max_threads = 1") == "CSV"
    assert output_format("SELECT format FROM t") is None
    assert output_format("SELECT 'x FORMAT JSON'") is None
    assert without_format("SELECT 1\n FORMAT Native") == "SELECT 1"
    assert without_format("SELECT 'FORMAT JSON' FORMAT CSV") == "SELECT 'FORMAT JSON'"
