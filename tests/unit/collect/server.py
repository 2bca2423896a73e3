"""The collector on a real loopback port, in a background thread, for SDK tests."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from aiohttp import web

from journeys.producers.collect.app import create_app
from journeys.producers.collect.publisher import Publisher
from journeys.schemas.settings import Settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running(settings: Settings, publisher: Publisher) -> Iterator[str]:
    """Serve the collector until the block ends; yields its base URL."""
    with serving(create_app(settings, publisher), "the collector") as url:
        yield url


@contextmanager
def serving(app: web.Application, what: str) -> Iterator[str]:
    """Serve an aiohttp app on a free loopback port in a thread; yields its base URL."""
    port = free_port()
    loop = asyncio.new_event_loop()
    started = threading.Event()
    runner = web.AppRunner(app)

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    if not started.wait(30):
        raise RuntimeError(f"{what} did not start within 30s")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(60)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
