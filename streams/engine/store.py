"""Where a journey partition keeps the journeys it does not hold in memory. Pure.

A partition engine given a `Store` (see `PartitionEngine`) writes every
journey's records there as it saves them (`changes()`: the `h:` record and
its archive chunks, the same bytes the changelog gets), and keeps in memory
only as many journeys as its `capacity`: the ones used last, and every one
with work pending. A journey it needs again is read back from its records,
exactly as a restored partition reads it. The store is a cache of the
changelog, never the truth: a restored partition fills a new one from the
changelog (see `streams.disk.RocksStore`, the one the workers use).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Protocol


class Store(Protocol):
    """A key-value store of state records (bytes to bytes)."""

    def get(self, key: bytes) -> bytes | None:
        """The record under `key`, None if there is none."""

    def write(self, records: Mapping[bytes, bytes | None]) -> None:
        """Put every record at once (None: delete the key)."""

    def keys(self, prefix: bytes) -> Iterator[bytes]:
        """Every key that starts with `prefix`."""

    def purge(self) -> None:
        """Leave no trace of values deleted or replaced (after an erasure)."""

    def close(self) -> None:
        """Give back what the store holds (its files, for one on disk)."""


class MemoryStore:
    """A `Store` in a dict: for tests, and for an engine whose journeys fit in memory
    anyway (a record takes about a quarter of the memory of the journey it holds)."""

    def __init__(self) -> None:
        self.records: dict[bytes, bytes] = {}

    def get(self, key: bytes) -> bytes | None:
        """The record under `key`, None if there is none."""
        return self.records.get(key)

    def write(self, records: Mapping[bytes, bytes | None]) -> None:
        """Put every record (None: delete the key)."""
        mine = self.records
        for key, value in records.items():
            if value is None:
                mine.pop(key, None)
            else:
                mine[key] = value

    def keys(self, prefix: bytes) -> Iterator[bytes]:
        """Every key that starts with `prefix`."""
        return iter([key for key in self.records if key.startswith(prefix)])

    def purge(self) -> None:
        """Nothing to do: a dict keeps no value it lost."""

    def close(self) -> None:
        """Forget every record."""
        self.records = {}
