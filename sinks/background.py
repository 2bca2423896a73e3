"""Any sink on a writer thread of its own, so that writing overlaps the engine's work."""

from __future__ import annotations

import queue
import threading

from journeys.schemas.rows import Output
from journeys.sinks.base import Batching, Sink


class BackgroundSink:
    """Writes through another sink on a thread of its own, so writing overlaps the engine.

    ClickHouse's embedded engine releases the GIL while it inserts, so the
    caller's parsing and journey work go on meanwhile. At most `depth` outputs
    wait; the writer flushes the inner sink when it is `due` (`Batching`), so
    memory stays bounded; `flush()` returns once everything given so far is
    written, and raises the writer's error if there was one (at the next
    `add()` too). Outputs given after an error are still buffered in the inner
    sink, which keeps a failed batch: a `flush()` that succeeds later writes
    them all, so an error never loses rows.
    """

    def __init__(self, inner: Sink, depth: int = 2) -> None:
        self._inner = inner
        self._queue: queue.Queue[Output | None] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def setup(self) -> None:
        """Set up the inner sink and start the writer thread."""
        self._inner.setup()
        self._thread = threading.Thread(target=self._run, name="sink-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            output = self._queue.get()
            try:
                if output is None:
                    self._inner.flush()
                else:
                    self._inner.add(output)
                    if isinstance(self._inner, Batching) and self._inner.due:
                        self._inner.flush()
            except BaseException as exc:  # handed to the caller at the next flush
                self._error = exc
            finally:
                self._queue.task_done()

    def add(self, output: Output) -> None:
        """Queue rows for the writer (blocks while `depth` outputs wait)."""
        self._raise()
        self._queue.put(output)

    def flush(self) -> None:
        """Wait until everything queued is written."""
        self._queue.put(None)
        self._queue.join()
        self._raise()

    def close(self) -> None:
        """Flush, then close the inner sink."""
        self.flush()
        self._inner.close()

    def _raise(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error
