"""The in-memory fake of the sink port, for unit tests: every row it was given, in order."""

from __future__ import annotations

from journeys.schemas.rows import Output
from journeys.sinks.reference import FinalTables, final_tables


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

    def final(self) -> FinalTables:
        """What the written rows look like read with FINAL."""
        return final_tables(self.written)
