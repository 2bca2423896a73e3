"""What the collector checks and changes before it keeps anything: write keys, rates, privacy.

- Write keys: the basic-auth user (as Segment's SDKs send it) or, as Segment
  also accepts, `writeKey` in the JSON body; compared in constant time.
- Rate: a token bucket per write key, refilled at `collect_rate_limit`
  events per second and holding two seconds' worth. A batch bigger than the
  bucket is let through when the bucket is full and leaves it in debt, so a
  large batch is slowed down, never refused for ever.
- Privacy: `collect_hash_emails` replaces the local part of every email with
  its SHA-256 (the domain stays, so the company is still known and the same
  person still links); `collect_truncate_ip` keeps an IPv4 /24 or an IPv6 /48.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import math
import time
from dataclasses import dataclass, field
from typing import Any

from journeys.schemas.settings import Settings


class Rejected(Exception):
    """A request answered with an error status and a JSON body `{"error": message, **extra}`;
    `close` ends the connection after the answer (a body that never came, or cannot be read)."""

    def __init__(self, status: int, message: str, *, close: bool = False, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.message, self.extra, self.close = status, message, extra, close


def basic_user(authorization: str | None) -> str:
    """The user part of a basic-auth header ('' when there is none)."""
    if not authorization or not authorization.lower().startswith("basic "):
        return ""
    try:
        return base64.b64decode(authorization[6:].strip(), validate=False).decode().split(":", 1)[0]
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return ""


def known_key(keys: frozenset[str], given: str) -> bool:
    """Whether `given` is one of `keys`, in time that does not depend on how much of it matches.

    Every key is compared, by digest (equal lengths), with `hmac.compare_digest`.
    """
    digest = hashlib.sha256(given.encode(errors="surrogatepass")).digest()
    found = False
    for key in keys:
        found |= hmac.compare_digest(digest, hashlib.sha256(key.encode()).digest())
    return found


def check_write_key(settings: Settings, authorization: str | None, body: Any = None) -> str:
    """The write key the request carries; `Rejected(401)` when it is missing or unknown."""
    keys = settings.write_key_set
    if not keys:
        raise Rejected(401, "the collector has no write keys configured (JOURNEYS_WRITE_KEYS)")
    given = basic_user(authorization)
    if given and known_key(keys, given):
        return given
    in_body = body.get("writeKey") if isinstance(body, dict) else None
    if isinstance(in_body, str) and in_body and known_key(keys, in_body):
        return in_body
    raise Rejected(401, "missing or unknown write key (send it as the basic-auth user)")


@dataclass
class RateLimiter:
    """Token buckets per write key; `rate` events per second (0: no limit)."""

    rate: float
    burst_seconds: float = 2.0
    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict)

    def take(self, key: str, events: int, now: float | None = None) -> None:
        """Take `events` tokens or raise `Rejected(429)` with the seconds to wait."""
        if not self.rate or events <= 0:
            return
        now = time.monotonic() if now is None else now
        capacity = self.rate * self.burst_seconds
        tokens, last = self._buckets.get(key, (capacity, now))
        tokens = min(capacity, tokens + (now - last) * self.rate)
        if tokens < min(events, capacity):
            self._buckets[key] = (tokens, now)
            wait = (min(events, capacity) - tokens) / self.rate
            raise Rejected(
                429, "rate limit exceeded for this write key", retry_after=max(1, math.ceil(wait))
            )
        self._buckets[key] = (tokens - events, now)


def hash_email(email: str) -> str:
    """`jan@acme.nl` → `<sha256 of jan, 32 hex>@acme.nl`: private, still linkable, same company."""
    local, _, domain = email.strip().lower().rpartition("@")
    return hashlib.sha256(local.encode()).hexdigest()[:32] + "@" + domain


def truncate_ip(ip: str) -> str | None:
    """The network of an address (IPv4 /24, IPv6 /48); None for something that is not one."""
    try:
        address = ipaddress.ip_address(ip.strip())
    except ValueError:
        return None
    prefix = 24 if address.version == 4 else 48
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False).network_address)


def client_ip(forwarded_for: str | None, remote: str | None) -> str | None:
    """The end user's address: the first X-Forwarded-For hop, else the peer unless it is local.

    Trusting X-Forwarded-For gives nothing away: the body's `context.ip`, which
    Segment's server SDKs send, is taken as given anyway.
    """
    if forwarded_for:
        first = forwarded_for.split(",", 1)[0].strip()
        if first:
            return first
    if remote and remote not in ("127.0.0.1", "::1"):
        return remote
    return None


def apply_privacy(settings: Settings, event: dict[str, Any], ip: str | None) -> dict[str, Any]:
    """The event with the configured privacy rules applied (and `ip` filled in when absent)."""
    email = event.get("email")
    if settings.collect_hash_emails and isinstance(email, str) and "@" in email:
        event["email"] = hash_email(email)
    context = event.get("context")
    if context is None and ip is not None:
        context = event["context"] = {}
    if not isinstance(context, dict):
        return event
    given = context.get("ip") if isinstance(context.get("ip"), str) else ip
    if given and settings.collect_truncate_ip:
        given = truncate_ip(given)
    if given:
        context["ip"] = given
    else:
        context.pop("ip", None)
    return event
