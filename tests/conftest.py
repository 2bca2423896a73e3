"""Shared fixtures: one embedded ClickHouse path per test session, a fresh database per test.

The embedded engine (chdb) opens one path per process, so every test that
touches ClickHouse shares the session's path and gets its own database.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def chdb_dsn(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The session's embedded ClickHouse."""
    return f"chdb://{tmp_path_factory.mktemp('clickhouse')}"


@pytest.fixture()
def database_name() -> Callable[[str], str]:
    """A unique database name per call."""

    def name(prefix: str = "t") -> str:
        return f"{prefix}_{uuid.uuid4().hex[:12]}"

    return name


@pytest.fixture()
def data_dir(tmp_path: Path) -> Path:
    """A data directory of the test's own."""
    path = tmp_path / "data"
    path.mkdir()
    return path
