"""Run requests against the collector app in-process (aiohttp's test server)."""

from __future__ import annotations

import asyncio
import base64
from dataclasses import dataclass
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from journeys.producers.collect.app import create_app
from journeys.producers.collect.publisher import MemoryPublisher
from journeys.schemas.settings import Settings

KEY = "wk_test"
AUTH = {"Authorization": "Basic " + base64.b64encode(f"{KEY}:".encode()).decode()}


@dataclass
class Answer:
    status: int
    body: Any
    headers: dict[str, str]


def settings(**changes: Any) -> Settings:
    return Settings(**{"write_keys": KEY, **changes})


def request(
    method: str,
    path: str,
    publisher: MemoryPublisher | None = None,
    config: Settings | None = None,
    **kwargs: Any,
) -> Answer:
    """One request against a fresh app; returns status, JSON (or text) body and headers."""
    publisher = publisher if publisher is not None else MemoryPublisher()

    async def go() -> Answer:
        app = create_app(config or settings(), publisher)
        async with TestClient(TestServer(app)) as client:
            response = await client.request(method, path, **kwargs)
            text = await response.text()
            try:
                body: Any = await response.json(content_type=None)
            except ValueError:
                body = text
            return Answer(response.status, body, dict(response.headers))

    return asyncio.run(go())
