"""What the collector checks and changes before it keeps anything: write keys, rates, privacy.

- Write keys: the basic-auth user (as Segment's SDKs send it) or, as Segment
  also accepts, `writeKey` in the JSON body; compared in constant time.
- Rate: a token bucket per write key, refilled at `collect_rate_limit`
  events per second (default 1000) and holding two seconds' worth. A batch
  bigger than the bucket is let through when the bucket is full and leaves
  it in debt, so a large batch is slowed down, never refused for ever.
- Client address: `X-Forwarded-For` is believed only when the peer is one
  of `collect_trusted_proxies` (none by default), walking its hops from the
  right past the trusted ones; otherwise the address is the peer's. What is
  stored as `context.ip` is always an IP address (`ipaddress` parses it,
  and writes it back in its normal form); anything else is dropped.
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


Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def trusted_networks(text: str) -> tuple[Network, ...]:
    """The networks of a comma-separated list of IPs and CIDRs (`10.0.0.0/8, ::1`);
    ValueError names an entry that is neither."""
    networks = []
    for entry in (part.strip() for part in text.split(",")):
        if entry:
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                raise ValueError(f"{entry!r} is not an IP address or CIDR network") from None
    return tuple(networks)


def _address(text: str | None) -> Address | None:
    """`text` as an IP address (an IPv4-mapped IPv6 one as IPv4); None when it is not one."""
    try:
        address = ipaddress.ip_address((text or "").strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _trusted(address: Address, proxies: tuple[Network, ...]) -> bool:
    return any(address in network for network in proxies)


def client_ip(
    forwarded_for: str | None, remote: str | None, proxies: tuple[Network, ...] = ()
) -> str | None:
    """The end user's address, always a valid IP or None.

    From a trusted proxy: the right-most `X-Forwarded-For` hop that is not a
    trusted proxy itself (a hop that is not an address ends the walk: None);
    from anyone else the header is ignored and the peer's address is used,
    unless it is loopback (a local proxy nobody configured: the user is unknown).
    """
    peer = _address(remote)
    if peer is None:
        return None
    if forwarded_for and _trusted(peer, proxies):
        hops = [hop.strip() for hop in forwarded_for.split(",")]
        for hop in reversed(hops):
            address = _address(hop)
            if address is None:
                return None
            if not _trusted(address, proxies):
                return str(address)
        return str(_address(hops[0]))
    return None if peer.is_loopback else str(peer)


def valid_ip(value: object) -> str | None:
    """An IP address in its normal form, or None for anything that is not one."""
    address = _address(value) if isinstance(value, str) else None
    return None if address is None else str(address)


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
    given = valid_ip(context.get("ip")) or valid_ip(ip)  # never `<script>`, only an address
    if given and settings.collect_truncate_ip:
        given = truncate_ip(given)
    if given:
        context["ip"] = given
    else:
        context.pop("ip", None)
    return event
