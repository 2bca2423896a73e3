"""One alert to one webhook over HTTP: attempts, waits, and when to give up.

`Courier.deliver` posts until the target takes the message (2xx), and raises
`GiveUp` (the dead-letter reason) when the target refuses it (a 4xx other
than 408, 425, 429), redirects (3xx: redirects are never followed, so the
signed body goes only to the configured URL), resolves to an address it may
not reach, or has failed for `JOURNEYS_ALERT_GIVE_UP_AFTER`. Waits between
attempts double up to `JOURNEYS_ALERT_RETRY_MAX`; a `Retry-After` is
honoured between 1 s and that cap.

`open_session` builds the aiohttp session whose resolver (`GuardedResolver`)
checks every address a webhook's name resolves to, each time it connects.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urljoin

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from journeys.sinks.alert_webhooks import (
    Alert,
    Target,
    backoff,
    headers,
    message,
    retry_after,
    retryable,
)
from journeys.sinks.webhook_addresses import ALLOW_HINT, address_problem, host_problem

log = logging.getLogger(__name__)

#: Time for one attempt (connect, send, answer).
REQUEST_TIMEOUT = 10.0
#: The shortest cap on waits, whatever JOURNEYS_ALERT_RETRY_MAX says (no hot loops).
MIN_RETRY_CAP = 1.0


@dataclass
class NotifierProgress:
    """What the notifier has done so far (for tests, logs and metrics)."""

    delivered: int = 0
    attempts: int = 0
    dead_letters: int = 0
    committed: int = 0
    skipped: int = 0
    last: dict[str, str] = field(default_factory=dict)


class GiveUp(Exception):
    """A target that will not take this message; the reason goes to the dead letter."""


class ForbiddenAddress(OSError):
    """A webhook's name resolved to an address it may not reach (aiohttp wraps it)."""


class GuardedResolver(AbstractResolver):
    """aiohttp's resolver, refusing names that resolve to a forbidden address (SSRF, rebinding)."""

    def __init__(self, allow_private: bool, inner: AbstractResolver | None = None) -> None:
        self._allow_private = allow_private
        self._inner = inner or aiohttp.DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """The addresses of `host`; `ForbiddenAddress` if any of them may not be reached."""
        problem = host_problem(host, self._allow_private)
        if problem:
            raise ForbiddenAddress(f"{host} is {problem}")
        found = await self._inner.resolve(host, port, family)
        for result in found:
            address = ipaddress.ip_address(result["host"].partition("%")[0])
            problem = address_problem(address, self._allow_private)
            if problem:
                raise ForbiddenAddress(f"{host} resolves to {address}, {problem}")
        return found

    async def close(self) -> None:
        """Release the wrapped resolver."""
        await self._inner.close()


def open_session(
    allow_private: bool, resolver: AbstractResolver | None = None
) -> aiohttp.ClientSession:
    """The notifier's HTTP session (call inside the event loop; close it when done).

    No connection limit of its own: each route bounds its own concurrency,
    so a target that hangs cannot take the connections of another."""
    connector = aiohttp.TCPConnector(
        resolver=GuardedResolver(allow_private, resolver), limit=0, limit_per_host=0
    )
    return aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
    )


@dataclass
class Courier:
    """Delivers alerts to targets with retries; shares one session and one progress record."""

    http: aiohttp.ClientSession
    secret: bytes | None
    retry_cap: float
    give_up_after: float
    progress: NotifierProgress
    first_retry: float = 1.0
    clock: Callable[[], float] = time.time

    def __post_init__(self) -> None:
        self.retry_cap = max(MIN_RETRY_CAP, self.retry_cap)

    async def deliver(self, alert: Alert, target: Target) -> None:
        """Send until the target takes it; `GiveUp` when it refuses it or time runs out."""
        body = message(alert, target)
        started = self.clock()
        attempt = 0
        while True:
            attempt += 1
            problem, wait = await self._attempt(alert, target, body, attempt)
            if problem is None:
                return
            elapsed = self.clock() - started
            delay = wait if wait is not None else backoff(attempt, self.first_retry, self.retry_cap)
            if elapsed + delay > self.give_up_after:
                raise GiveUp(
                    f"webhook {target.safe_url} gave up on alert {alert.key} after {attempt} "
                    f"attempts over {elapsed:.0f}s: {problem}"
                )
            log.warning(
                "alert %s to %s: %s (attempt %d); retrying in %.1fs",
                alert.key,
                target.safe_url,
                problem,
                attempt,
                delay,
            )
            await asyncio.sleep(delay)

    async def _attempt(
        self, alert: Alert, target: Target, body: bytes, attempt: int
    ) -> tuple[str | None, float | None]:
        """One POST: (None, None) when taken, else (the problem, the wait asked for, if any)."""
        self.progress.attempts += 1
        sent = headers(alert, body, int(self.clock()), attempt, self.secret)
        try:
            async with self.http.post(
                target.url, data=body, headers=sent, allow_redirects=False
            ) as answer:
                await answer.read()
                if 200 <= answer.status < 300:
                    self.progress.delivered += 1
                    self.progress.last[alert.key] = target.safe_url
                    return None, None
                problem = f"answered {answer.status} {answer.reason or ''}".strip()
                if 300 <= answer.status < 400:
                    raise GiveUp(_redirect_reason(alert, target, problem, answer))
                if not retryable(answer.status):
                    raise GiveUp(f"webhook {target.safe_url} refused alert {alert.key}: {problem}")
                return problem, retry_after(answer.headers.get("Retry-After"), self.retry_cap)
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, ForbiddenAddress):
                forbidden = str(exc.os_error)
                hint = "" if "metadata" in forbidden else f"; {ALLOW_HINT}"
                raise GiveUp(
                    f"webhook {target.safe_url} not reached for alert {alert.key}: "
                    f"{forbidden}{hint}"
                ) from exc
            return f"{type(exc).__name__}: {exc}".rstrip(": "), None
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            return f"{type(exc).__name__}: {exc}".rstrip(": "), None


def _redirect_reason(
    alert: Alert, target: Target, problem: str, answer: aiohttp.ClientResponse
) -> str:
    """Why a redirect is a failed delivery, naming where it pointed (without its query)."""
    location = answer.headers.get("Location", "")
    where = Target(urljoin(target.url, location)).safe_url if location else "nowhere"
    return (
        f"webhook {target.safe_url} redirected alert {alert.key} ({problem} to {where}): "
        "redirects are not followed; configure the final URL"
    )
