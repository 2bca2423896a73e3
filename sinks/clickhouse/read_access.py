"""Who may use the read endpoint: its credentials, and the requests it refuses before any SQL.

The read endpoint (`http_reader`) answers on loopback, where any web page a
user visits can send requests too (a cross-site request to 127.0.0.1, or a
DNS name rebound to it). So every request must carry the endpoint's user and
password, which a web page does not know, and requests that show a browser's
marks (an `Origin` header, `Sec-Fetch-Site` other than `none`) or name a
`Host` that is not this machine are refused before their credentials are
even read.

The password is `JOURNEYS_READ_PASSWORD` when set; otherwise it is generated
once (`secrets.token_urlsafe`) and kept in `<data dir>/read-password`, mode
0600, where the sink and the project's own commands find it and
`journeys read-credentials` prints it. `ReadLimits` (from the
`JOURNEYS_READ_MAX_*` settings) bounds what the endpoint lets one query and
all of them together use.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import os
import secrets
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from pydantic import SecretStr

from journeys.schemas.settings import Settings
from journeys.sinks.secret_file import kept_secret

#: Where the generated password lives, under the data dir.
PASSWORD_FILE = "read-password"
#: The largest `max_block_size` a request may ask for (the engine's default is 65409).
MAX_BLOCK_SIZE = 1 << 20


class Headers(Protocol):
    """Request headers, looked up case-insensitively (`http.client.HTTPMessage`)."""

    def get(self, name: str) -> str | None:
        """The header's value, or None."""


@dataclass(frozen=True)
class ReadAccess:
    """The user and password the read endpoint asks for."""

    user: str
    password: SecretStr

    def allows(self, user: str | None, password: str | None) -> bool:
        """Whether these credentials are the endpoint's (compared in constant time)."""
        if user is None or password is None:
            return False
        same_user = hmac.compare_digest(user.encode(), self.user.encode())
        same_password = hmac.compare_digest(
            password.encode(), self.password.get_secret_value().encode()
        )
        return same_user and same_password


@dataclass(frozen=True)
class ReadLimits:
    """What one read-endpoint query, and the endpoint as a whole, may use."""

    max_memory: int = 1 << 30
    max_execution_seconds: float = 30.0
    max_result_rows: int = 10_000_000
    max_result_bytes: int = 512 << 20
    max_queries: int = 4
    max_connections: int = 64
    idle_timeout: float = 30.0
    queue_timeout: float = 2.0

    def caps(self) -> dict[str, float]:
        """The numeric settings a request may lower but never raise (0 means unlimited).

        `max_threads` and `max_block_size` are capped too: many threads, or one
        huge block (the engine checks its time limit and cancellation between
        blocks), would let one query outlast the time cap."""
        return {
            "max_memory_usage": self.max_memory,
            "max_execution_time": self.max_execution_seconds,
            "max_result_rows": self.max_result_rows,
            "max_result_bytes": self.max_result_bytes,
            "max_threads": os.cpu_count() or 4,
            "max_block_size": MAX_BLOCK_SIZE,
        }

    def session(self) -> dict[str, str]:
        """The settings every query runs under, before the request's own."""
        return {
            "max_memory_usage": str(self.max_memory),
            "max_execution_time": f"{self.max_execution_seconds:g}",
            "max_result_rows": str(self.max_result_rows),
            "max_result_bytes": str(self.max_result_bytes),
            "result_overflow_mode": "throw",
            "timeout_overflow_mode": "throw",
            "allow_introspection_functions": "0",
            "allow_ddl": "0",
            "max_query_size": str(1 << 20),
        }


def read_limits(settings: Settings) -> ReadLimits:
    """The endpoint's limits from the settings (`JOURNEYS_READ_MAX_*`)."""
    return ReadLimits(
        max_memory=settings.read_max_memory,
        max_execution_seconds=settings.read_max_execution_time / 1000,
        max_result_rows=settings.read_max_result_rows,
        max_result_bytes=settings.read_max_result_bytes,
        max_queries=settings.read_max_queries,
        max_connections=settings.read_max_connections,
    )


def read_access(settings: Settings) -> ReadAccess:
    """The endpoint's credentials: the configured password, else the kept (or a new) one."""
    if settings.read_password is not None:
        return ReadAccess(settings.read_user, settings.read_password)
    return ReadAccess(settings.read_user, SecretStr(kept_password(settings.data_dir)))


def kept_password(data_dir: Path) -> str:
    """The password in `<data_dir>/read-password`, generated there (0600) the first time."""
    return kept_secret(
        data_dir / PASSWORD_FILE,
        "the read endpoint's password",
        lambda: secrets.token_urlsafe(24),
        "delete it to generate a new read password",
    )


def given_credentials(headers: Headers, params: Mapping[str, str]) -> tuple[str | None, str | None]:
    """The user and password a request sends, the ways ClickHouse's HTTP interface takes them.

    HTTP basic auth, else the `X-ClickHouse-User`/`X-ClickHouse-Key` headers,
    else the `user`/`password` URL parameters. A user without a password
    is ClickHouse's `default` user, which this endpoint does not have."""
    auth = headers.get("Authorization") or ""
    if auth[:6].lower() == "basic ":
        try:
            user, _, password = base64.b64decode(auth[6:].strip()).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None, None
        return user, password
    if headers.get("X-ClickHouse-User") is not None or headers.get("X-ClickHouse-Key"):
        return headers.get("X-ClickHouse-User") or "default", headers.get("X-ClickHouse-Key")
    if "user" in params or "password" in params:
        return params.get("user") or "default", params.get("password")
    return None, None


def browser_refusal(headers: Headers, read_host: str) -> str | None:
    """Why a request looks like a web page's (or a rebound DNS name's), or None if it does not."""
    if headers.get("Origin") is not None:
        return "requests from web pages (with an Origin header) are not answered here"
    fetch_site = headers.get("Sec-Fetch-Site")
    if fetch_site is not None and fetch_site.lower() != "none":
        return "requests from web pages (Sec-Fetch-Site) are not answered here"
    host = headers.get("Host")
    if host is not None and not local_host_name(host, read_host):
        return f"Host {host[:100]!r} is not this endpoint's address (DNS rebinding?)"
    return None


def local_host_name(host: str, read_host: str) -> bool:
    """Whether a `Host` header names this endpoint: an IP literal, localhost or its own name."""
    name = _without_port(host.strip()).lower()
    if not name:
        return False
    if name in ("localhost", read_host.lower(), socket.gethostname().lower()):
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _without_port(host: str) -> str:
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    if host.count(":") == 1:
        return host.split(":", 1)[0]
    return host
