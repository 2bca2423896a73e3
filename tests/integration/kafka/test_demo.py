"""`journeys demo`, the README's first command, streamed through the real broker: it stops
once everything is stored (the identity stage drained and every consumer group committed
all it reads), and what it stored is what replay stores."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.kafka, pytest.mark.integration]


def demo(kafka_bootstrap: str, data: Path, *flags: str) -> str:
    """Run `journeys demo` on a small simulation; its summary line (`stored: ...`)."""
    env = {**os.environ, "JOURNEYS_KAFKA_BOOTSTRAP": kafka_bootstrap, "JOURNEYS_READ_PORT": "0"}
    args = ["--accounts", "40", "--days", "45", "--seed", "11", "--data-dir", str(data)]
    result = subprocess.run(
        [sys.executable, "-m", "journeys", "demo", *args, *flags],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "\x1b[" not in result.stdout, "terminal codes in the output"
    stored = re.search(r"^stored: .*$", result.stdout, re.MULTILINE)
    assert stored is not None, result.stdout[-3000:]
    return stored.group(0)


def test_the_streamed_demo_stores_what_replay_stores(kafka_bootstrap: str, tmp_path: Path) -> None:
    streamed = demo(kafka_bootstrap, tmp_path / "kafka")
    replayed = demo(kafka_bootstrap, tmp_path / "replay", "--no-kafka")
    assert re.search(r" [1-9]\d* alerts", replayed), replayed  # the drain's alerts count
    assert streamed == replayed
