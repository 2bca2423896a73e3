"""Signed webhooks that cannot be replayed: timestamp tolerance and a memory of what was stored.

SendGrid signs `timestamp + body`. A captured request stays validly signed
for ever, so, as SendGrid advises:

- `check_timestamp`: the signed timestamp must be whole seconds within
  `collect_signature_tolerance` (5 minutes) of the collector's clock; an
  empty, non-numeric, far past or far future one is refused (401).
- `SeenRequests`: the signed content (timestamp and body, by SHA-256) of
  every request stored in that window is remembered until its timestamp
  leaves the window, so a replay inside it is answered 200 as a duplicate
  and stores nothing. A request is remembered only once it is stored: one
  answered 503 may be sent again. The memory is bounded (`capacity`
  entries, the oldest forgotten first); a replay that outlives its entry
  still dedupes downstream, by the events' ids (`sendgrid:<sg_event_id>`).

Keyed on the signed content, not on the signature: an ECDSA signature can
be altered into another valid one for the same content.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Literal

from journeys.producers.collect.guard import Rejected

#: How many stored requests are remembered at most (about 3 MB).
CAPACITY = 50_000

Seen = Literal["new", "stored", "in flight"]


def check_timestamp(timestamp: str, now: float, tolerance_s: float, provider: str) -> float:
    """The signed timestamp as seconds; `Rejected(401)` when it is not one, or too far from now."""
    text = timestamp.strip()
    if not text.isascii() or not text.isdigit() or len(text) > 12:
        raise Rejected(401, f"{provider} timestamp missing or not whole seconds: {text[:32]!r}")
    moment = float(int(text))
    if abs(now - moment) > tolerance_s:
        raise Rejected(
            401,
            f"{provider} timestamp {text} is more than {tolerance_s:g}s from the collector's "
            "clock (a replayed or delayed request)",
        )
    return moment


def signed_key(timestamp: str, body: bytes) -> bytes:
    """What identifies one signed request: the digest of what was signed."""
    return hashlib.sha256(timestamp.strip().encode() + b"\x00" + body).digest()


class SeenRequests:
    """Signed requests stored (or being stored) whose timestamps are still acceptable."""

    def __init__(self, capacity: int = CAPACITY) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[bytes, tuple[float, bool]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def begin(self, key: bytes, expires: float, now: float) -> Seen:
        """Note a request about to be stored, unless it already was ('stored') or another copy
        is being stored right now ('in flight')."""
        self._expire(now)
        known = self._entries.get(key)
        if known is not None:
            return "stored" if known[1] else "in flight"
        self._entries[key] = (expires, False)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)
        return "new"

    def stored(self, key: bytes) -> None:
        """The request begun with `key` is stored: its replays are duplicates."""
        known = self._entries.get(key)
        if known is not None:
            self._entries[key] = (known[0], True)

    def forget(self, key: bytes) -> None:
        """The request was not stored: let it (or its provider's retry) through again."""
        self._entries.pop(key, None)

    def _expire(self, now: float) -> None:
        while self._entries:
            key, (expires, _) = next(iter(self._entries.items()))
            if expires > now:
                return
            del self._entries[key]
