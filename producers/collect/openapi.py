"""The collector's OpenAPI description (served at /openapi.json)."""

from __future__ import annotations

from typing import Any

from journeys.producers.collect.handlers import CALLS, SHORT_CALLS
from journeys.schemas.event import event_json_schema

_RESULT = {
    "type": "object",
    "properties": {
        "success": {"type": "boolean"},
        "accepted": {"type": "integer"},
        "rejected": {"type": "integer"},
        "errors": {"type": "array", "items": {"type": "object"}},
    },
}
_ERROR = {"type": "object", "properties": {"error": {"type": "string"}}}
_ANSWERS = {
    "200": {
        "description": "stored (Kafka acknowledged)",
        "content": {"application/json": {"schema": _RESULT}},
    },
    "400": {
        "description": "malformed JSON or an invalid event",
        "content": {"application/json": {"schema": _ERROR}},
    },
    "401": {"description": "missing or unknown write key, or a bad signature"},
    "413": {"description": "body over the limit"},
    "429": {"description": "over the write key's rate limit (Retry-After)"},
    "503": {"description": "Kafka did not acknowledge; retry (Retry-After)"},
}


_PREFLIGHT = {"summary": "CORS preflight", "responses": {"204": {"description": "allowed"}}}


def _post(
    summary: str, content_type: str = "application/json", security: bool = True, cors: bool = False
) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": summary,
        "requestBody": {
            "required": True,
            "content": {content_type: {"schema": {"type": "object"}}},
        },
        "responses": _ANSWERS,
    }
    if security:
        operation["security"] = [{"writeKey": []}]
    return {"post": operation, "options": _PREFLIGHT} if cors else {"post": operation}


OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "journeys collector", "version": "1"},
    "components": {
        "securitySchemes": {
            "writeKey": {
                "type": "http",
                "scheme": "basic",
                "description": "write key as the user (or `writeKey` in the JSON body, "
                "as analytics.js sends it)",
            }
        },
        "schemas": {"Event": event_json_schema()},
    },
    "paths": {
        **{f"/v1/{call}": _post(f"Segment {call} call", cors=True) for call in CALLS},
        **{
            f"/v1/{short}": _post(f"Segment {call} call (analytics.js path)", cors=True)
            for short, call in SHORT_CALLS.items()
        },
        "/v1/batch": _post("Segment batch: {batch: [calls]}", cors=True),
        "/v1/import": _post("Segment import (same as batch)", cors=True),
        "/v1/b": _post("Segment batch (analytics.js batching path)", cors=True),
        "/webhooks/orders": _post("Contract events from an ERP or shop: one object or an array"),
        "/webhooks/sendgrid": _post("SendGrid Event Webhook (ECDSA-signed)", security=False),
        "/webhooks/mandrill": {
            **_post(
                "Mandrill webhook (form field mandrill_events, HMAC-SHA1-signed)",
                "application/x-www-form-urlencoded",
                security=False,
            ),
            "get": {
                "summary": "Mandrill's URL check (HEAD too)",
                "responses": {"200": {"description": "ok"}},
            },
        },
        "/webhooks/shopify": _post(
            "Shopify orders/create and checkouts/create (HMAC-SHA256-signed)", security=False
        ),
        "/health": {"get": {"summary": "liveness", "responses": {"200": {"description": "ok"}}}},
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "responses": {"200": {"description": "text format"}},
            }
        },
        "/openapi.json": {
            "get": {"summary": "this document", "responses": {"200": {"description": "OpenAPI"}}}
        },
    },
}
