"""Migration files and the messages a failed ClickHouse connection gives."""

from __future__ import annotations

import fcntl
from pathlib import Path

from journeys.sinks.clickhouse.client import explain, held_elsewhere
from journeys.sinks.clickhouse.migrate import migration_files, statements


def test_statements_drop_comments_and_split_on_semicolons() -> None:
    sql = "-- a table\nCREATE TABLE x (a String);\n\n-- and a view\nCREATE VIEW v AS SELECT 1;\n"
    assert statements(sql) == ["CREATE TABLE x (a String)", "CREATE VIEW v AS SELECT 1"]


def test_migrations_are_numbered_in_order_and_can_be_applied_again() -> None:
    files = migration_files()
    names = [name for name, _ in files]
    assert names[0] == "0001_initial" and names == sorted(names)
    for _, sql in files:
        for statement in statements(sql):
            assert "IF NOT EXISTS" in statement.split("(")[0].split(" AS")[0], statement[:50]
            assert "{db}." in statement


def test_a_server_error_names_the_setting_and_hides_the_password() -> None:
    message = explain("http://bob:s3cret@ch.example:8123", ConnectionRefusedError("refused"))
    assert message == (
        "ClickHouse at ch.example:8123 is unavailable: refused; check JOURNEYS_CLICKHOUSE_URL, "
        "the credentials and that the server is up"
    )


def test_a_second_embedded_path_in_one_process_is_explained() -> None:
    error = RuntimeError("EmbeddedServer already initialized with path '/d/one', cannot connect")
    assert explain("chdb:///d/two", error) == (
        "this process already has the embedded database at /d/one open and cannot open /d/two "
        "too (one path per process): use one JOURNEYS_CLICKHOUSE_URL per process"
    )


def test_a_held_status_file_means_another_process(tmp_path: Path) -> None:
    assert not held_elsewhere(str(tmp_path))
    status = tmp_path / "status"
    status.write_text("pid 1\n")
    assert not held_elsewhere(str(tmp_path))
    with status.open("rb") as other:  # a second open file description, as another process has
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert held_elsewhere(str(tmp_path))
        assert explain(f"chdb://{tmp_path}", RuntimeError("Error initializing EmbeddedServer")) == (
            f"another process holds the embedded database at {tmp_path} (only one process may "
            "open it): stop that process, or point JOURNEYS_CLICKHOUSE_URL at a ClickHouse server"
        )
    assert explain(f"chdb://{tmp_path}", RuntimeError("disk full")) == (
        f"the embedded ClickHouse at {tmp_path} failed: disk full"
    )
