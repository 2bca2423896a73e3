"""The wire format: everything the pipeline puts on Kafka, and the sizes it keeps to.

    journeys.events            raw event JSON (contract section 1), from producers
    journeys.internal.ordered  forwarded events and control messages (idle, drain, forget)
    journeys.internal.rows     engine output rows in the order the sink needs them, packed
    journeys.transitions       public JSON of a phase transition, one per message
    journeys.alerts            public JSON of an alert (raised, resolved, withdrawn)
    journeys.dead-letters      public JSON of rejected input, reason and payload

Internal messages are JSON objects with readable keys, or a JSON array of
such objects (a *pack*). An `EventRecord` travels as a list of its fields in
declaration order (`record_values` / `record_from_values`, the only pair);
other rows as the list of their dataclass fields.

Sizes (documented in docs/streaming.md):

- `MESSAGE_BYTES` (4 MiB): every journeys topic's `max.message.bytes` and
  every producer's `max_request_size`. Input up to this size reaches the
  pipeline, so an oversized event becomes a visible dead letter rather than a
  producer-side error.
- `PACK_BYTES` (900 KiB): packs are closed before they reach this, so they
  pass even a topic left at Kafka's default limit (1 MB).
- `EVENT_BYTES` (512 KiB): a larger event is invalid ("too large").
- `DEAD_LETTER_PAYLOAD_BYTES` (64 KiB): a dead letter carries its payload
  whole up to this size; beyond it, the first 64 KiB, the full size and the
  SHA-256 of the whole, and its reason says so.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, fields, replace
from operator import attrgetter
from typing import Any

import orjson

from journeys.schemas.errors import InvalidEvent
from journeys.schemas.record import EventRecord, format_ms, new_record
from journeys.schemas.rows import (
    AlertRow,
    DeadLetterRow,
    GenerationRow,
    IdentityLink,
    JourneyRow,
    StoredEvent,
    TransitionRow,
)

MESSAGE_BYTES = 4 * 1024 * 1024
PACK_BYTES = 900 * 1024
EVENT_BYTES = 512 * 1024
DEAD_LETTER_PAYLOAD_BYTES = 64 * 1024
#: Longer reasons are cut (a reason quoting its input must not carry the input).
REASON_CHARS = 2_000

Row = (
    StoredEvent
    | TransitionRow
    | JourneyRow
    | AlertRow
    | IdentityLink
    | DeadLetterRow
    | GenerationRow
)

# ------------------------------------------------------------------ event record

RECORD_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(EventRecord))
_record_values = attrgetter(*RECORD_FIELDS)


def record_values(record: EventRecord) -> tuple[Any, ...]:
    """An event record as the tuple of its fields, in declaration order."""
    return _record_values(record)


def record_from_values(values: Sequence[Any]) -> EventRecord:
    """The event record back from `record_values`' output (a JSON list)."""
    return new_record(*values)


def check_event_size(raw: bytes) -> None:
    """Raise `InvalidEvent` for an event larger than `EVENT_BYTES`."""
    if len(raw) > EVENT_BYTES:
        raise InvalidEvent(too_large_reason(len(raw)))


def too_large_reason(size: int) -> str:
    """Why an event of `size` bytes is refused (one wording for every reader of input)."""
    return f"event too large: {size:,} bytes, the limit is {EVENT_BYTES:,}"


# ------------------------------------------------------------------------ packing


def pack(items: Iterable[bytes], limit: int = PACK_BYTES) -> Iterator[bytes]:
    """JSON values packed into JSON arrays of at most `limit` bytes each.

    Order is kept. An item larger than `limit` on its own travels alone in a
    pack of one (callers keep single items below `MESSAGE_BYTES`).
    """
    chunk: list[bytes] = []
    size = 2  # the brackets
    for item in items:
        if chunk and size + len(item) + 1 > limit:
            yield b"[" + b",".join(chunk) + b"]"
            chunk, size = [], 2
        chunk.append(item)
        size += len(item) + 1
    if chunk:
        yield b"[" + b",".join(chunk) + b"]"


def unpack(raw: bytes) -> list[Any]:
    """The JSON objects in a message: a pack's items, or the one object it holds."""
    body = orjson.loads(raw)
    return body if isinstance(body, list) else [body]


# ------------------------------------------------- the ordered topic (ingest -> stage)


@dataclass(frozen=True, slots=True)
class Forwarded:
    """A valid event forwarded by ingest, with where it was read: the source partition
    (of `partitions`) and its offset there, which tells a redelivery from a new event."""

    partition: int
    partitions: int
    offset: int
    record: EventRecord


