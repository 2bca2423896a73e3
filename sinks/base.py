"""The sink port: what every writer of the engine's output offers.

A sink buffers with `add()`, writes with `flush()`, connects in `setup()`
(never in `__init__`, never at import) and lets go in `close()`. Writes are
idempotent: flushing the same rows twice leaves the same tables.

The adapters live beside the port: `journeys.sinks.clickhouse` (the real
store), `journeys.sinks.memory` (the in-memory fake for unit tests) and
`journeys.sinks.background` (any sink on a writer thread of its own);
`journeys.sinks.reference` says what the stored tables must show.
"""

from __future__ import annotations

from typing import Protocol

from journeys.schemas.rows import Output


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
