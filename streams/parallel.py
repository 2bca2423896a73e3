"""The journey partitions of a replay in worker processes (`journeys replay --jobs N`).

The replay's process stays the identity stage: it reads, sorts and runs the
`IdentityRouter` over the events in event-time order, as the streaming
identity stage does. The `PartitionEngine`s run in `jobs` worker processes,
partition `p` in worker `p % jobs`, fed the router's commands in the order
they were made, in the commands' wire form (`engine.commands.to_wire`), as
the journey stage reads them from its topic.

Each partition sees its commands in exactly the order `JourneyEngine` gives
them, absorbs included, so the tables are those of `--jobs 1`: an absorb for
a partition of the same worker is applied at once, as `JourneyEngine` does;
the router's commands are sent in segments that end at each `Release` whose
loser and winner live in different workers, and the absorbs such a release
makes come back through the replay's process at the start of the next
segment, before any later command. The workers apply a segment in parallel;
a replay pays one round trip per such merge.

Each worker keeps the rows its partitions produce until `take()` (pickled
back once per engine step); the replay's process writes them, since the
embedded ClickHouse opens its files in one process only. Workers start with
`spawn`: the replay's process has the embedded engine's threads and the
sink's writer thread running, which a fork would copy half-way.
"""

from __future__ import annotations

import copyreg
import io
import multiprocessing
import pickle
import traceback
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from multiprocessing.connection import Connection
from typing import Any

import orjson

from journeys.schemas.codec import record_values
from journeys.schemas.record import EventRecord, new_record
from journeys.schemas.rows import Output, StoredEvent
from journeys.streams.engine import EngineConfig, PartitionEngine
from journeys.streams.engine.commands import Command, Release, from_wire, partition_of, to_wire

#: (partition, command) pairs, as the router and the partitions' outboxes give them.
Commands = list[tuple[int, Command]]
#: Messages to a worker: apply (absorbs and a segment, pickled), take the rows, stop.
APPLY, TAKE, STOP = b"a", b"t", b""


def _array(items: Iterable[bytes]) -> bytes:
    return b"[" + b",".join(items) + b"]"


def _stored(record: EventRecord, account_id: str | None, late: bool) -> StoredEvent:
    return StoredEvent(record, account_id, late)


#: How rows are pickled: the default for a slotted dataclass looks its fields up for
#: every row, which cost more than the journey work; these rebuild each from its values.
_REDUCERS: dict[type, Any] = {
    EventRecord: lambda r: (new_record, record_values(r)),
    StoredEvent: lambda r: (_stored, (r.record, r.account_id, r.late)),
}


def _dumps(value: Any) -> bytes:
    """`pickle.dumps` with the row reducers."""
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, pickle.HIGHEST_PROTOCOL)
    pickler.dispatch_table = {**copyreg.dispatch_table, **_REDUCERS}
    pickler.dump(value)
    return buffer.getvalue()


class _Worker:
    """The partitions of one worker process: applies commands in order, keeps the
    absorbs between its own partitions, and returns the others."""

    def __init__(self, config: EngineConfig, partitions: int, mine: list[int]) -> None:
        self.parts = {p: PartitionEngine(config, p, partitions) for p in mine}

    def apply(self, absorbs: Commands, segment: bytes) -> Commands:
        """Apply the absorbs sent here, then a segment's [partition, command] pairs; the
        absorbs for other workers."""
        remote: Commands = []
        for partition, command in absorbs:
            self._apply(partition, command, remote)
        for partition, body in orjson.loads(segment):
            self._apply(partition, from_wire(body), remote)
        return remote

    def _apply(self, partition: int, command: Command, remote: Commands) -> None:
        """One command, then at once the absorbs it causes here (as `JourneyEngine` does)."""
        parts = self.parts
        queue = deque([(partition, command)])
        while queue:
            target, command = queue.popleft()
            part = parts[target]
            part.apply(command)
            for sent in part.take_outbox():
                (queue if sent[0] in parts else remote).append(sent)

    def take(self) -> Output:
        """The rows produced since the last call."""
        out = Output()
        for part in self.parts.values():
            out.extend(part.take())
        return out

    def totals(self) -> tuple[int, int]:
        """Duplicates dropped, and accounts with a journey."""
        parts = self.parts.values()
        accounts = sum(1 for p in parts for h in p.holders.values() if h.is_account and h.traj)
        return sum(p.duplicates for p in parts), accounts


