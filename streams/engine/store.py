"""Where a journey partition keeps the journeys it does not hold in memory. Pure.

A partition engine given a `Store` (see `PartitionEngine`) writes every
journey's records there as it saves them (`changes()`: the `h:` record and
its archive chunks, the same bytes the changelog gets), and keeps in memory
only as many journeys as its `capacity`: the ones used last, and every one
with work pending. A journey it needs again is read back from its records,
exactly as a restored partition reads it. The store is a cache of the
changelog, never the truth: a restored partition fills a new one from the
changelog (see `streams.disk.RocksStore`, the one the workers use).

The engine's small records (forwards, absorbed losers: one per visitor identified,
kept for good) live there too, behind a `Kept`: only those changed since the last
save stay in memory.

The identity router keeps its graph (journeys' shadows, aliases, redirects) the
same way, each table a `Paged` map: the entries changed since the last save and
those read most recently stay in memory, up to a capacity; the rest is read back
from the store when an event needs it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, MutableMapping
from itertools import islice
from typing import Generic, Protocol, TypeVar

V = TypeVar("V")


class Store(Protocol):
    """A key-value store of state records (bytes to bytes)."""

    def get(self, key: bytes) -> bytes | None:
        """The record under `key`, None if there is none."""

    def write(self, records: Mapping[bytes, bytes | None]) -> None:
        """Put every record at once (None: delete the key)."""

    def keys(self, prefix: bytes) -> Iterator[bytes]:
        """Every key that starts with `prefix`."""

    def items(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Every record whose key starts with `prefix`, in key order."""

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

    def items(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Every record whose key starts with `prefix`, in key order."""
        return iter(sorted((k, v) for k, v in self.records.items() if k.startswith(prefix)))

    def purge(self) -> None:
        """Nothing to do: a dict keeps no value it lost."""

    def close(self) -> None:
        """Forget every record."""
        self.records = {}


class Kept(Generic[V]):
    """A map of small records (str key -> value) an engine keeps under a key `prefix`.

    Without a store it is a plain dict (`recent` holds every value; `pop` deletes).
    With one, `recent` holds only the values changed since the last save (None: deleted)
    in front of the store, where the engine's `changes()` writes them; `saved()` then
    lets them go, and a value needed again is read back with `decode`. So a record per
    visitor ever identified costs no memory once saved."""

    __slots__ = ("decode", "prefix", "recent", "store")

    def __init__(self, prefix: bytes, decode: Callable[[bytes], V], store: Store | None = None):
        self.prefix = prefix
        self.decode = decode
        self.store = store
        #: Every value (no store), or those changed since the last save (None: deleted).
        self.recent: dict[str, V | None] = {}

    def get(self, key: str) -> V | None:
        """The value under `key`, None if there is none."""
        recent = self.recent
        if key in recent or self.store is None:
            return recent.get(key)
        data = self.store.get(self.prefix + key.encode())
        return None if data is None else self.decode(data)

    def __contains__(self, key: str) -> bool:
        return self.get(key) is not None

    def __setitem__(self, key: str, value: V) -> None:
        self.recent[key] = value

    def pop(self, key: str, default: None = None) -> V | None:
        """Delete the value under `key`, and give it (None if there was none)."""
        if self.store is None:
            return self.recent.pop(key, None)
        value = self.get(key)
        if value is not None:
            self.recent[key] = None
        return value

    def prefixed(self, text: str) -> list[str]:
        """Every key that starts with `text` (with a store: a scan of its keys, not of all)."""
        recent = self.recent
        if self.store is None:
            return [key for key in recent if key.startswith(text)]
        found = {key for key, value in recent.items() if value is not None and key.startswith(text)}
        skip = len(self.prefix)
        for name in self.store.keys(self.prefix + text.encode()):
            key = name[skip:].decode()
            if key not in recent:
                found.add(key)
        return sorted(found)

    def saved(self) -> None:
        """The changes went to the store (`changes()`): with one, let them go from memory."""
        if self.store is not None:
            self.recent = {}


class Paged(MutableMapping[str, V]):
    """A map (str key -> value) kept in a store under a key `prefix`, with a cache.

    Reads go through the cache: an entry found in the store (or found missing) is
    kept there. Writes and deletions stay in the cache until the owner's save
    writes the store (the owner writes the records itself, from what it changed)
    and calls `saved()`, which lets the oldest entries go down to `capacity`.
    So values may be mutable objects: one read back is the same object until a
    save lets it go, and what changed it must be in the owner's save.

    Iteration and `len` scan the store (for rare whole-state work, like an
    erasure) and read nothing into the cache; entries may be read or replaced
    while iterating, none added or deleted."""

    __slots__ = ("_any", "capacity", "decode", "prefix", "recent", "store")

    def __init__(
        self,
        prefix: bytes,
        decode: Callable[[str, bytes], V | None],
        store: Store,
        capacity: int,
    ) -> None:
        self.prefix = prefix
        #: A value from its key and record (None: the record holds none for this map).
        self.decode = decode
        self.store = store
        self.capacity = capacity
        #: Entries read or changed since they were last let go (None: there is none).
        self.recent: dict[str, V | None] = {}
        #: Whether there is any entry (None: not known since the last deletion).
        self._any: bool | None = None

    def get(self, key: str, default: V | None = None) -> V | None:  # type: ignore[override]
        """The value under `key`, `default` if there is none."""
        recent = self.recent
        if key in recent:
            value = recent[key]
        else:
            data = self.store.get(self.prefix + key.encode())
            value = recent[key] = None if data is None else self.decode(key, data)
        return default if value is None else value

    def __getitem__(self, key: str) -> V:
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key) is not None

    def __setitem__(self, key: str, value: V) -> None:
        self.recent[key] = value
        self._any = True

    def __delitem__(self, key: str) -> None:
        if self.get(key) is None:
            raise KeyError(key)
        self.recent[key] = None
        self._any = None

    def pop(self, key: str, default: V | None = None) -> V | None:  # type: ignore[override]
        """Delete the value under `key`, and give it (`default` if there was none)."""
        value = self.get(key)
        if value is None:
            return default
        self.recent[key] = None
        self._any = None
        return value

    def __iter__(self) -> Iterator[str]:
        return (key for key, _ in self.items())

    def __len__(self) -> int:
        return sum(1 for _ in self.items())

    def __bool__(self) -> bool:
        """Whether there is any entry: without counting them (`len` scans them all)."""
        if self._any is None:
            self._any = self._find_any()
        return self._any

    def _find_any(self) -> bool:
        recent = self.recent
        skip = len(self.prefix)
        for name in self.store.keys(self.prefix):  # the first one, but for deletions
            if recent.get(name[skip:].decode(), True) is not None:
                return True
        return any(value is not None for value in recent.values())

    def items(self) -> Iterator[tuple[str, V]]:  # type: ignore[override]
        """Every entry, read one at a time (those not in the cache stay out of it): those
        in the cache as it was when the iteration began, the others from the store."""
        cached = dict(self.recent)  # entries read meanwhile are not yielded twice
        skip = len(self.prefix)
        for name, data in self.store.items(self.prefix):
            key = name[skip:].decode()
            if key not in cached:
                value = self.decode(key, data)
                if value is not None:
                    yield key, value
        yield from ((key, value) for key, value in cached.items() if value is not None)

    def values(self) -> Iterator[V]:  # type: ignore[override]
        """Every value, read one at a time (those not in the cache stay out of it)."""
        return (value for _, value in self.items())

    def saved(self) -> None:
        """The owner wrote its changes to the store: the oldest entries beyond the
        capacity leave memory."""
        recent = self.recent
        excess = len(recent) - self.capacity
        if excess > 0:
            for key in list(islice(recent, excess)):
                del recent[key]
