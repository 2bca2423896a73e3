"""Per-journey state: what the engine keeps for one account or one unidentified visitor.

A journey's phase history is kept as its *trajectory*: the transitions that
happened, one entry per phase entered, in order. Two trajectories of the same
journey (an anonymous visitor's and the account it turns out to be) merge by
taking, for each phase, the earlier moment it was reached, and keeping only the
entries that still raise the phase. That makes a merge independent of the
order in which identities are learnt.
"""

from __future__ import annotations

from typing import Any

import orjson

#: One trajectory entry: (phase index, ts ms, event_id, event type, channel).
Step = tuple[int, int, str, str, str]

# Ranks of journey holders: which identity wins when two are found to be one.
RANK_ANONYMOUS = 0
RANK_CONTACT = 1
RANK_FREE_MAIL = 2
RANK_DOMAIN = 3
RANK_ACCOUNT = 4
#: Holders of at least this rank are accounts; lower ones are visitors awaiting identity.
ACCOUNT_RANK = RANK_FREE_MAIL

#: At most this many aliases are remembered for an unidentified visitor.
MAX_VISITOR_ALIASES = 16


class Holder:
    """The state of one journey (an account, or a visitor not yet identified)."""

    __slots__ = (
        "key", "rank", "traj", "first_seen", "last_seen", "last_activity", "events",
        "contacts", "dmu", "segment", "version", "cart_start", "cart_last", "cart_armed",
        "cart_alerted", "deal_open", "stall_alerted", "open_alerts", "aliases",
        "sched_cart", "sched_stall", "sched_evict",
    )

    def __init__(self, key: str, rank: int, ts: int) -> None:
        self.key = key
        self.rank = rank
        self.traj: list[Step] = []
        self.first_seen = ts
        self.last_seen = ts
        self.last_activity: int | None = None
        self.events = 0
        self.contacts = 0
        self.dmu = 0
        self.segment: str | None = None
        self.version = 0
        self.cart_start: int | None = None
        self.cart_last = 0
        self.cart_armed = False
        self.cart_alerted = False
        self.deal_open: int | None = None
        self.stall_alerted = False
        #: kind -> (alert_id, raised_at, details JSON) of alerts raised and not yet resolved.
        self.open_alerts: dict[str, tuple[str, int, str]] | None = None
        #: Alias keys of an unidentified visitor, for links and eviction.
        self.aliases: list[str] | None = None
        # Deadlines currently in the engine's timer heap (None when none is).
        self.sched_cart: int | None = None
        self.sched_stall: int | None = None
        self.sched_evict: int | None = None

    @property
    def is_account(self) -> bool:
        """Whether this journey is an account's (rows are written only for accounts)."""
        return self.rank >= ACCOUNT_RANK

    @property
    def phase(self) -> int:
        """Index of the current phase, -1 before the journey started."""
        return self.traj[-1][0] if self.traj else -1

    def to_bytes(self) -> bytes:
        """A compact serialisation (what a persistent table would store)."""
        return orjson.dumps([getattr(self, name) for name in self.__slots__])

    @classmethod
    def from_bytes(cls, data: bytes) -> Holder:
        """The inverse of `to_bytes`."""
        values: list[Any] = orjson.loads(data)
        holder = cls.__new__(cls)
        for name, value in zip(cls.__slots__, values, strict=True):
            setattr(holder, name, value)
        holder.traj = [tuple(step) for step in holder.traj]  # type: ignore[misc]
        if holder.open_alerts is not None:
            holder.open_alerts = {k: tuple(v) for k, v in holder.open_alerts.items()}  # type: ignore[misc]
        return holder


def merge_trajectories(a: list[Step], b: list[Step]) -> list[Step]:
    """The trajectory of one journey made of two: earliest moment per phase, rises only."""
    best: dict[int, Step] = {}
    for step in (*a, *b):
        seen = best.get(step[0])
        if seen is None or (step[1], step[2]) < (seen[1], seen[2]):
            best[step[0]] = step
    merged: list[Step] = []
    for step in sorted(best.values(), key=lambda s: (s[1], s[2], s[0])):
        if not merged or step[0] > merged[-1][0]:
            merged.append(step)
    return merged


def trajectory_rows(traj: list[Step]) -> dict[int, tuple[int, Step]]:
    """Per entered phase: (previous phase index or -1, the step), for diffing."""
    rows: dict[int, tuple[int, Step]] = {}
    previous = -1
    for step in traj:
        rows[step[0]] = (previous, step)
        previous = step[0]
    return rows