def _serve(conn: Connection, config: EngineConfig, partitions: int, mine: list[int]) -> None:
    """A worker process: answers messages until `STOP`, then sends its totals."""
    try:
        worker = _Worker(config, partitions, mine)
        while message := conn.recv_bytes():
            if message[:1] == APPLY:
                absorbs, segment = pickle.loads(message[1:])
                conn.send_bytes(_dumps(("ok", worker.apply(absorbs, segment))))
            else:
                conn.send_bytes(_dumps(("ok", worker.take())))
        conn.send_bytes(pickle.dumps(("ok", worker.totals())))
    except BaseException:  # handed to the replay's process, which raises it
        conn.send_bytes(pickle.dumps(("error", traceback.format_exc())))
    finally:
        conn.close()


class WorkerFailed(RuntimeError):
    """A worker process of a parallel replay failed; the message carries its traceback."""


class PartitionPool:
    """`jobs` worker processes holding the journey partitions of a replay.

    `apply(commands)` carries out the router's commands (and every absorb they
    cause); `take()` returns the rows produced since the last call; `totals()`
    stops the workers. Use as a context manager: leaving it ends the processes.
    """

    def __init__(self, config: EngineConfig, partitions: int, jobs: int) -> None:
        self.partitions = partitions
        self.jobs = jobs
        #: Round trips made: one per segment.
        self.segments = 0
        context = multiprocessing.get_context("spawn")
        self._conns: list[Connection] = []
        self._procs: list[Any] = []
        for job in range(jobs):
            mine = [p for p in range(partitions) if p % jobs == job]
            here, there = context.Pipe()
            proc = context.Process(
                target=_serve, args=(there, config, partitions, mine), name=f"journeys-{job}"
            )
            proc.start()
            there.close()
            self._conns.append(here)
            self._procs.append(proc)

    def apply(self, commands: Commands, meanwhile: Callable[[], object] | None = None) -> None:
        """Carry out the commands in order, each partition's absorbs before its next
        command; `meanwhile()` is called while the workers apply each segment."""
        absorbs: Commands = []
        for segment in self._segments(commands):
            absorbs = self._round(absorbs, segment, meanwhile)
        while absorbs:  # absorbs that cause absorbs (a chain of merges across workers)
            absorbs = self._round(absorbs, [], meanwhile)

    def _segments(self, commands: Commands) -> Iterator[Commands]:
        """The commands cut after each release whose absorb crosses to another worker."""
        start = 0
        for index, (partition, command) in enumerate(commands):
            if isinstance(command, Release) and self._crosses(partition, command.winner):
                yield commands[start : index + 1]
                start = index + 1
        if start < len(commands) or not commands:
            yield commands[start:]

    def _crosses(self, partition: int, winner: str) -> bool:
        return partition % self.jobs != partition_of(winner, self.partitions) % self.jobs

    def _round(
        self, absorbs: Commands, segment: Commands, meanwhile: Callable[[], object] | None
    ) -> Commands:
        """Send each worker the absorbs for it and its part of a segment; the absorbs they
        send on. Router commands travel in their wire form; absorbs pickled, whole (the
        journey state they carry is the partition's own object)."""
        self.segments += 1
        jobs = self.jobs
        sent: list[Commands] = [[] for _ in range(jobs)]
        for pair in absorbs:
            sent[pair[0] % jobs].append(pair)
        wired: list[list[bytes]] = [[] for _ in range(jobs)]
        for partition, command in segment:
            wired[partition % jobs].append(b"[%d,%s]" % (partition, to_wire(command)))
        for conn, mine, wire in zip(self._conns, sent, wired, strict=True):
            conn.send_bytes(APPLY + _dumps((mine, _array(wire))))
        if meanwhile is not None:
            meanwhile()
        out: Commands = []
        for conn in self._conns:
            out += self._answer(conn)
        return out

    def take(self) -> Output:
        """Every worker's rows since the last call."""
        for conn in self._conns:
            conn.send_bytes(TAKE)
        out = Output()
        for conn in self._conns:
            out.extend(self._answer(conn))
        return out

    def totals(self) -> tuple[int, int]:
        """Stop the workers: duplicates dropped, and accounts with a journey, over all."""
        for conn in self._conns:
            conn.send_bytes(STOP)
        answers = [self._answer(conn) for conn in self._conns]
        return sum(a[0] for a in answers), sum(a[1] for a in answers)

    def _answer(self, conn: Connection) -> Any:
        try:
            status, value = pickle.loads(conn.recv_bytes())
        except EOFError as exc:
            raise WorkerFailed("a replay worker process ended without answering") from exc
        if status != "ok":
            raise WorkerFailed(f"a replay worker process failed:\n{value}")
        return value

    def __enter__(self) -> PartitionPool:
        return self

    def __exit__(self, *exc: object) -> None:
        for conn in self._conns:
            conn.close()
        for proc in self._procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.terminate()
                proc.join()
            proc.close()
