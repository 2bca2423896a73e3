"""The collector's OpenAPI description (served at /openapi.json), built from what it enforces.

It describes exactly the gate each endpoint applies to a request (see
`handlers`): a body that fits the schema is answered 200 (invalid events in
it become dead letters, listed in `errors`), one that does not is a 400.
The Segment message's field types come from `segment.FIELDS`, the batch
limit from the settings, so the description and the checks cannot drift
apart. Event-level rules (identity, time range, ...) are the contract's
event schema, given as `components.schemas.Event` for producers.
"""

from __future__ import annotations

from typing import Any

from journeys.producers.collect.handlers import CALLS, SHORT_CALLS
from journeys.producers.collect.privacy import ADMIN_SCHEME, FORGET_PATH, forget_path_item
from journeys.producers.collect.segment import BATCH_FIELDS, FIELDS
from journeys.schemas.event import event_json_schema
from journeys.schemas.settings import Settings

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string"}},
}
_RESULT = {
    "type": "object",
    "required": ["success", "accepted", "rejected", "errors"],
    "properties": {
        "success": {"type": "boolean"},
        "accepted": {"type": "integer", "minimum": 0},
        "rejected": {"type": "integer", "minimum": 0},
        "errors": {
            "type": "array",
            "description": "the first 100 invalid items, each stored as a dead letter",
            "items": {
                "type": "object",
                "required": ["index", "error"],
                "properties": {"index": {"type": "integer"}, "error": {"type": "string"}},
            },
        },
        "duplicate": {"type": "boolean", "description": "a signed request already stored"},
        "ignored": {"type": "string", "description": "a provider topic the collector does not map"},
    },
}
_RETRY_AFTER = {"Retry-After": {"schema": {"type": "string"}, "required": True}}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _error(description: str, retry: bool = False) -> dict[str, Any]:
    answer: dict[str, Any] = {"description": description, "content": _json(_ERROR)}
    if retry:
        answer["headers"] = _RETRY_AFTER
    return answer


def _answers(*extra: str) -> dict[str, Any]:
    """The answers of a POST endpoint; `extra` adds 409 (signed webhooks) and 429 (write keys)."""
    answers = {
        "200": {
            "description": "stored: Kafka acknowledged the events and the dead letters",
            "content": _json(_RESULT),
        },
        "400": _error("malformed JSON, a body of the wrong shape, too many items, too large"),
        "401": _error("missing or unknown write key; a bad, stale or missing signature"),
        "408": _error("the body did not arrive in time"),
        "413": _error("body over the limit"),
        "503": _error("Kafka did not acknowledge or is down, or the collector is busy", True),
    }
    if "409" in extra:
        answers["409"] = _error("the same signed request is being stored right now", True)
    if "429" in extra:
        answers["429"] = _error("over the write key's rate", True)
    return answers


def _nullable(kinds: tuple[str, ...]) -> dict[str, Any]:
    return {"type": [*kinds, "null"]}


def segment_message_schema() -> dict[str, Any]:
    """One Segment call: the known fields' JSON types (others are free)."""
    return {
        "type": "object",
        "description": "A Segment tracking-API message (track, page, screen, identify, group, "
        "alias). Each known field must have the JSON type given (or be null); times are "
        "ISO 8601 strings. An event that cannot be made of it is stored as a dead letter "
        "and listed in `errors`.",
        "properties": {name: _nullable(kinds) for name, kinds in FIELDS.items()},
    }


def segment_batch_schema(max_items: int) -> dict[str, Any]:
    """`{"batch": [...]}`: any items (each is checked on its own), at most `max_items`."""
    return {
        "type": "object",
        "required": ["batch"],
        "properties": {
            "batch": {
                "type": "array",
                "maxItems": max_items,
                "description": "Segment messages (see SegmentMessage); an item that is not "
                "one becomes a dead letter",
                "items": {},
            },
            **{name: _nullable(kinds) for name, kinds in BATCH_FIELDS.items()},
        },
    }


def _post(
    summary: str,
    schema: dict[str, Any],
    content_type: str = "application/json",
    security: bool = True,
    headers: tuple[str, ...] = (),
    extra: tuple[str, ...] = (),
) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": summary,
        "requestBody": {"required": True, "content": {content_type: {"schema": schema}}},
        "responses": _answers(*extra),
    }
    if security:
        operation["security"] = [{"writeKey": []}]
    if headers:
        operation["parameters"] = [
            {"name": name, "in": "header", "required": True, "schema": {"type": "string"}}
            for name in headers
        ]
    return operation


