"""The files a run leaves behind are its user's alone.

The data dir holds the embedded ClickHouse (emails, contact ids, IP
addresses), and the read endpoint's password: created with the default umask
(022) every user of the machine could read them. The console script sets the
umask to 077, so every file and folder a command or its children create is
0600/0700.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

pytestmark = pytest.mark.integration

EVENT = {
    "event_id": "e-1",
    "channel": "web",
    "type": "page_view",
    "occurred_at": "2026-11-02T09:15:00Z",
    "email": "inkoop@kwekerij-x.nl",
    "properties": {"url": "https://shop.example/"},
}


def test_a_replay_creates_its_data_files_for_its_user_only(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_bytes(orjson.dumps(EVENT) + b"\n" + b"not json\n")
    data = tmp_path / "data"
    env = {**os.environ, "JOURNEYS_DATA_DIR": str(data)}
    env.pop("JOURNEYS_CLICKHOUSE_URL", None)
    old = os.umask(0o022)  # what a login shell gives: the command must not rely on the caller's
    try:
        done = subprocess.run(
            [sys.executable, "-m", "journeys", "replay", "--quiet", str(events)],
            env=env,
            capture_output=True,
            timeout=240,
            check=False,
        )
    finally:
        os.umask(old)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    seen = [data, *data.rglob("*")]
    assert len(seen) > 10  # the embedded engine's tables are there
    for path in seen:
        mode = stat.S_IMODE(path.lstat().st_mode)
        if path.is_symlink():
            continue
        assert mode & 0o077 == 0, f"{path} is {oct(mode)}"
