"""The test shop and the browser that visits it.

- `serving_shop`: a website on its own origin (another port than the
  collector's) that serves `site/index.html` and `@segment/analytics-next`'s
  browser build from `node_modules` (no CDN), and `/status`, which tells
  the browser when the test has what it waits for.
- `visit`: runs `visit.mjs` (playwright-core driving Debian's chromium).
- `FlakyPublisher`: a publisher whose first sends fail like a Kafka that did
  not acknowledge, so the collector answers 503 to the first attempts.
- `require_browser`: skips when node, chromium or the npm packages are
  missing, but fails under CI (CI=true), where they are installed by
  `run.sh`: a green CI means the browser really ran.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web

from journeys.producers.collect.publisher import Publisher
from journeys.schemas.errors import BrokerError
from journeys.schemas.record import EventRecord
from journeys.schemas.rows import DeadLetterRow
from tests.unit.collect.server import serving

HERE = Path(__file__).parent
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
BUNDLE = HERE / "node_modules" / "@segment" / "analytics-next" / "dist" / "umd"


def missing_tools() -> str | None:
    """What the browser test lacks here, or None."""
    if shutil.which("node") is None:
        return "node is not installed"
    if not Path(CHROMIUM).exists():
        return f"chromium is not installed at {CHROMIUM} (apt-get install chromium)"
    if not (HERE / "node_modules" / "playwright-core").is_dir() or not BUNDLE.is_dir():
        return "the npm packages are not installed (npm ci in tests/browser)"
    return None


def require_browser() -> None:
    """Skip without the tools; under CI their absence is a failure."""
    missing = missing_tools()
    if missing is None:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{missing}: CI installs them (run.sh) and must run the browser test")
    pytest.skip(missing)


class FlakyPublisher:
    """Fails the first `failures` publishes (503 to the client), then stores through `inner`."""

    def __init__(self, inner: Publisher, failures: int) -> None:
        self.inner, self.failures, self.attempts = inner, failures, 0

    @property
    def available(self) -> bool:
        """As available as the publisher behind it."""
        return self.inner.available

    async def start(self) -> None:
        """Start the publisher behind it."""
        await self.inner.start()

    async def publish(
        self, records: Sequence[EventRecord], dead_letters: Sequence[DeadLetterRow]
    ) -> None:
        """Fail while failures are left, else publish."""
        self.attempts += 1
        if self.attempts <= self.failures:
            raise BrokerError("Kafka did not acknowledge (test)")
        await self.inner.publish(records, dead_letters)

    async def close(self) -> None:
        """Close the publisher behind it."""
        await self.inner.close()


@contextmanager
def serving_shop(done: Callable[[], bool]) -> Iterator[str]:
    """Serve the shop until the block ends; yields its base URL. `/status` says `done()`."""

    async def status(request: web.Request) -> web.Response:
        return web.json_response({"done": done()})

    async def index(request: web.Request) -> web.FileResponse:
        return web.FileResponse(HERE / "site" / "index.html")

    app = web.Application()
    app.router.add_get("/", index)
    app.router.add_get("/status", status)
    app.router.add_static("/analytics-next/", BUNDLE)
    with serving(app, "the shop") as url:
        yield url


def visit(shop: str, collector: str, key: str, screenshot: Path | None = None) -> dict[str, Any]:
    """One visit of the shop in chromium; what the page did (see visit.mjs)."""
    page = f"{shop}/?key={key}&collector={collector}"
    command = ["node", str(HERE / "visit.mjs"), page, f"{shop}/status"]
    if screenshot is not None:
        command.append(str(screenshot))
    finished = subprocess.run(
        command,
        cwd=HERE,
        capture_output=True,
        timeout=180,
        env={**os.environ, "CHROMIUM": CHROMIUM},
    )
    if finished.returncode != 0:
        raise AssertionError(f"visit.mjs failed: {finished.stderr.decode(errors='replace')}")
    report: dict[str, Any] = orjson.loads(finished.stdout)
    return report
