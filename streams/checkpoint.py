"""The journey stage's checkpoint: engine state and input position, saved atomically.

One RocksDB directory (through rocksdict) per journey stage. Each save is a
single write batch holding the holders, aliases and redirects that changed,
the engine's counters, the reorder buffer and the input offset it all
reflects, so a restart resumes from one consistent point: events after the
offset are read again and, the engine being deterministic, produce the same
rows again (which the sink writes idempotently).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import orjson
from rocksdict import Options, Rdict, WriteBatch

from journeys.streams.engine.engine import EngineChanges
from journeys.streams.engine.state import Holder

_HOLDER = b"h:"
_ALIAS = b"a:"
_REDIRECT = b"r:"
_ENGINE_META = b"m:engine"
_STAGE_META = b"m:stage"


@dataclass
class Loaded:
    """Everything a checkpoint holds."""

    holders: dict[str, Holder] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)
    redirects: dict[str, str] = field(default_factory=dict)
    engine_meta: dict[str, Any] = field(default_factory=dict)
    stage_meta: dict[str, Any] = field(default_factory=dict)


class CheckpointStore:
    """A RocksDB directory holding one journey stage's checkpoint."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: Rdict | None = None

    def open(self) -> Loaded:
        """Open (creating it if new) and read the last checkpoint."""
        self.path.mkdir(parents=True, exist_ok=True)
        self._db = Rdict(str(self.path), options=Options(raw_mode=True))
        loaded = Loaded()
        for raw_key, value in self._db.items():
            key = cast(bytes, raw_key)  # raw mode: keys and values are bytes
            prefix, name = key[:2], key[2:].decode()
            if prefix == _HOLDER:
                loaded.holders[name] = Holder.from_bytes(value)
            elif prefix == _ALIAS:
                loaded.aliases[name] = value.decode()
            elif prefix == _REDIRECT:
                loaded.redirects[name] = value.decode()
            elif key == _ENGINE_META:
                loaded.engine_meta = orjson.loads(value)
            elif key == _STAGE_META:
                loaded.stage_meta = orjson.loads(value)
        return loaded

    def save(self, changes: EngineChanges, stage_meta: dict[str, Any]) -> None:
        """Write one consistent checkpoint."""
        if self._db is None:
            raise RuntimeError("checkpoint store is not open")
        batch = WriteBatch(raw_mode=True)
        for key, holder in changes.holders.items():
            if holder is None:
                batch.delete(_HOLDER + key.encode())
            else:
                batch.put(_HOLDER + key.encode(), holder.to_bytes())
        for alias, target in changes.aliases.items():
            if target is None:
                batch.delete(_ALIAS + alias.encode())
            else:
                batch.put(_ALIAS + alias.encode(), target.encode())
        for key, target in changes.redirects.items():
            batch.put(_REDIRECT + key.encode(), target.encode())
        batch.put(_ENGINE_META, orjson.dumps(changes.meta))
        batch.put(_STAGE_META, orjson.dumps(stage_meta))
        self._db.write(batch)

    def close(self) -> None:
        """Release the directory (another process may open it then)."""
        if self._db is not None:
            self._db.close()
            self._db = None