_PREFLIGHT = {"summary": "CORS preflight", "responses": {"204": {"description": "allowed"}}}


def _segment(summary: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"post": _post(summary, schema, extra=("429",)), "options": _PREFLIGHT}


def _get(summary: str, content: dict[str, Any] | None = None) -> dict[str, Any]:
    answer: dict[str, Any] = {"description": summary}
    if content is not None:
        answer["content"] = content
    return {"get": {"summary": summary, "responses": {"200": answer}}}


def _settings_path() -> dict[str, Any]:
    return {
        "get": {
            "summary": "analytics.js settings whose Segment.io integration posts to this "
            "collector (set `cdnURL` to the collector)",
            "parameters": [
                {"name": "writeKey", "in": "path", "required": True, "schema": {"type": "string"}}
            ],
            "responses": {
                "200": {
                    "description": "settings for @segment/analytics-next",
                    "content": _json({"type": "object", "required": ["integrations"]}),
                },
                "400": _error("no public URL is set and the Host header is not a host name"),
                "404": _error("unknown write key"),
            },
        }
    }


def openapi_document(settings: Settings) -> dict[str, Any]:
    """The OpenAPI 3.1 description of a collector running with `settings`."""
    message = {"$ref": "#/components/schemas/SegmentMessage"}
    batch = {"$ref": "#/components/schemas/SegmentBatch"}
    many = settings.collect_max_batch_items
    return {
        "openapi": "3.1.0",
        "info": {"title": "journeys collector", "version": "1"},
        "components": {
            "securitySchemes": {
                "adminKey": ADMIN_SCHEME,
                "writeKey": {
                    "type": "http",
                    "scheme": "basic",
                    "description": "write key as the user (or `writeKey` in the JSON body, "
                    "as analytics.js sends it)",
                },
            },
            "schemas": {
                "SegmentMessage": segment_message_schema(),
                "SegmentBatch": segment_batch_schema(many),
                "Event": event_json_schema(),
            },
        },
        "paths": {
            **{f"/v1/{call}": _segment(f"Segment {call} call", message) for call in CALLS},
            **{
                f"/v1/{short}": _segment(f"Segment {call} call (analytics.js path)", message)
                for short, call in SHORT_CALLS.items()
            },
            "/v1/batch": _segment("Segment batch", batch),
            "/v1/import": _segment("Segment import (same as batch)", batch),
            "/v1/b": _segment("Segment batch (analytics.js batching path)", batch),
            "/v1/projects/{writeKey}/settings": _settings_path(),
            FORGET_PATH: forget_path_item(),
            "/webhooks/orders": {
                "post": _post(
                    "Contract events (components.schemas.Event) from an ERP or shop: one "
                    "object or an array; an invalid event becomes a dead letter",
                    {"oneOf": [{"type": "object"}, {"type": "array", "maxItems": many}]},
                    extra=("429",),
                )
            },
            "/webhooks/sendgrid": {
                "post": _post(
                    "SendGrid Event Webhook: ECDSA-signed, timestamp within the tolerance",
                    {"type": "array"},
                    security=False,
                    headers=(
                        "X-Twilio-Email-Event-Webhook-Signature",
                        "X-Twilio-Email-Event-Webhook-Timestamp",
                    ),
                    extra=("409",),
                )
            },
            "/webhooks/mandrill": {
                "post": _post(
                    "Mandrill webhook (form field mandrill_events, HMAC-SHA1-signed)",
                    {
                        "type": "object",
                        "required": ["mandrill_events"],
                        "properties": {"mandrill_events": {"type": "string"}},
                    },
                    "application/x-www-form-urlencoded",
                    security=False,
                    headers=("X-Mandrill-Signature",),
                ),
                **_get("Mandrill's URL check (HEAD too)"),
            },
            "/webhooks/shopify": {
                "post": _post(
                    "Shopify orders/create and checkouts/create (HMAC-SHA256-signed; a topic "
                    "the signed body does not fit is a 400 and a dead letter)",
                    {},
                    security=False,
                    headers=("X-Shopify-Hmac-Sha256", "X-Shopify-Topic"),
                )
            },
            "/health": _get(
                "liveness, and whether Kafka is known to be down",
                _json(
                    {
                        "type": "object",
                        "required": ["status", "kafka"],
                        "properties": {
                            "status": {"const": "ok"},
                            "kafka": {"enum": ["up", "down"]},
                        },
                    }
                ),
            ),
            "/metrics": _get("Prometheus metrics", {"text/plain": {"schema": {"type": "string"}}}),
            "/openapi.json": _get("this document", _json({"type": "object"})),
        },
    }
