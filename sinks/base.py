"""The sink port: what every writer of the engine's output offers.

A sink buffers with `add()`, writes with `flush()`, connects in `setup()`
(never in `__init__`, never at import) and lets go in `close()`. Writes are
idempotent: flushing the same rows twice leaves the same tables.
"""

from __future__ import annotations

from typing import Protocol

from schemas.rows import Output


class Sink(Protocol):
    """Where the engine's output goes."""

    def setup(self) -> None:
        """Connect and make sure the schema is there."""

    def add(self, output: Output) -> None:
        """Buffer rows; may flush when the buffer is large."""

    def flush(self) -> None:
        """Write everything buffered; raise `SinkUnavailable` if it could not."""

    def close(self) -> None:
        """Flush and release the connection."""


class MemorySink:
    """An in-memory sink for unit tests: keeps every row it was given, in order."""

    def __init__(self) -> None:
        self.pending = Output()
        self.written = Output()
        self.flushes = 0

    def setup(self) -> None:
        """Nothing to connect to."""

    def add(self, output: Output) -> None:
        """Buffer the rows."""
        self.pending.extend(output)

    def flush(self) -> None:
        """Move buffered rows to `written`."""
        self.written.extend(self.pending)
        self.pending = Output()
        self.flushes += 1

    def close(self) -> None:
        """Flush what is left."""
        self.flush()