@dataclass(frozen=True, slots=True)
class Control:
    """A decision taken through the ordered topic, so a re-read repeats it in place.

    `idle`: the source partition is caught up and quiet (sent by its ingest).
    `drain`: every source partition is idle; release everything held.
    `forget`: a person (or company) was erased by `journeys forget` (request `request`):
    `hashes` are the salted hashes of their identifiers, as the suppression list keeps
    them; `event_ids` their stored events that `forget` erased, `accounts` the hashes
    (kind `account_id`) of the accounts those events were stored under, and `version`
    the highest row version `forget` wrote for them (see `forget_json`).
    `rebuild`: derive everything again with the rules `rules` (TOML text) as generation
    `generation` (`journeys rebuild`, see `rebuild_json`).
    """

    kind: str
    partition: int = -1
    partitions: int = 0
    request: str = ""
    hashes: tuple[str, ...] = ()
    accounts: tuple[str, ...] = ()
    event_ids: tuple[str, ...] = ()
    version: int = 0
    generation: int = 0
    rules: str = ""


def forwarded_json(record: EventRecord, partition: int, partitions: int, offset: int) -> bytes:
    """The message ingest forwards for one valid event read at `offset` of `partition`."""
    return orjson.dumps(
        {
            "partition": partition,
            "partitions": partitions,
            "offset": offset,
            "event": record_values(record),
        }
    )


def idle_json(partition: int, partitions: int) -> bytes:
    """Control message: source partition `partition` (of `partitions`) is caught up and quiet."""
    return orjson.dumps({"control": "idle", "partition": partition, "partitions": partitions})


DRAIN_JSON = orjson.dumps({"control": "drain"})
#: Event ids per `forget` message, so each stays far below `PACK_BYTES`.
FORGET_EVENT_IDS = 5_000


def forget_json(
    request: str,
    hashes: Iterable[str],
    accounts: Iterable[str],
    event_ids: Iterable[str],
    version: int = 0,
) -> list[bytes]:
    """Control messages: forget a person (see `Control`). Hashes only, no identifier in
    clear; event ids in pieces of `FORGET_EVENT_IDS`, each message complete in itself."""
    ids = sorted(set(event_ids))
    head = {
        "control": "forget",
        "request": request,
        "hashes": sorted(set(hashes)),
        "accounts": sorted(set(accounts)),
        "version": version,
    }
    pieces = [ids[i : i + FORGET_EVENT_IDS] for i in range(0, len(ids), FORGET_EVENT_IDS)]
    return [orjson.dumps({**head, "event_ids": piece}) for piece in pieces or [[]]]


def rebuild_json(generation: int, rules: str) -> bytes:
    """Control message: every journey partition derives its journeys again with `rules`
    (the rules file's TOML text) and writes them as generation `generation` from then on."""
    return orjson.dumps({"control": "rebuild", "generation": generation, "rules": rules})


def decode_ordered(raw: bytes) -> Iterator[Forwarded | Control]:
    """The forwarded events and control messages in one message of the ordered topic."""
    for body in unpack(raw):
        control = body.get("control")
        if control is None:
            yield Forwarded(
                int(body["partition"]),
                int(body["partitions"]),
                int(body["offset"]),
                record_from_values(body["event"]),
            )
        elif control == "forget":
            yield Control(
                control,
                request=str(body.get("request", "")),
                hashes=tuple(body.get("hashes", ())),
                accounts=tuple(body.get("accounts", ())),
                event_ids=tuple(body.get("event_ids", ())),
                version=int(body.get("version", 0)),
            )
        elif control == "rebuild":
            yield Control(
                control, generation=int(body["generation"]), rules=str(body.get("rules", ""))
            )
        else:
            yield Control(control, int(body.get("partition", -1)), int(body.get("partitions", 0)))


# ------------------------------------------------------------------ public messages


def transition_json(row: TransitionRow) -> bytes:
    """The public message of a phase transition (`journeys.transitions`)."""
    return orjson.dumps(
        {
            "account_id": row.account_id,
            "from_phase": row.from_phase,
            "to_phase": row.to_phase,
            "transitioned_at": format_ms(row.transitioned_at),
            "event_id": row.event_id,
            "event_type": row.event_type,
            "channel": row.channel,
            "version": row.version,
            "deleted": row.deleted,
            "generation": row.generation,
        }
    )


def alert_json(row: AlertRow) -> bytes:
    """The public message of an alert raised, resolved or withdrawn (`journeys.alerts`)."""
    return orjson.dumps(
        {
            "alert_id": row.alert_id,
            "status": row.status,
            "kind": row.kind,
            "account_id": row.account_id,
            "raised_at": format_ms(row.raised_at),
            "resolved_at": format_ms(row.resolved_at) if row.resolved_at is not None else None,
            "details": orjson.Fragment(row.details),
            "version": row.version,
            "withdrawn": row.withdrawn,
            "generation": row.generation,
        }
    )


