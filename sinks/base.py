"""The sink port: what every writer of the engine's output offers.

A sink buffers with `add()`, writes with `flush()`, connects in `setup()`
(never in `__init__`, never at import) and lets go in `close()`. Writes are
idempotent: flushing the same rows twice leaves the same tables.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Protocol

from journeys.schemas.rows import IdentityLink, Output, StoredEvent


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

    def final(self) -> FinalTables:
        """What the written rows look like read with FINAL."""
        return final_tables(self.written)


@dataclass(frozen=True)
class FinalTables:
    """The tables as `SELECT ... FINAL` shows them: per key the newest version, deletions gone."""

    events: dict[str, Any]
    transitions: dict[tuple[str, str], Any]
    journeys: dict[str, Any]
    alerts: dict[str, Any]
    links: dict[tuple[str, str], Any]
    dead_letters: dict[str, Any]


def final_tables(output: Output) -> FinalTables:
    """Collapse rows the way the ClickHouse tables do (ReplacingMergeTree read with FINAL)."""

    def newest(rows: list[Any], key: Any, version: Any) -> dict[Any, Any]:
        best: dict[Any, Any] = {}
        for row in rows:
            k = key(row)
            if k not in best or version(row) >= version(best[k]):
                best[k] = row
        return best

    links = newest(output.links, lambda r: (r.kind, r.alias), lambda r: -r.linked_at)
    transitions = newest(output.transitions, lambda r: (r.account_id, r.to_phase), lambda r: r.version)
    journeys = newest(output.journeys, lambda r: r.account_id, lambda r: r.version)
    events = {
        event_id: replace(row, account_id=attributed_account(row, links))
        for event_id, row in newest(output.events, lambda r: r.record.event_id, lambda r: 0).items()
    }
    return FinalTables(
        events=events,
        transitions={k: r for k, r in transitions.items() if not r.deleted},
        journeys={k: r for k, r in journeys.items() if not r.deleted},
        alerts=newest(output.alerts, lambda r: r.alert_id, lambda r: r.version),
        links=links,
        dead_letters=newest(output.dead_letters, lambda r: r.dead_letter_id, lambda r: 0),
    )


def attributed_account(row: StoredEvent, links: dict[tuple[str, str], IdentityLink]) -> str | None:
    """The account a stored event belongs to once identity links are applied.

    An event stored without an account takes the account its contact_id, else
    its anonymous_id, else its email was linked to; an account merged into
    another hands its events on (following the chain).
    """
    account = row.account_id
    if account is None:
        record = row.record
        for kind, alias in (
            ("contact_id", record.contact_id),
            ("anonymous_id", record.anonymous_id),
            ("email", record.email),
        ):
            link = links.get((kind, alias)) if alias else None
            if link is not None:
                account = link.account_id
                break
    seen = set()
    while account is not None and ("account", account) in links and account not in seen:
        seen.add(account)
        account = links[("account", account)].account_id
    return account


class BackgroundSink:
    """Writes through another sink on a thread of its own, so writing overlaps the engine.

    ClickHouse's embedded engine releases the GIL while it inserts, so the
    caller's parsing and journey work go on meanwhile. At most `depth` outputs
    wait; `flush()` returns once everything given so far is written, and
    raises the writer's error if there was one.
    """

    def __init__(self, inner: Sink, depth: int = 2) -> None:
        import queue

        self._inner = inner
        self._queue: queue.Queue[Output | None] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread: Any = None

    def setup(self) -> None:
        """Set up the inner sink and start the writer thread."""
        import threading

        self._inner.setup()
        self._thread = threading.Thread(target=self._run, name="sink-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            output = self._queue.get()
            try:
                if output is None:
                    self._inner.flush()
                elif self._error is None:
                    self._inner.add(output)
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
