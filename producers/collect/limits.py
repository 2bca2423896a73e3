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
- Bytes held at once: `Budget` counts the body bytes actually read (a
  `Hold` per request grows as its body streams in, and is given back when
  the answer is sent) against `collect_max_inflight`; a request is
  checked (write key in the header, webhook configured and signed) before
  its first byte is read, and past the budget it is answered 503 with
  Retry-After and closed. A Segment call may carry its write key only in
  the JSON: such bodies are read first and together hold at most a quarter
  of the budget until their key is found. A declared Content-Length, a chunked body or a
  connection sending a byte now and then holds only what arrived.
- Client gone: a client that leaves mid-body is answered (to no one) with
  the non-standard status 499, counted, and not logged as a failure.
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
import logging
import math
import re
from dataclasses import dataclass
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
#: Bodies read before their caller is checked hold at most this fraction (1/N) of the budget.
UNVERIFIED_SHARE = 4
#: Per-item errors listed in an answer; the counts always cover every item.
MAX_LISTED_ERRORS = 100
#: The deepest nesting an item may have once parsed leniently (Python's parser recurses).
_MAX_DEPTH = 200


#: The status counted for a client that left before its body arrived (nginx's "client closed").
CLIENT_GONE = 499


class Budget:
    """Request body bytes held at once, over all requests of one collector.

    Bytes of bodies read before their caller is known (a Segment call whose
    write key is only in the JSON) may hold at most `1 / UNVERIFIED_SHARE` of
    the limit together, so callers nobody vouched for never take it all.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.unverified = 0

    def take(self, size: int, own: int = 0, verified: bool = True) -> None:
        """Hold `size` more bytes for a request already holding `own`, or raise
        `Rejected(503)`; a request alone (no other holds anything) always passes."""
        over = self.used > own and self.used + size > self.limit
        if not verified:
            share = self.limit // UNVERIFIED_SHARE
            over = over or (self.unverified > own and self.unverified + size > share)
        if over:
            raise Rejected(
                503,
                "the collector is busy; retry shortly",
                retry_after=BUSY_RETRY_AFTER,
                close=True,
            )
        self.used += size
        if not verified:
            self.unverified += size

    def give(self, size: int, verified: bool = True) -> None:
        """Release what `take` held."""
        self.used = max(0, self.used - size)
        if not verified:
            self.unverified = max(0, self.unverified - size)


@dataclass
class Hold:
    """One request's share of the budget: the body bytes it has read so far, and whether its
    caller was checked (write key in the header, webhook signature present) before reading."""

    budget: Budget
    held: int = 0
    verified: bool = False

    def grow(self, size: int) -> None:
        """Hold `size` more bytes (`Rejected(503)` past the budget)."""
        self.budget.take(size, self.held, self.verified)
        self.held += size

    def verify(self) -> None:
        """The caller is now known: its bytes no longer count against the unverified share."""
        if not self.verified:
            self.budget.unverified = max(0, self.budget.unverified - self.held)
            self.verified = True

    def release(self) -> None:
        """Give back everything held (once the answer is sent)."""
        self.budget.give(self.held, self.verified)
        self.held = 0


async def read_body(request: web.Request, settings: Settings, hold: Hold, limit: int) -> bytes:
    """The request's body, decompressed, at most `limit` bytes, each chunk held against the
    budget as it arrives: 413 over the limit (before reading when Content-Length says so),
    408 when it does not arrive within `collect_read_timeout`, 400 when it cannot be decoded,
    499 when the client left."""
    declared = request.content_length
    if declared is not None and declared > limit:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=declared)
    seconds = settings.collect_read_timeout / 1000
    body = bytearray()
    try:
        async with asyncio.timeout(seconds):
            while chunk := await request.content.readany():
                if len(body) + len(chunk) > limit:
                    raise web.HTTPRequestEntityTooLarge(
                        max_size=limit, actual_size=len(body) + len(chunk)
                    )
                hold.grow(len(chunk))
                body += chunk
    except TimeoutError:
        raise Rejected(408, f"the body did not arrive within {seconds:g}s", close=True) from None
    except ConnectionResetError:
        raise Rejected(CLIENT_GONE, "the client left before its body arrived", close=True) from None
    except (RequestPayloadError, HttpProcessingError) as exc:
        reason = getattr(exc, "message", None) or str(exc)
        raise Rejected(400, f"unreadable body: {str(reason).strip()}", close=True) from exc
    return bytes(body)


class ServerLog:
    """aiohttp's server log (its `logger` handler argument), with a client's malformed request
    (bad header, chunk or Content-Encoding, undecodable gzip) as one debug line instead of an
    error and its traceback: anyone can send those, as fast as they like, before any key is
    checked, and each used to write 10 to 30 lines to the log."""

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger

    def debug(self, msg: str, *args: Any, **kwargs: Any) -> None:
        """As `logging.Logger.debug`."""
        self.logger.debug(msg, *args, **kwargs)

    def exception(self, msg: str, *args: Any, exc_info: Any = True, **kwargs: Any) -> None:
        """As `logging.Logger.exception`, but one debug line for a client's malformed request."""
        if isinstance(exc_info, (HttpProcessingError, RequestPayloadError)):
            first = str(exc_info).strip().splitlines()
            self.logger.debug("malformed request: %s", first[0] if first else type(exc_info))
            return
        self.logger.exception(msg, *args, exc_info=exc_info, **kwargs)


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
    payload: bytes,
    reason: str,
    source: str,
    received_at: int,
    limit: int,
    position: str | None = None,
) -> DeadLetterRow:
    """A dead letter; a payload over `limit` bytes keeps its first `limit` bytes, and the reason
    names its size and SHA-256, so the rejected input can still be recognised. It is keyed by
    `position` (e.g. request id and item index) or a fresh random one: every rejected item is
    a row of its own, so identical items are counted, not merged."""
    digest = None
    if len(payload) > limit:
        digest = hashlib.sha256(payload).hexdigest()
        reason = f"{reason} (payload of {len(payload)} bytes truncated to {limit}; sha256 {digest})"
        payload = payload[:limit]
    where = position or DeadLetterRow.fresh_position()
    return DeadLetterRow.of(payload, reason, source, received_at, position=where, sha256=digest)
