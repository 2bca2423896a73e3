"""Alert webhooks: where each alert goes, what is sent, how it is signed, when to retry.

Pure functions and values; `sinks.notifier` does the I/O. The request a
receiver gets (docs/alerts.md has the receiver's side):

    POST <url>
    Content-Type: application/json
    Idempotency-Key: <alert_id>:<version>:<status>
    X-Journeys-Event: alert.raised | alert.resolved | alert.withdrawn
    X-Journeys-Timestamp: <unix seconds of this attempt>
    X-Journeys-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>." + body)>

    {"idempotency_key": ..., "event": ..., "correction": bool, "text": ..., "alert": {...}}

`alert` is the message from `journeys.alerts` as it was published. A
withdrawal (`correction: true`) says an alert sent earlier never happened.
A `slack+https://...` route gets a Slack incoming-webhook message instead
(`text` and `blocks`), with the same headers; every value taken from an
event is escaped there (`&`, `<`, `>`), so an account id such as
`<!channel>` is shown as text and never pings or links.

`check_routes` refuses, at start-up, URLs whose host is a loopback,
link-local, private or metadata address (`sinks.webhook_addresses`).
"""

from __future__ import annotations

import hashlib
import hmac
import random
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import orjson

from journeys.schemas.errors import ConfigError
from journeys.sinks.webhook_addresses import ALLOW_HINT, host_problem

SLACK_PREFIX = "slack+"
ANY_KIND = "*"
#: A comma starts the next route only before `kind=` and a URL (query strings keep theirs).
_ROUTE_SPLIT = re.compile(r",(?=\s*[A-Za-z0-9_.*-]+\s*=\s*(?:slack\+)?[A-Za-z][A-Za-z0-9+.-]*://)")


@dataclass(frozen=True)
class Target:
    """One webhook: its URL and the message format it takes (`json` or `slack`)."""

    url: str
    fmt: str = "json"

    @property
    def safe_url(self) -> str:
        """The URL without credentials or query (for logs and dead letters)."""
        parts = urlsplit(self.url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{host}{port}{parts.path}"


@dataclass(frozen=True)
class Routes:
    """Targets per alert kind; kinds without their own go to the `*` targets."""

    by_kind: dict[str, tuple[Target, ...]]

    def targets(self, kind: str) -> tuple[Target, ...]:
        """Where an alert of `kind` goes (nowhere if neither it nor `*` has a route)."""
        return self.by_kind.get(kind) or self.by_kind.get(ANY_KIND, ())

    def __bool__(self) -> bool:
        return any(self.by_kind.values())


def parse_routes(text: str) -> Routes:
    """Routes from `kind=URL,kind=URL,*=URL` (JOURNEYS_ALERT_WEBHOOKS); a kind may repeat."""
    by_kind: dict[str, list[Target]] = {}
    for item in _ROUTE_SPLIT.split(text.strip()) if text.strip() else []:
        kind, sep, url = item.partition("=")
        kind, url = kind.strip(), url.strip()
        if not sep or not kind or not url:
            raise ConfigError(
                f"JOURNEYS_ALERT_WEBHOOKS: {item.strip()!r} is not kind=URL "
                "(example: cart_abandoned=https://crm.example/hook,*=https://ops.example/hook)"
            )
        fmt = "json"
        if url.startswith(SLACK_PREFIX):
            fmt, url = "slack", url.removeprefix(SLACK_PREFIX)
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"JOURNEYS_ALERT_WEBHOOKS: {url!r} for {kind} is not an http(s) URL")
        by_kind.setdefault(kind, []).append(Target(url, fmt))
    return Routes({kind: tuple(targets) for kind, targets in by_kind.items()})


def check_routes(routes: Routes, allow_private: bool) -> None:
    """`ConfigError` for a route to a metadata host, or a non-public one unless allowed.

    Names are resolved only when connecting, where every address is checked
    again (`sinks.webhook_delivery.GuardedResolver`)."""
    for kind, targets in routes.by_kind.items():
        for target in targets:
            host = urlsplit(target.url).hostname or ""
            problem = host_problem(host, allow_private)
            if problem:
                hint = "" if "metadata" in problem else f"; {ALLOW_HINT}"
                raise ConfigError(
                    f"JOURNEYS_ALERT_WEBHOOKS: {target.safe_url} for {kind} points at "
                    f"{problem} ({host}): refused{hint}"
                )


@dataclass(frozen=True)
class Alert:
    """An alert message from `journeys.alerts`, with what delivery needs from it."""

    raw: bytes
    body: dict[str, Any]

    @classmethod
    def parse(cls, raw: bytes) -> Alert:
        """`ValueError` for a message that is not an alert."""
        body = orjson.loads(raw)
        if not isinstance(body, dict) or not all(
            k in body for k in ("alert_id", "kind", "account_id")
        ):
            raise ValueError("not an alert message (needs alert_id, kind, account_id)")
        return cls(raw, body)

    @property
    def kind(self) -> str:
        """The alert's kind (`cart_abandoned`, `deal_stalled`, ...)."""
        return str(self.body["kind"])

    @property
    def status(self) -> str:
        """`raised`, `resolved` or `withdrawn`."""
        status = self.body.get("status")
        if status:
            return str(status)
        if self.body.get("withdrawn"):
            return "withdrawn"
        return "resolved" if self.body.get("resolved_at") else "raised"

    @property
    def key(self) -> str:
        """The idempotency key: one per alert version and status."""
        return f"{self.body['alert_id']}:{self.body.get('version', 1)}:{self.status}"


