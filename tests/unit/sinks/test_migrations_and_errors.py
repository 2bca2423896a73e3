"""Migration files, and what a driver error becomes: explained by its code, never its text."""

from __future__ import annotations

import fcntl
import re
from pathlib import Path

import pytest
from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

from journeys.schemas.errors import SinkUnavailable
from journeys.sinks.clickhouse.errors import (
    SinkRejected,
    clickhouse_errors,
    held_elsewhere,
    translate,
)
from journeys.sinks.clickhouse.migrate import migration_files, statements

TOO_MANY_PARTITIONS = (
    "Code: 252. DB::Exception: Too many partitions for single INSERT block (more than 100). "
    "The limit is controlled by 'max_partitions_per_insert_block' setting. (TOO_MANY_PARTS)"
)


def test_statements_drop_comments_and_split_on_semicolons() -> None:
    sql = "-- a table\nCREATE TABLE x (a String);\n\n-- and a view\nCREATE VIEW v AS SELECT 1;\n"
    assert statements(sql) == ["CREATE TABLE x (a String)", "CREATE VIEW v AS SELECT 1"]


SAFE_TO_REPEAT = re.compile(
    r"^(CREATE (TABLE|VIEW) IF NOT EXISTS|CREATE OR REPLACE VIEW|RENAME TABLE IF EXISTS"
    r"|DROP TABLE IF EXISTS|INSERT INTO \{db\}\.(\w+)\b.*FROM \{db\}\.\3_0001\b"
    # a column added only where it is missing, one clause a line, nothing else altered but
    # a sorting key extended by the columns just added (the same key again is no change)
    r"|ALTER TABLE \{db\}\.\w+(?:\s+ADD COLUMN IF NOT EXISTS [^\n]*)+"
    r"(?:\s+MODIFY ORDER BY \([\w, ]+\))?$"
    # a projection added only where it is missing, built again, and the merge settings
    # projections need (setting a value again is no change)
    r"|ALTER TABLE \{db\}\.\w+ ADD PROJECTION IF NOT EXISTS \w+ \(SELECT [\w, ]+ ORDER BY \w+\)$"
    r"|ALTER TABLE \{db\}\.\w+ MATERIALIZE PROJECTION \w+ SETTINGS mutations_sync = 2$"
    r"|ALTER TABLE \{db\}\.\w+ MODIFY SETTING (?:\w+_projection_mode = '\w+'(?:, )?)+$)",
    re.S,
)


def test_migrations_are_numbered_in_order_and_each_statement_can_be_repeated() -> None:
    files = migration_files()
    names = [name for name, _ in files]
    assert names[0] == "0001_initial" and names == sorted(names)
    assert [name[:4] for name in names] == [f"{n:04d}" for n in range(1, len(names) + 1)]
    for _, sql in files:
        for statement in statements(sql):
            # Creations are conditional; copies go from a renamed-away table into a
            # ReplacingMergeTree, where the same rows twice are one.
            assert SAFE_TO_REPEAT.match(statement), statement[:60]
            assert "{db}." in statement


def test_no_table_is_partitioned_by_a_time_that_a_redelivery_moves() -> None:
    tables = [s for _, sql in migration_files()[1:] for s in statements(sql) if "ENGINE =" in s]
    assert tables and not [s for s in tables if "PARTITION BY" in s]
    events = [s for _, sql in migration_files() for s in statements(sql) if "{db}.events\n(" in s]
    assert events[-1].rstrip().endswith("ORDER BY event_id")


def test_a_too_many_partitions_error_is_explained_by_its_code_not_by_lock_in_block(
    tmp_path: Path,
) -> None:
    error = DatabaseError(TOO_MANY_PARTITIONS, code=252, name="TOO_MANY_PARTS")
    translated = translate(f"chdb://{tmp_path}", error, "write")
    assert type(translated) is SinkUnavailable  # merges or a new schema can end it
    message = str(translated)
    assert message.startswith(
        f"the embedded ClickHouse at {tmp_path} could not write (code 252 TOO_MANY_PARTS): "
        "too many parts: a single insert touched more partitions"
    )
    assert "journeys migrate" in message and "another process" not in message


def test_a_missing_table_is_refused_for_good_and_names_the_migration() -> None:
    error = DatabaseError(
        "Code: 60. Table x.events does not exist (lock)", code=60, name="UNKNOWN_TABLE"
    )
    translated = translate("http://bob:s3cret@ch.example:8123", error, "write")
    assert isinstance(translated, SinkRejected)
    assert "s3cret" not in str(translated)
    assert str(translated).startswith(
        "ClickHouse at ch.example:8123 could not write (code 60 UNKNOWN_TABLE): a table or view "
        "is missing: run `journeys migrate`"
    )


@pytest.mark.parametrize(
    ("code", "retry"),
    [
        (516, False),
        (497, False),
        (81, False),
        (62, False),
        (241, True),
        (243, True),
        (210, True),
        (999999, True),
    ],
)
def test_codes_decide_whether_retrying_can_help(code: int, retry: bool) -> None:
    translated = translate(None, DatabaseError("whatever", code=code, name="X"), "write")
    assert isinstance(translated, SinkUnavailable)
    assert isinstance(translated, SinkRejected) is not retry


def test_a_server_that_cannot_be_reached_names_the_setting_and_hides_the_password() -> None:
    error = OperationalError("Error HTTPConnectionPool: Connection refused")
    assert str(translate("http://bob:s3cret@ch.example:8123", error, "open")) == (
        "ClickHouse at ch.example:8123 is unavailable (open): Error HTTPConnectionPool: "
        "Connection refused; check JOURNEYS_CLICKHOUSE_URL, the credentials and that the server "
        "is up"
    )


def test_a_held_status_file_means_another_process(tmp_path: Path) -> None:
    assert not held_elsewhere(str(tmp_path))
    status = tmp_path / "status"
    status.write_text("pid 1\n")
    assert not held_elsewhere(str(tmp_path))
    failed = OperationalError("Unable to open the chdb engine: Error initializing EmbeddedServer")
    with status.open("rb") as other:  # a second open file description, as another process has
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert held_elsewhere(str(tmp_path))
        assert str(translate(f"chdb://{tmp_path}", failed, "open")) == (
            f"another process holds the embedded database at {tmp_path} (only one process may "
            "open it): stop that process, or point JOURNEYS_CLICKHOUSE_URL at a ClickHouse server"
        )
    assert str(translate(f"chdb://{tmp_path}", OperationalError("disk full"), "open")) == (
        f"the embedded ClickHouse at {tmp_path} could not open: disk full"
    )


def test_the_context_translates_driver_and_socket_errors_only() -> None:
    with pytest.raises(SinkUnavailable) as caught:
        with clickhouse_errors("http://h:8123", "read"):
            raise ConnectionRefusedError("refused")
    assert isinstance(caught.value.__cause__, ConnectionRefusedError)
    with pytest.raises(SinkRejected, match="already said"):
        with clickhouse_errors("http://h:8123", "read"):
            raise SinkRejected("already said")
    with pytest.raises(ValueError):  # a bug is not an outage
        with clickhouse_errors("http://h:8123", "read"):
            raise ValueError("bug")


def test_a_long_driver_message_is_quoted_short() -> None:
    error = DatabaseError("x" * 5000 + "\nsecond line", code=241, name="MEMORY_LIMIT_EXCEEDED")
    message = str(translate(None, error, "write"))
    assert len(message) < 500 and message.endswith("...")
