"""The sink port: what every writer of the engine's output offers.

A sink buffers with `add()`, writes with `flush()`, connects in `setup()`
(never in `__init__`, never at import) and lets go in `close()`. Writes are
idempotent: flushing the same rows twice leaves the same tables. `add()`
never writes: `flush()` is the one write path, so the caller that waits out
outages (the sink process's retry) covers every write; a failed flush keeps
its rows for the next. A sink that may buffer too much says so with `due`
(`Batching`); callers that add many steps between flushes flush then.

The adapters live beside the port: `journeys.sinks.clickhouse` (the real
store), `journeys.sinks.memory` (the in-memory fake for unit tests) and
`journeys.sinks.background` (any sink on a writer thread of its own);
`journeys.sinks.reference` says what the stored tables must show.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from journeys.schemas.rows import Output


class Sink(Protocol):
    """Where the engine's output goes."""

    def setup(self) -> None:
        """Connect and make sure the schema is there."""

    def add(self, output: Output) -> None:
        """Buffer rows (never writes)."""

    def flush(self) -> None:
        """Write everything buffered; raise `SinkUnavailable` if it could not (the rows stay
        buffered for the next flush)."""

    def close(self) -> None:
        """Flush and release the connection."""


@runtime_checkable
class Batching(Protocol):
    """A sink whose buffer has a size at which it should be flushed."""

    @property
    def due(self) -> bool:
        """Whether the buffer is large enough to flush now."""
