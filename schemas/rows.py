"""What the journey engine produces and the sinks store (contract sections 4 and 5).

Times are milliseconds since the epoch, UTC. Every row carries what makes
its write idempotent: a deterministic key and a `version` that only grows,
so writing the same rows twice, or a newer row over an older one, leaves one
row per key when ClickHouse tables are read with FINAL.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field

from journeys.schemas.record import EventRecord


@dataclass(slots=True)
class StoredEvent:
    """An event as stored: the record, the account it was attributed to, whether it was late."""

    record: EventRecord
    account_id: str | None
    late: bool = False


@dataclass(slots=True, frozen=True)
class TransitionRow:
    """A phase change of an account. Keyed by (account_id, to_phase): a journey enters a
    phase at most once. A retroactive identity merge may move or remove a transition;
    the newer version wins and `deleted` marks one that no longer happened."""

    account_id: str
    from_phase: str | None
    to_phase: str
    transitioned_at: int
    event_id: str
    event_type: str
    channel: str
    version: int
    deleted: bool = False
    #: The generation of derived rows it belongs to (see `GenerationRow`).
    generation: int = 0
    #: A copy into a new generation of a transition the previous one had as it is: stored,
    #: not published again on the public topic.
    restated: bool = False


@dataclass(slots=True, frozen=True)
class JourneyRow:
    """The latest state of one account's journey; the highest version is current.
    `deleted` marks an account that was merged into another (its identity learnt later).

    `engagement` is the account's engagement score just after its last activity event
    (`engagement_at`, ms; None without one), rounded to 6 decimals; the rules it was
    computed with travel along (half-life in ms, `warm` and `hot` thresholds; 0 when
    the score is off), so a reader can decay it to any later moment and tier it
    (`analytics_engagement`). New fields go last: rows are lists of their fields on
    the wire, and older messages still read."""

    account_id: str
    phase: str
    phase_since: int
    first_seen: int
    last_seen: int
    last_activity: int | None
    events: int
    contacts: int
    dmu_roles: tuple[str, ...]
    segment: str | None
    version: int
    deleted: bool = False
    engagement: float = 0.0
    engagement_at: int | None = None
    engagement_half_life_ms: int = 0
    engagement_warm: float = 0.0
    engagement_hot: float = 0.0
    #: The generation of derived rows it belongs to (see `GenerationRow`).
    generation: int = 0


@dataclass(slots=True, frozen=True)
class AlertRow:
    """An alert raised (and later, when the episode ends, resolved) in event time.

    The highest `version` of an `alert_id` is current. `withdrawn` marks an alert that
    late data showed never happened (a new version, so readers and alert consumers see
    the correction); `resolved_at` marks one whose episode ended."""

    alert_id: str
    kind: str
    account_id: str
    raised_at: int
    details: str
    version: int
    resolved_at: int | None = None
    withdrawn: bool = False
    #: The generation of derived rows it belongs to (see `GenerationRow`).
    generation: int = 0
    #: A copy into a new generation of an alert the previous one had as it is: stored, not
    #: delivered again (only what new rules raise, move or withdraw is).
    restated: bool = False

    @property
    def status(self) -> str:
        """`raised`, `resolved` or `withdrawn`: what a consumer of the alerts topic acts on."""
        if self.withdrawn:
            return "withdrawn"
        return "raised" if self.resolved_at is None else "resolved"


@dataclass(slots=True, frozen=True)
class IdentityLink:
    """An alias learnt to belong to an account, from the moment `linked_at` on.

    `kind` is `anonymous_id`, `contact_id` or `email` (events carrying that alias and
    stored without an account now belong to `account_id`), or `account` (an account
    merged into another: events stored under the alias account move to `account_id`)."""

    kind: str
    alias: str
    account_id: str
    linked_at: int


@dataclass(slots=True, frozen=True)
class DeadLetterRow:
    """Rejected input with its reason and the original bytes.

    Its id is where the input was read and what it held: one row per rejected input
    (the same bytes at two positions are two rows, so counts are true), and the same
    input read again from the same position (a redelivered message, a file replayed
    again) is the same row.
    """

    dead_letter_id: str
    received_at: int
    reason: str
    payload: bytes
    source: str

    @classmethod
    def of(
        cls,
        payload: bytes,
        reason: str,
        source: str,
        received_at: int,
        position: str | None = None,
        sha256: str | None = None,
    ) -> DeadLetterRow:
        """A dead letter keyed by `position` (where the input was read: `source` unless
        given, e.g. `topic:partition:offset` or `file:line`) and its bytes' SHA-256
        (`sha256`, hex, of the whole input when `payload` holds only its beginning)."""
        digest = sha256 or hashlib.sha256(payload).hexdigest()
        where = source if position is None else position
        text = f"{where}\n{digest}".encode(errors="surrogatepass")
        key = hashlib.blake2b(text, digest_size=12).hexdigest()
        return cls("dl_" + key, received_at, reason, payload, source)

    @staticmethod
    def fresh_position() -> str:
        """A position for input that cannot be read again from where it came (an item of
        an HTTP request): random, so each rejected item is a row of its own."""
        return "request:" + secrets.token_hex(12)


@dataclass(slots=True, frozen=True)
class GenerationRow:
    """Journey partition `partition` (of `partitions`) holds generation `generation`: every
    journey, transition and alert it derives is computed with the rules `rules` (TOML
    text; `rules_hash` its SHA-256) and written under that generation from now on.

    Derived rows (transitions, journeys, alerts) carry the generation of the rules they
    were computed with. `journeys rebuild --rules FILE` starts a new one; the `_current`
    views show the newest generation every partition has reached, so they switch to it
    at once when the last partition reports."""

    generation: int
    partition: int
    partitions: int
    rules_hash: str
    rules: str


@dataclass(slots=True)
class Output:
    """Everything one engine step produced, in the order it happened."""

    events: list[StoredEvent] = field(default_factory=list)
    transitions: list[TransitionRow] = field(default_factory=list)
    journeys: list[JourneyRow] = field(default_factory=list)
    alerts: list[AlertRow] = field(default_factory=list)
    links: list[IdentityLink] = field(default_factory=list)
    dead_letters: list[DeadLetterRow] = field(default_factory=list)
    generations: list[GenerationRow] = field(default_factory=list)

    def extend(self, other: Output) -> None:
        """Append another step's output to this one."""
        self.events.extend(other.events)
        self.transitions.extend(other.transitions)
        self.journeys.extend(other.journeys)
        self.alerts.extend(other.alerts)
        self.links.extend(other.links)
        self.dead_letters.extend(other.dead_letters)
        self.generations.extend(other.generations)

    def __len__(self) -> int:
        return (
            len(self.events)
            + len(self.transitions)
            + len(self.journeys)
            + len(self.alerts)
            + len(self.links)
            + len(self.dead_letters)
            + len(self.generations)
        )
