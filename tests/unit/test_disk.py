"""The journey partitions' store on disk (RocksDB): records in and out, and no folder left
behind by a stage let go or a process that died."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from journeys.streams import disk
from journeys.streams.disk import RocksStore


def test_records_are_written_read_listed_and_deleted(tmp_path: Path) -> None:
    store = RocksStore(tmp_path)
    store.write({b"h:b": b"2", b"h:a": b"1", b"k:a\x1f0": b"chunk", b"m:engine": b"{}"})
    store.write({b"h:b": None, b"h:c": b"3"})
    assert store.get(b"h:a") == b"1" and store.get(b"h:b") is None
    assert list(store.keys(b"h:")) == [b"h:a", b"h:c"]
    assert list(store.keys(b"k:")) == [b"k:a\x1f0"]
    store.close()
    assert list((tmp_path / socket.gethostname()).iterdir()) == []


def test_stores_of_processes_that_died_are_removed_and_live_ones_kept(tmp_path: Path) -> None:
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    here = tmp_path / socket.gethostname()
    dead = here / f"{gone.stdout.strip()}-0123456789ab"
    dead.mkdir(parents=True)
    (dead / "000001.sst").write_bytes(b"x")
    first = RocksStore(tmp_path)
    second = RocksStore(tmp_path)  # this process's first store stays
    assert not dead.exists()
    assert {first.path, second.path} == set(here.iterdir())
    first.close()
    second.close()


def test_a_purge_leaves_no_trace_of_a_deleted_value_on_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After an erasure the stage purges its store: a value deleted is then in no file, nor
    a key (RocksDB's MANIFEST names the first and last key of every file it ever had).
    Files uncompressed, so what is in them can be found."""
    monkeypatch.setattr(disk, "COMPRESSED", False)
    secret = os.urandom(48).hex().encode()  # found only where it was written
    name = b"h:" + os.urandom(24).hex().encode()

    def on_disk(text: bytes) -> bool:
        return any(text in f.read_bytes() for f in store.path.rglob("*") if f.is_file())

    store = RocksStore(tmp_path)
    store.write({b"h:jan": secret, b"h:piet": b"kept", name: b"x"})
    store._db.flush()
    store.write({b"h:jan": None, name: None})
    store._db.flush()
    assert on_disk(secret) and on_disk(name)  # RocksDB keeps them until compacted
    store.purge()
    assert not on_disk(secret) and not on_disk(name)
    assert store.get(b"h:piet") == b"kept" and store.get(b"h:jan") is None
    store.close()