def describe(alert: Alert) -> str:
    """One human sentence about the alert, for people reading chat or mail."""
    b, kind = alert.body, alert.kind
    account = b["account_id"]
    details = b.get("details")
    d: dict[str, Any] = details if isinstance(details, dict) else {}
    title = kind.replace("_", " ").capitalize()
    if kind == "cart_abandoned":
        what = (
            f"{title}: account {account} added items to the cart from "
            f"{d.get('cart_started_at', '?')}, "
            f"last at {d.get('last_cart_activity_at', '?')}, and has not checked out or ordered"
        )
    elif kind == "deal_stalled":
        what = (
            f"{title}: account {account} in {d.get('phase', '?')} has an open deal since "
            f"{d.get('open_since', '?')} and no activity since {d.get('last_activity_at') or '?'}"
        )
    elif kind == "account_hot":
        what = (
            f"{title}: account {account} in {d.get('phase') or '?'} reached an engagement "
            f"score of {d.get('score', '?')} (hot from {d.get('hot', '?')}): a good moment to call"
        )
    else:
        facts = ", ".join(f"{k} {v}" for k, v in d.items())
        what = f"{title}: account {account}" + (f" ({facts})" if facts else "")
    status = alert.status
    if status == "resolved" and kind == "account_hot":
        return (
            f"Resolved at {b.get('resolved_at')}: account {account} has cooled below "
            f"{d.get('warm', '?')} engagement points."
        )
    if status == "withdrawn":
        return (
            f"Correction: the {kind} alert for account {account} raised at {b.get('raised_at')} "
            "is withdrawn; later data showed it never happened. Please disregard it."
        )
    if status == "resolved":
        return f"Resolved at {b.get('resolved_at')}: {what[0].lower()}{what[1:]}."
    return f"{what} (raised at {b.get('raised_at')})."


_MRKDWN = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;"})


def mrkdwn_escape(text: str) -> str:
    """Text that Slack shows as written: its control characters `&`, `<`, `>` escaped."""
    return text.translate(_MRKDWN)


def _escaped(value: Any) -> Any:
    """`value` with every string in it (keys too) escaped for Slack."""
    if isinstance(value, str):
        return mrkdwn_escape(value)
    if isinstance(value, dict):
        return {_escaped(k): _escaped(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_escaped(v) for v in value]
    return value


def message(alert: Alert, target: Target) -> bytes:
    """The request body for one target."""
    if target.fmt == "slack":
        return _slack_message(Alert(alert.raw, _escaped(alert.body)))
    return orjson.dumps(
        {
            "idempotency_key": alert.key,
            "event": f"alert.{alert.status}",
            "correction": alert.status == "withdrawn",
            "text": describe(alert),
            "alert": orjson.Fragment(alert.raw),
        }
    )


def _slack_message(alert: Alert) -> bytes:
    """A Slack message for an alert whose values are already escaped."""
    text = describe(alert)
    icon = {
        "raised": ":rotating_light:",
        "resolved": ":white_check_mark:",
        "withdrawn": ":leftwards_arrow_with_hook:",
    }
    return orjson.dumps(
        {
            "text": text,
            "blocks": [
                {
                    "type": "section",
                    "text": {"type": "mrkdwn", "text": f"{icon.get(alert.status, '')} {text}"},
                },
                {
                    "type": "context",
                    "elements": [{"type": "mrkdwn", "text": f"{alert.kind} · {alert.key}"}],
                },
            ],
        }
    )


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """`v1=<hex>`: HMAC-SHA256 over `<timestamp>.` followed by the body."""
    digest = hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"v1={digest}"


def verify(
    secret: bytes, timestamp: str, body: bytes, signature: str, now: float, tolerance: float = 300
) -> bool:
    """A receiver's check: the signature matches and the timestamp is recent."""
    try:
        moment = int(timestamp)
    except ValueError:
        return False
    if abs(now - moment) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, moment, body), signature)


def headers(
    alert: Alert, body: bytes, timestamp: int, attempt: int, secret: bytes | None
) -> dict[str, str]:
    """The headers of one delivery attempt (signed when there is a secret)."""
    out = {
        "Content-Type": "application/json",
        "User-Agent": "journeys-notify",
        "Idempotency-Key": alert.key,
        "X-Journeys-Event": f"alert.{alert.status}",
        "X-Journeys-Timestamp": str(timestamp),
        "X-Journeys-Attempt": str(attempt),
    }
    if secret:
        out["X-Journeys-Signature"] = sign(secret, timestamp, body)
    return out


#: Answers worth another attempt; any other 4xx means the receiver refuses this message.
RETRY_STATUSES = frozenset({408, 425, 429})


#: The shortest wait a `Retry-After` may ask for: `Retry-After: 0` must not make a hot loop.
RETRY_AFTER_FLOOR = 1.0


def retry_after(value: str | None, cap: float) -> float | None:
    """The wait a `Retry-After` header asks for, within [RETRY_AFTER_FLOOR, cap] seconds.

    None when there is none or it is an HTTP date (the backoff applies then).
    The floor wins over a smaller cap."""
    if not value:
        return None
    try:
        asked = float(value)
    except ValueError:
        return None
    if asked != asked:  # NaN
        return None
    return max(RETRY_AFTER_FLOOR, min(cap, asked))


def retryable(status: int) -> bool:
    """Whether an HTTP answer says "try again later"."""
    return status in RETRY_STATUSES or status >= 500


def backoff(attempt: int, first: float, cap: float, rng: random.Random | None = None) -> float:
    """Seconds to wait after failed attempt `attempt` (1, 2, ...): capped exponential, jittered.

    The wait doubles from `first` up to `cap`; each is drawn from its upper
    half so receivers recovering from an outage are not hit all at once."""
    ceiling = min(cap, first * 2 ** (attempt - 1))
    return ceiling * (0.5 + 0.5 * (rng or random).random())