def fit_dead_letter(row: DeadLetterRow) -> DeadLetterRow:
    """The dead letter as it can travel: a payload over `DEAD_LETTER_PAYLOAD_BYTES` is cut
    to that size, and the reason names the full size and the SHA-256 of the whole.

    The id stays the one computed from the whole payload, so two large inputs that
    share a beginning stay two dead letters.
    """
    reason = row.reason if len(row.reason) <= REASON_CHARS else row.reason[:REASON_CHARS] + "…"
    payload = row.payload
    if len(payload) > DEAD_LETTER_PAYLOAD_BYTES:
        reason = truncated_reason(reason, len(payload), hashlib.sha256(payload).hexdigest())
        payload = payload[:DEAD_LETTER_PAYLOAD_BYTES]
    if reason is row.reason and payload is row.payload:
        return row
    return replace(row, reason=reason, payload=payload)


def truncated_reason(reason: str, size: int, sha256: str) -> str:
    """A dead letter's reason once its payload of `size` bytes (SHA-256 `sha256`, hex) is
    cut to its first `DEAD_LETTER_PAYLOAD_BYTES`: the whole input can still be recognised."""
    return (
        f"{reason} [payload truncated: first {DEAD_LETTER_PAYLOAD_BYTES:,} of "
        f"{size:,} bytes kept, sha256 {sha256}]"
    )


def dead_letter_json(row: DeadLetterRow) -> bytes:
    """The public message of rejected input (`journeys.dead-letters`), always small enough.

    `payload` is the input as text (`payload_base64` when it is not UTF-8);
    `payload_size` and `payload_sha256` describe the whole input, and
    `payload_truncated` says whether `payload` holds only its beginning.
    """
    size, digest = len(row.payload), hashlib.sha256(row.payload).hexdigest()
    fitted = fit_dead_letter(row)
    body: dict[str, Any] = {
        "dead_letter_id": fitted.dead_letter_id,
        "received_at": format_ms(fitted.received_at),
        "received_at_ms": fitted.received_at,
        "reason": fitted.reason,
        "source": fitted.source,
        "payload_size": size,
        "payload_sha256": digest,
        "payload_truncated": len(fitted.payload) < size,
    }
    try:
        body["payload"] = fitted.payload.decode("utf-8")
    except UnicodeDecodeError:
        body["payload_base64"] = base64.b64encode(fitted.payload).decode()
    return orjson.dumps(body)


def decode_dead_letter(raw: bytes) -> DeadLetterRow:
    """A dead letter from its public message (truncated as it travelled)."""
    return _dead_letter(orjson.loads(raw))


def _dead_letter(body: dict[str, Any]) -> DeadLetterRow:
    payload = (
        body["payload"].encode("utf-8")
        if "payload" in body
        else base64.b64decode(body.get("payload_base64", ""))
    )
    return DeadLetterRow(
        body["dead_letter_id"], int(body["received_at_ms"]), body["reason"], payload, body["source"]
    )


# ------------------------------------------------------------ the rows topic (stage -> sink)

_CLASSES: dict[str, type] = {
    "transition": TransitionRow,
    "journey": JourneyRow,
    "alert": AlertRow,
    "link": IdentityLink,
    "generation": GenerationRow,
}
_KINDS = {cls: kind for kind, cls in _CLASSES.items()}
_VALUES = {cls: attrgetter(*(f.name for f in fields(cls))) for cls in _CLASSES.values()}


def encode_row(row: Row) -> bytes:
    """A row of any kind as an item of the internal `rows` topic."""
    if isinstance(row, StoredEvent):
        return orjson.dumps(
            {
                "kind": "event",
                "event": record_values(row.record),
                "account_id": row.account_id,
                "late": row.late,
            }
        )
    if isinstance(row, DeadLetterRow):
        return b'{"kind":"dead_letter","dead_letter":' + dead_letter_json(row) + b"}"
    cls = type(row)
    return orjson.dumps({"kind": _KINDS[cls], "values": _VALUES[cls](row)})


def decode_rows(raw: bytes) -> list[Row]:
    """The rows in one message of the `rows` topic: a pack of them, or one."""
    return [_row(item) for item in unpack(raw)]


def decode_row(raw: bytes) -> Row:
    """The row in an item of the `rows` topic."""
    return _row(orjson.loads(raw))


def _row(body: dict[str, Any]) -> Row:
    kind = body["kind"]
    if kind == "event":
        return StoredEvent(record_from_values(body["event"]), body["account_id"], body["late"])
    if kind == "dead_letter":
        return _dead_letter(body["dead_letter"])
    values = body["values"]
    if kind == "journey":
        values[8] = tuple(values[8])  # dmu_roles
    return _CLASSES[kind](*values)
