"""What the identity router tells journey partitions, and what partitions tell each other.

Every command carries `seq`, its sender's Lamport sequence (see
`partition.PartitionEngine`). On Kafka a command is a JSON list whose first
item names it (`to_wire` / `from_wire`); events travel as the list of their
fields (`schemas.codec.record_values`).

    Route    ["r", seq, key, rank, contacts, late, event]   router -> key's partition
    Release  ["x", seq, loser, winner, rank, at]            router -> loser's partition
    Expect   ["e", seq, loser, winner, at]                  router -> winner's partition
    Absorb   ["b", seq, loser, winner, rank, at, holder, expects, parts]
                                                            loser's -> winner's partition
    AbsorbPart ["p", seq, loser, winner, number, chunk]     loser's -> winner's partition
    Forget   ["f", seq, key]                                router -> key's partition
    Contacts ["c", seq, key, contacts]                      router -> key's partition
    Advance  ["t", seq, ts]                                 router -> every partition
    Erase    ["d", seq, key, event_ids]                     router -> key's partition
    Rebuild  ["g", seq, generation, rules]                  router -> every partition

An absorb's `holder` is the released journey's small record (`Holder.to_bytes`);
its archive travels ahead of it as `parts` `AbsorbPart`s, one chunk each, so no
command outgrows a message however long the journey's history (a chunk is at
most ~128 KiB, the small record ~256 KiB). The winner's partition keeps the
parts until their absorb comes, in the same topic partition, behind them.

A message of the identity stage starts with its number, `["n", number]` (`mark`), so
a journey partition applies a message sent again once (see `journeys.streams.stage`).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

import orjson

from journeys.schemas.codec import record_from_values, record_values
from journeys.schemas.record import EventRecord
from journeys.streams.engine.state import Holder

#: The first item of a numbered message.
MARK = "n"


def mark(number: int) -> bytes:
    """The item that numbers a message of the identity stage."""
    return b'["n",%d]' % number


def partition_of(key: str, partitions: int) -> int:
    """The partition of journey `key` (CRC-32 of its UTF-8 bytes: the same in every process)."""
    return zlib.crc32(key.encode()) % partitions if partitions > 1 else 0


@dataclass(frozen=True, slots=True, init=False)
class Route:
    """`event` belongs to journey `key`, of `rank`, with `contacts` contacts; `late` when
    it came after event time passed it.

    One is made per event: its `__init__` stores the slots through their descriptors, at
    half the cost of a frozen dataclass's (`object.__setattr__` per field); it stays
    frozen, equal and hashed like the others."""

    seq: int
    key: str
    rank: int
    contacts: int
    late: bool
    event: EventRecord

    def __init__(
        self, seq: int, key: str, rank: int, contacts: int, late: bool, event: EventRecord
    ) -> None:
        set_seq, set_key, set_rank, set_contacts, set_late, set_event = _ROUTE_SLOTS
        set_seq(self, seq)
        set_key(self, key)
        set_rank(self, rank)
        set_contacts(self, contacts)
        set_late(self, late)
        set_event(self, event)


#: The setters of `Route`'s slots, in field order.
_ROUTE_SLOTS: Any = tuple(getattr(Route, name).__set__ for name in Route.__slots__)


@dataclass(frozen=True, slots=True)
class Release:
    """Journey `loser` is `winner`'s (of `rank`), learnt at event time `at`."""

    seq: int
    loser: str
    winner: str
    rank: int
    at: int


@dataclass(frozen=True, slots=True)
class Expect:
    """Journey `loser`'s state is on its way to `winner` (merged at event time `at`): keep
    the window back until it arrives (see `PartitionEngine`)."""

    seq: int
    loser: str
    winner: str
    at: int


@dataclass(frozen=True, slots=True)
class Absorb:
    """Fold the released journey `holder` (once `loser`; None when the loser's partition
    had nothing left of it) into `winner`. `expects`: absorbs the loser itself was still
    waiting for, (loser, at) pairs, which follow it to the winner. `parts`: how many
    archive chunks of the holder came ahead as `AbsorbPart`s (0: the holder is whole)."""

    seq: int
    loser: str
    winner: str
    rank: int
    at: int
    holder: Holder | None
    expects: tuple[tuple[str, int], ...] = ()
    parts: int = 0


