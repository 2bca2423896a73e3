"""`journeys report` end to end: simulated data replayed, the page written, and rendered in
headless Chromium (Debian's chromium) with no network: no errors, every chart has data,
the segment filter in the address filters, and phases come from --rules.

Without chromium the test skips on a developer's machine and fails under CI=true.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from journeys.streams.engine.rules import default_rules_text

pytestmark = pytest.mark.integration

CHARTS = ("funnel", "sankey", "time", "touchpoints", "dmu", "alertkinds")


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.environ.get("CI") == "true":
        pytest.fail(
            "chromium is missing: CI must install Debian's chromium (apt-get install chromium)"
        )
    pytest.skip("chromium is not installed (apt-get install chromium)")


def _journeys(*args: str, data: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "JOURNEYS_DATA_DIR": str(data), "JOURNEYS_READ_PORT": "0"}
    result = subprocess.run(
        [sys.executable, "-m", "journeys", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    return result


def _render(
    chromium: str, page: Path, fragment: str = "", shot: Path | None = None
) -> tuple[str, str]:
    """(the DOM after the page ran, chromium's console log)."""
    args = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=15000",
        # No network: a page that fetched anything would break.
        "--host-resolver-rules=MAP * ~NOTFOUND",
        "--window-size=1400,2200",
    ]
    url = page.resolve().as_uri() + fragment
    result = subprocess.run([*args, "--dump-dom", url], capture_output=True, text=True, timeout=120)
    if shot is not None:
        subprocess.run(
            [*args, f"--screenshot={shot}", url], capture_output=True, timeout=120, check=True
        )
    return result.stdout, result.stderr


def _points(dom: str) -> dict[str, int]:
    return {name: int(n) for name, n in re.findall(r'id="(\w+)"[^>]*data-points="(\d+)"', dom)} | {
        name: int(n) for n, name in re.findall(r'data-points="(\d+)"[^>]*id="(\w+)"', dom)
    }


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("report")
    _journeys("demo", "--no-kafka", "--accounts", "80", "--days", "90", "--seed", "3", data=data)
    return data / "demo"


def test_the_journey_map_renders_offline_with_data_in_every_chart(
    demo_data: Path, tmp_path: Path
) -> None:
    chromium = _chromium()
    page = tmp_path / "map.html"
    _journeys("report", "-o", str(page), data=demo_data)
    html = page.read_text("utf-8")
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=", html), "the page loads something"
    shot = tmp_path / "map.png"
    dom, log = _render(chromium, page, shot=shot)
    assert 'data-ready="1"' in dom, log[-2000:]
    assert 'data-errors="0"' in dom
    assert "Uncaught" not in log, log
    points = _points(dom)
    assert set(points) == set(CHARTS) and all(points[c] > 0 for c in CHARTS), points
    assert shot.stat().st_size > 50_000  # a rendered page, not a blank one

    accounts = orjson.loads(
        _journeys(
            "query", "--json", "SELECT count() AS n FROM journeys_current", data=demo_data
        ).stdout
    )[0]["n"]
    assert points["funnel"] == accounts


def test_the_segment_filter_counts_that_segments_accounts(demo_data: Path, tmp_path: Path) -> None:
    chromium = _chromium()
    page = tmp_path / "map.html"
    _journeys("report", "-o", str(page), data=demo_data)
    rows = orjson.loads(
        _journeys(
            "query",
            "--json",
            "SELECT segment, count() AS n FROM journeys_current "
            "GROUP BY segment ORDER BY n DESC LIMIT 1",
            data=demo_data,
        ).stdout
    )
    segment, expected = rows[0]["segment"], rows[0]["n"]
    dom, log = _render(chromium, page, "#segment=" + segment.replace(" ", "%20"))
    assert 'data-errors="0"' in dom, log[-2000:]
    assert _points(dom)["funnel"] == expected


def test_phases_come_from_the_rules_file(tmp_path: Path) -> None:
    chromium = _chromium()
    rules = tmp_path / "rules.toml"
    rules.write_text(
        default_rules_text().replace("loyalty", "advocacy").replace("awareness", "discovery")
    )
    data = tmp_path / "data"
    demo = _journeys(
        "demo", "--no-kafka", "--accounts", "40", "--days", "60", "--rules", str(rules), data=data
    )
    assert "discovery" in demo.stdout and "advocacy" in demo.stdout and "loyalty" not in demo.stdout
    page = tmp_path / "map.html"
    _journeys("report", "-o", str(page), "--rules", str(rules), data=data / "demo")
    embedded = re.search(
        r'<script type="application/json" id="journeys-data">(.*?)</script>', page.read_text()
    )
    assert embedded is not None
    phases = orjson.loads(embedded.group(1))["phases"]
    assert phases == ["discovery", "consideration", "decision", "purchase", "delivery", "advocacy"]
    dom, log = _render(chromium, page)
    assert 'data-errors="0"' in dom and _points(dom)["funnel"] > 0, log[-2000:]
