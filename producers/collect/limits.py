"""What one request may cost the collector: bytes held, time to arrive, items, event size.

Write keys are public (they sit in web pages), so anyone can send the
collector anything. These bounds keep one request, and all of them
together, small:

- Body: `collect_max_body` bytes after decompression (413); provider
  webhooks, signed and batched by their senders, may carry up to
  `WEBHOOK_MAX_BODY`. Bad gzip is a 400, not a failure of
  the collector.
- Time: the body must arrive within `collect_read_timeout` (408, and the
  connection is closed); a connection that never completes its headers is
  closed by the server's keep-alive timer, set to the same time.
- Bytes held at once: `Budget` counts the bodies being handled (their
  Content-Length, or the body limit when it is unknown) against
  `collect_max_inflight`; past it a request is answered 503 with
  Retry-After at once, before its body is read.
- Items: a batch of more than `collect_max_batch_items` is a 400 (split it).
- Event size: one event of more than `collect_max_event` bytes is a 400 when
  it is the whole request, and a dead letter (truncated, with its size and
  hash) when it is one item of a batch.

JSON: orjson first; a body it refuses only for NaN, Infinity or a number too
large for a double is read again by Python's parser, so that each event
holding such a value becomes a dead letter with its reason instead of the
whole request failing (or the value silently becoming null).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import re
from typing import Any

import orjson
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from journeys.producers.collect.guard import Rejected
from journeys.schemas.rows import DeadLetterRow
from journeys.schemas.settings import Settings

#: The body limit of provider webhooks, signed and batched by their senders.
WEBHOOK_MAX_BODY = 1024 * 1024
#: Seconds a client is asked to wait when the collector holds too many bodies.
BUSY_RETRY_AFTER = 1
#: Per-item errors listed in an answer; the counts always cover every item.
MAX_LISTED_ERRORS = 100
#: The deepest nesting an item may have once parsed leniently (Python's parser recurses).
_MAX_DEPTH = 200


class Budget:
    """Request body bytes held at once, over all requests of one collector."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self, size: int) -> None:
        """Hold `size` bytes, or raise `Rejected(503)`; a request alone always passes."""
        if self.used and self.used + size > self.limit:
            raise Rejected(
                503, "the collector is busy; retry shortly", retry_after=BUSY_RETRY_AFTER
            )
        self.used += size

    def give(self, size: int) -> None:
        """Release what `take` held."""
        self.used = max(0, self.used - size)


def body_size(request: web.Request, limit: int) -> int:
    """What a request's body will hold: its Content-Length, capped by the limit."""
    length = request.content_length
    return limit if length is None else min(length, limit)


async def read_body(request: web.Request, settings: Settings) -> bytes:
    """The request's body, decompressed; 408 when it does not arrive in time, 400 when it
    cannot be decoded (413 comes from aiohttp's own limit)."""
    try:
        async with asyncio.timeout(settings.collect_read_timeout / 1000):
            return await request.read()
    except TimeoutError:
        raise Rejected(
            408,
            f"the body did not arrive within {settings.collect_read_timeout / 1000:g}s",
            close=True,
        ) from None
    except (RequestPayloadError, HttpProcessingError) as exc:
        reason = getattr(exc, "message", None) or str(exc)
        raise Rejected(400, f"unreadable body: {str(reason).strip()}", close=True) from exc


#: A digit run long enough to pass 64 bits: orjson would read it as a float, silently.
_LONG_DIGITS = re.compile(rb"\d{19,}")


def parse_json(raw: bytes) -> tuple[Any, bool]:
    """The parsed body and whether it is plain JSON; `Rejected(400)` when it is not JSON.

    `False` means it holds NaN, Infinity or a number past a double: its items
    must go through `unrepresentable` before they are kept.
    """
    error: Exception | None = None
    if not _LONG_DIGITS.search(raw):
        try:
            return orjson.loads(raw), True
        except orjson.JSONDecodeError as exc:
            error = exc
    try:  # exact integers (orjson reads a long digit run as a lossy float), NaN, Infinity
        return json.loads(raw), False
    except (ValueError, RecursionError) as exc:
        raise Rejected(400, f"malformed JSON: {error or exc}") from exc


def unrepresentable(value: Any, where: str = "", depth: int = 0) -> str | None:
    """Why a leniently parsed value cannot be stored as JSON (NaN, Infinity, an integer past
    64 bits, a lone surrogate, nesting too deep), with where it sits; None when it can."""
    if depth > _MAX_DEPTH:
        return f"{where or 'the event'}: nested too deeply"
    if isinstance(value, float) and not math.isfinite(value):
        return f"{where or 'the event'}: {value!r} is not a JSON number (NaN or Infinity)"
    if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**64:
        return f"{where or 'the event'}: the integer does not fit in 64 bits"
    if isinstance(value, str):
        return None if _unicode(value) else f"{where or 'the event'}: not valid Unicode"
    if isinstance(value, dict):
        if not all(_unicode(key) for key in value if isinstance(key, str)):
            return f"{where or 'the event'}: a key is not valid Unicode"
        items: Any = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        problem = unrepresentable(item, f"{where}.{key}" if where else str(key), depth + 1)
        if problem:
            return problem
    return None


def _unicode(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def item_bytes(value: Any, strict: bool = True) -> bytes:
    """The bytes kept with a dead letter for one item of an already-parsed body."""
    if strict:
        try:
            return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)
        except TypeError:
            pass
    try:
        return json.dumps(value).encode()  # NaN and Infinity written as Python's parser read them
    except (TypeError, ValueError, RecursionError):
        return repr(value).encode(errors="replace")


def dead_letter(
    payload: bytes, reason: str, source: str, received_at: int, limit: int
) -> DeadLetterRow:
    """A dead letter; a payload over `limit` bytes keeps its first `limit` bytes, and the reason
    names its size and SHA-256, so the rejected input can still be recognised."""
    if len(payload) > limit:
        digest = hashlib.sha256(payload).hexdigest()
        reason = f"{reason} (payload of {len(payload)} bytes truncated to {limit}; sha256 {digest})"
        payload = payload[:limit]
    return DeadLetterRow.of(payload, reason, source, received_at)