@dataclass(frozen=True, slots=True)
class AbsorbPart:
    """Archive chunk `number` of the journey `loser` released to `winner`: its `Absorb`
    follows (see the module docstring)."""

    seq: int
    loser: str
    winner: str
    number: int
    chunk: bytes


@dataclass(frozen=True, slots=True)
class Forget:
    """The visitor `key` was not seen for the visitor TTL: its state goes."""

    seq: int
    key: str


@dataclass(frozen=True, slots=True)
class Contacts:
    """Journey `key` has `contacts` contacts now."""

    seq: int
    key: str
    contacts: int


@dataclass(frozen=True, slots=True)
class Advance:
    """Event time reached `ts`: deadlines up to it fire."""

    seq: int
    ts: int


@dataclass(frozen=True, slots=True)
class Erase:
    """The events `event_ids` of journey `key` are erased (a person was forgotten): the
    journey becomes what it would be had they never come."""

    seq: int
    key: str
    event_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Rebuild:
    """Derive every journey again with `rules` (a rules file's TOML text) and write it, and
    everything after, as generation `generation` (`journeys rebuild`)."""

    seq: int
    generation: int
    rules: str


Command = (
    Route | Release | Expect | Absorb | AbsorbPart | Forget | Contacts | Advance | Erase | Rebuild
)


def to_wire(command: Command) -> bytes:
    """One command as a JSON list."""
    c = command
    body: list[Any]
    if isinstance(c, Route):
        body = ["r", c.seq, c.key, c.rank, c.contacts, c.late, record_values(c.event)]
    elif isinstance(c, Advance):
        body = ["t", c.seq, c.ts]
    elif isinstance(c, Release):
        body = ["x", c.seq, c.loser, c.winner, c.rank, c.at]
    elif isinstance(c, Expect):
        body = ["e", c.seq, c.loser, c.winner, c.at]
    elif isinstance(c, Absorb):
        holder = None if c.holder is None else orjson.Fragment(c.holder.to_bytes())
        body = ["b", c.seq, c.loser, c.winner, c.rank, c.at, holder, c.expects, c.parts]
    elif isinstance(c, AbsorbPart):
        body = ["p", c.seq, c.loser, c.winner, c.number, orjson.Fragment(c.chunk)]
    elif isinstance(c, Forget):
        body = ["f", c.seq, c.key]
    elif isinstance(c, Erase):
        body = ["d", c.seq, c.key, list(c.event_ids)]
    elif isinstance(c, Rebuild):
        body = ["g", c.seq, c.generation, c.rules]
    else:
        body = ["c", c.seq, c.key, c.contacts]
    return orjson.dumps(body)


def from_wire(body: list[Any]) -> Command:
    """The inverse of `to_wire`, from the decoded JSON list."""
    kind = body[0]
    if kind == "r":
        _, seq, key, rank, contacts, late, values = body
        return Route(seq, key, rank, contacts, late, record_from_values(values))
    if kind == "t":
        return Advance(body[1], body[2])
    if kind == "x":
        return Release(*body[1:6])
    if kind == "e":
        return Expect(*body[1:5])
    if kind == "b":
        _, seq, loser, winner, rank, at, holder, expects, *more = body
        state = None if holder is None else Holder.from_bytes(orjson.dumps(holder), loser)
        parts = more[0] if more else 0
        return Absorb(seq, loser, winner, rank, at, state, tuple((k, t) for k, t in expects), parts)
    if kind == "p":
        _, seq, loser, winner, number, chunk = body
        return AbsorbPart(seq, loser, winner, number, orjson.dumps(chunk))
    if kind == "f":
        return Forget(body[1], body[2])
    if kind == "c":
        return Contacts(body[1], body[2], body[3])
    if kind == "d":
        return Erase(body[1], body[2], tuple(body[3]))
    if kind == "g":
        return Rebuild(body[1], body[2], body[3])
    raise ValueError(f"unknown journey command {kind!r}")
