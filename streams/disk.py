"""A journey partition's store on disk: RocksDB (through `rocksdict`, the binding Faust's
own RocksDB tables use), so a worker holds more journeys than fit in its memory.

The store is a cache of the partition's changelog, never the truth: each stage
opens a new one when it reads its state from the changelog, and removes it when
it lets the partition go. Nothing in it has to survive a crash (its writes skip
the write-ahead log), and two workers on one machine, or one partition opened
twice while a rebalance settles, never share one: each store is a folder of its
own, named by the machine and the process. Folders left by processes of this
machine that died are removed when the next store opens.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import socket
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from rocksdict import (
    AccessType,
    BlockBasedOptions,
    BottommostLevelCompaction,
    Cache,
    CompactOptions,
    DBCompressionType,
    Options,
    Rdict,
    WriteBatch,
    WriteOptions,
)

#: Memory RocksDB may use for writes before it flushes them to files (per store, twice:
#: one buffer fills while the other is written), and for the blocks it read last: about
#: 24 MiB per journey partition a worker holds, whatever the number of journeys.
WRITE_BUFFER = 8 * 1024 * 1024
BLOCK_CACHE = 8 * 1024 * 1024
#: Whether files are compressed (RocksDB's default, Snappy); off, a file holds each record's
#: bytes as written (tests look for them).
COMPRESSED = True


class RocksStore:
    """A `streams.engine.store.Store` in a RocksDB folder under `folder`."""

    def __init__(self, folder: Path) -> None:
        folder = folder / socket.gethostname()  # containers sharing a volume see other pids
        folder.mkdir(parents=True, exist_ok=True)
        remove_orphans(folder)
        self.path = folder / f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self._db = self._open()

    def _open(self) -> Rdict:
        """The database in the store's folder (created if missing)."""
        options = Options(raw_mode=True)
        options.create_if_missing(True)
        options.set_write_buffer_size(WRITE_BUFFER)
        options.set_max_write_buffer_number(2)
        if not COMPRESSED:
            options.set_compression_type(DBCompressionType.none())
        tables = BlockBasedOptions()
        tables.set_block_cache(Cache(BLOCK_CACHE))
        tables.set_cache_index_and_filter_blocks(True)  # counted in the cache, not beside it
        # A lookup of a key that is not there (a new alias, a new journey) reads no block.
        tables.set_bloom_filter(10, False)
        options.set_block_based_table_factory(tables)
        db = Rdict(str(self.path), options, access_type=AccessType.read_write())
        writes = WriteOptions()
        # A cache of the changelog: a crash starts a new one. (A property; the stubs say method.)
        writes.disable_wal = True  # type: ignore[assignment,method-assign]
        db.set_write_options(writes)
        return db

    def get(self, key: bytes) -> bytes | None:
        """The record under `key`, None if there is none."""
        value = self._db.get(key)
        return None if value is None else bytes(value)

    def write(self, records: Mapping[bytes, bytes | None]) -> None:
        """Put every record at once (None: delete the key)."""
        batch = WriteBatch(raw_mode=True)
        for key, value in records.items():
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        self._db.write(batch)

    def keys(self, prefix: bytes) -> Iterator[bytes]:
        """Every key that starts with `prefix`, in order."""
        for key, _ in self._scan(prefix):
            yield key

    def items(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Every record whose key starts with `prefix`, in key order."""
        for key, it in self._scan(prefix):
            yield key, bytes(it.value())

    def _scan(self, prefix: bytes) -> Iterator[tuple[bytes, Any]]:
        """Each key that starts with `prefix`, with the iterator standing on it (its value
        is read only if asked for)."""
        it = self._db.iter()
        it.seek(prefix)
        while it.valid():
            key = bytes(it.key())
            if not key.startswith(prefix):
                return
            yield key, it
            it.next()

    def purge(self) -> None:
        """Rewrite every file, so values deleted or replaced (by an erasure) are gone from
        disk: RocksDB otherwise keeps them in older files until they are compacted, and
        the keys that bounded those files in its MANIFEST, which a reopening starts anew."""
        self._db.flush()
        options = CompactOptions()
        options.set_bottommost_level_compaction(BottommostLevelCompaction.force())
        options.set_exclusive_manual_compaction(True)
        self._db.compact_range(None, None, options)
        self._db.close()
        self._db = self._open()

    def memory(self) -> int:
        """Bytes RocksDB holds in memory: its write buffers and its block cache."""
        db = self._db
        return sum(
            db.property_int_value(name) or 0
            for name in ("rocksdb.cur-size-all-mem-tables", "rocksdb.block-cache-usage")
        )

    def close(self) -> None:
        """Close the database and remove its folder."""
        self._db.close()
        shutil.rmtree(self.path, ignore_errors=True)


def give_back_memory() -> None:
    """Return the allocator's free memory to the OS (glibc `malloc_trim`; elsewhere
    nothing). A restore reads a partition's whole changelog and lets most of it go: without
    this the worker's RSS stays at that peak although the memory is free."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def remove_orphans(folder: Path) -> None:
    """Remove the stores of processes that are gone (a worker killed before it closed them)."""
    for path in folder.iterdir():
        pid, _, _ = path.name.partition("-")
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    """Whether a process with this id runs (on this machine)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
