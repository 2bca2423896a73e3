"""The identity stage's part of `journeys forget`: erasure decided in the sequenced input.

`journeys forget` (and the collector's endpoint) put a `forget` control
message on the ordered topic (`journeys.schemas.codec.forget_json`) once the
person's stored events are erased. It names the person by the salted hashes
of the suppression list, never in clear: the identity stage hashes its own
aliases and journey keys under the deployment's salt to find theirs. Because
the message travels in the one sequenced input, a stage that reads it again
after a crash erases the same things at the same place, and every event
after it is judged against it the same way:

- the person's events still held back for ordering are dropped;
- the router forgets their aliases, links and journeys and tells the journey
  partitions to `Forget` and `Erase` (`IdentityRouter.erase`);
- every later event carrying one of their identifiers is dropped as it comes
  out of the ordered topic (`drops`), whether or not the worker's ingest had
  learnt of the request yet: the hashes are kept in the stage's state (keys
  `x:<hash>`, naming nobody).
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping

from journeys.schemas.codec import Control
from journeys.schemas.privacy import PrivacyGate, identifier_hash, identifiers_of
from journeys.schemas.record import EventRecord
from journeys.streams.engine import IdentityRouter, Sequencer
from journeys.streams.engine.router import Erased

#: State keys of the hashes the stage drops events for.
SUPPRESSED = b"x:"
#: At most this many identifiers' verdicts are remembered (then forgotten all at once).
JUDGED = 200_000


class Erasure:
    """Suppressed hashes (from `forget` control messages) under the deployment's salt."""

    def __init__(self, salt: bytes) -> None:
        self.gate = PrivacyGate(salt=salt)
        self._new: set[str] = set()
        #: Identifiers already judged, so the one stream hashes a returning visitor once.
        self._judged: dict[tuple[str, str], bool] = {}

    def restore(self, state: Mapping[bytes, bytes]) -> None:
        """The hashes saved in the stage's state."""
        self.gate.suppress(
            name[len(SUPPRESSED) :].decode() for name in state if name.startswith(SUPPRESSED)
        )

    def drops(self, record: EventRecord) -> bool:
        """Whether the event carries an identifier of someone erased before it came."""
        gate, judged = self.gate, self._judged
        if not gate.suppressed:
            return False
        for pair in identifiers_of(record):
            found = judged.get(pair)
            if found is None:
                if len(judged) >= JUDGED:
                    judged.clear()
                found = judged[pair] = identifier_hash(gate.salt, *pair) in gate.suppressed
            if found:
                return True
        return False

    def apply(
        self, control: Control, router: IdentityRouter, sequencer: Sequencer
    ) -> tuple[int, Erased]:
        """Carry out a `forget` message: how many held-back events of the person it dropped,
        and what the router erased."""
        hashes = set(control.hashes)
        self._new |= hashes - self.gate.suppressed
        self.gate.suppress(hashes)
        self._judged.clear()
        salt = self.gate.salt
        held = _drop_held(sequencer, self.gate)
        accounts = set(control.accounts)
        erased = router.erase(
            lambda kind, value: identifier_hash(salt, kind, value) in hashes,
            control.event_ids,
            (lambda key: identifier_hash(salt, "account_id", key) in accounts)
            if accounts
            else None,
            control.version,
        )
        return held, erased

    def changes(self) -> dict[bytes, bytes | None]:
        """Hashes learnt since the last call, as state to save."""
        out: dict[bytes, bytes | None] = {SUPPRESSED + h.encode(): b"1" for h in self._new}
        self._new = set()
        return out


def _drop_held(sequencer: Sequencer, gate: PrivacyGate) -> int:
    """Remove the suppressed events from the reorder buffer; how many."""
    heap = sequencer._heap  # noqa: SLF001 (the identity stage owns its sequencer)
    kept = [item for item in heap if not gate.is_suppressed(item[3])]
    if len(kept) == len(heap):
        return 0
    heapq.heapify(kept)
    sequencer._heap = kept  # noqa: SLF001
    return len(heap) - len(kept)
