"""Rows on Kafka topics: the public JSON of transitions, alerts and dead letters,
and the internal envelope that carries every row type to the sink in order.

Public messages are JSON objects with ISO 8601 UTC times, for any consumer.
The internal `rows` topic carries `{"t": kind, ...}` objects with times in
milliseconds; `decode_row` turns them back into the dataclasses of
`schemas.rows`.
"""

from __future__ import annotations

import base64
from typing import Any

import orjson

from journeys.schemas.record import EventRecord, format_ms
from journeys.schemas.rows import (
    AlertRow,
    DeadLetterRow,
    IdentityLink,
    JourneyRow,
    StoredEvent,
    TransitionRow,
)

Row = StoredEvent | TransitionRow | JourneyRow | AlertRow | IdentityLink | DeadLetterRow


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
        }
    )


def dead_letter_json(row: DeadLetterRow) -> bytes:
    """The public message of rejected input (`journeys.dead-letters`)."""
    body: dict[str, Any] = {
        "dead_letter_id": row.dead_letter_id,
        "received_at": format_ms(row.received_at),
        "received_at_ms": row.received_at,
        "reason": row.reason,
        "source": row.source,
    }
    try:
        body["payload"] = row.payload.decode("utf-8")
    except UnicodeDecodeError:
        body["payload_base64"] = base64.b64encode(row.payload).decode()
    return orjson.dumps(body)


def decode_dead_letter(raw: bytes) -> DeadLetterRow:
    """A dead letter from its public message."""
    body = orjson.loads(raw)
    payload = (
        body["payload"].encode("utf-8")
        if "payload" in body
        else base64.b64decode(body.get("payload_base64", ""))
    )
    return DeadLetterRow(
        body["dead_letter_id"], int(body["received_at_ms"]), body["reason"], payload, body["source"]
    )


def encode_row(row: Row) -> bytes:
    """A row of any kind as an internal `rows` message."""
    if isinstance(row, StoredEvent):
        record = row.record
        return orjson.dumps(
            {
                "t": "event",
                "e": [
                    record.event_id, record.channel, record.type, record.ts, record.anonymous_id,
                    record.contact_id, record.email, record.account_id, record.dmu_role,
                    record.segment, record.properties, record.context,
                ],
                "a": row.account_id,
                "l": row.late,
            }
        )
    if isinstance(row, DeadLetterRow):
        return b'{"t":"dead_letter","v":' + dead_letter_json(row) + b"}"
    kind = _KINDS[type(row)]
    return orjson.dumps({"t": kind, "v": [getattr(row, name) for name in _FIELDS[kind]]})


def decode_rows(raw: bytes) -> list[Row]:
    """The rows in an internal `rows` message: one row, or a packed JSON array of them."""
    body = orjson.loads(raw)
    return [_row(item) for item in body] if isinstance(body, list) else [_row(body)]


def decode_row(raw: bytes) -> Row:
    """The row in an internal `rows` message holding one row."""
    return _row(orjson.loads(raw))


def _row(body: dict[str, Any]) -> Row:
    kind = body["t"]
    if kind == "event":
        return StoredEvent(EventRecord(*body["e"]), body["a"], body["l"])
    if kind == "dead_letter":
        return decode_dead_letter(orjson.dumps(body["v"]))  # rare: keep one decoder
    values = body["v"]
    if kind == "journey":
        values[8] = tuple(values[8])  # dmu_roles
    return _CLASSES[kind](*values)


_CLASSES: dict[str, type] = {
    "transition": TransitionRow,
    "journey": JourneyRow,
    "alert": AlertRow,
    "link": IdentityLink,
}
_KINDS = {cls: kind for kind, cls in _CLASSES.items()}
_FIELDS = {kind: cls.__dataclass_fields__.keys() for kind, cls in _CLASSES.items()}  # type: ignore[attr-defined]
