"""`journeys report` end to end: simulated data replayed, the page written, and rendered in
headless Chromium (Debian's chromium) with no network: no errors, every chart has data,
the segment filter in the address filters, and phases come from --rules.

What moves accounts: the data the map gathers (attribution per conversion, engagement, the
customer pyramid, account pages) equals what the views say; the page, driven by
playwright-core (tests/browser/report.mjs), draws those panels, its model switch changes the
attribution, and an account link opens that account's page; without the views each panel
says it has no data. `journeys account`'s data carries engagement, tier and credited touches.

Without chromium the test skips on a developer's machine and fails under CI=true.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import sys
import uuid
from collections import defaultdict
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner
from clickhouse_connect.driver.client import Client

from journeys.cli import main
from journeys.sinks.clickhouse.client import select
from journeys.sinks.clickhouse.migrate import migrate
from journeys.sinks.report.account import account_timeline, credited_lines, value_line
from journeys.sinks.report.data import gather
from journeys.sinks.report.html import render
from journeys.sinks.report.moves import EVENTS_AT_LEAST, EVENTS_PER_ACCOUNT, MODELS, events_cap
from journeys.streams.engine.rules import default_rules_text, load_rules
from tests.browser.shop import CHROMIUM, require_browser
from tests.browser.shop import HERE as BROWSER

pytestmark = pytest.mark.integration

PANELS = ("attrchannel", "attrcampaign", "heat", "pyramid")
CHARTS = ("funnel", "sankey", "time", "touchpoints", "dmu", "alertkinds", *PANELS)


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
    assert "what moves accounts" in demo.stdout and "customer pyramid" in demo.stdout
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


# ---- What moves accounts: attribution, engagement, the customer pyramid, account pages ----


def _browse(page: Path, shots: Path) -> dict[str, Any]:
    """What report.mjs saw in chromium (screenshots map.png, account.png in `shots`)."""
    require_browser()
    result = subprocess.run(
        ["node", str(BROWSER / "report.mjs"), str(page), str(shots)],
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "CHROMIUM": CHROMIUM},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    found: dict[str, Any] = orjson.loads(result.stdout)
    return found


def _query(sql: str, data: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = orjson.loads(_journeys("query", "--json", sql, data=data).stdout)
    return rows


def _clean(report: dict[str, Any]) -> None:
    assert report["errors"] == [] and report["pageErrors"] == [], report["errors"]
    assert report["refused"] == []  # nothing fetched: the file stands alone
    assert not [line for line in report["console"] if line.startswith("error")], report["console"]


def test_the_new_panels_render_and_the_model_switch_and_account_pages_work(
    demo_data: Path,
) -> None:
    page = demo_data.parent / "map.html"
    _journeys("report", "-o", str(page), data=demo_data)
    shots = Path(os.environ.get("JOURNEYS_REPORT_SHOTS", str(demo_data.parent)))
    seen = _browse(page, shots)
    _clean(seen)
    assert all(seen["points"][p] > 0 for p in PANELS), seen["points"]

    models = {m: seen["models"][m]["channel"] for m in ("first_touch", "last_touch", "linear")}
    assert models["first_touch"] != models["last_touch"]  # the switch changes the numbers
    totals = {m: sum(v.values()) for m, v in models.items()}
    assert totals["first_touch"] == pytest.approx(totals["last_touch"], abs=0.01)
    assert totals["linear"] == pytest.approx(totals["first_touch"], abs=0.01)
    assert "model=last_touch" in seen["models"]["last_touch"]["hash"]  # shareable

    pyramid = _query("SELECT tier, accounts, revenue FROM analytics_customer_pyramid", demo_data)
    assert seen["pyramid"] == {
        r["tier"]: [r["accounts"], pytest.approx(r["revenue"], abs=0.01)] for r in pyramid
    }
    heat = _query(
        "SELECT count() AS n FROM analytics_engagement WHERE tier IN ('hot', 'warm')", demo_data
    )
    assert seen["tocall"] == heat[0]["n"]

    clicked, account = seen["clicked"], seen["account"]
    assert account["visible"] and account["mapHidden"] and account["timeline"] > 0, account
    assert account["hash"].endswith("account=" + clicked.replace("@", "%40"))
    for part in ("Account " + clicked, "Transitions and the touches credited", "Alerts"):
        assert part in account["text"]
    assert seen["back"] and seen["found"]
    assert (shots / "map.png").stat().st_size > 100_000
    assert (shots / "account.png").stat().st_size > 30_000


@pytest.fixture(scope="module")
def replayed(ch_client: Client, chdb_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A database of the session's engine holding a replayed simulation."""
    from journeys.producers.simulator import simulate

    folder = tmp_path_factory.mktemp("moves")
    source = folder / "events.jsonl"
    source.write_bytes(b"".join(line + b"\n" for line in simulate(accounts=40, days=60, seed=11)))
    database = f"m_{uuid.uuid4().hex[:12]}"
    result = CliRunner().invoke(
        main,
        ["replay", str(source), "--clickhouse-url", chdb_dsn, "--clickhouse-database", database,
         "--data-dir", str(folder)],
        catch_exceptions=False,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return database


def _close(a: float, b: float, tolerance: float) -> bool:
    if math.isnan(a) or math.isnan(b):  # a view's NaN travels as NaN (null in the page)
        return math.isnan(a) and math.isnan(b)
    return abs(a - b) <= tolerance


def _attribution_sums(data: dict[str, Any], key: str) -> dict[tuple[str, str, str], list[float]]:
    c = data["credited"]
    names = data["channels"] if key == "channel" else c["campaigns"]
    sums: dict[tuple[str, str, str], list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
    for i, phase in enumerate(c["phase"]):
        for m, model in enumerate(c["models"]):
            entry = sums[(data["phases"][phase], model, names[c[key][i]])]
            entry[0] += c["credit"][m][i]
            entry[1] += c["revenue"][m][i]
            entry[2] += 1
    return sums


def test_the_map_gathers_what_the_views_say(ch_client: Client, replayed: str) -> None:
    data = gather(ch_client, replayed, list(load_rules().phases), "default rules")
    db = replayed
    for key, view in (("channel", "by_channel"), ("campaign", "by_campaign")):
        sums = _attribution_sums(data, key)
        rows = select(
            ch_client,
            f"SELECT to_phase, model, {key}, conversions, revenue "
            f"FROM {db}.analytics_attribution_{view}",
        )
        assert rows and len(rows) == len(sums)
        for phase, model, name, conversions, revenue in rows:
            credit, money, n = sums[(phase, model, name)]
            assert _close(credit, conversions, 1e-4 * n), (phase, model, name)
            assert _close(money, revenue, 0.01 * n), (phase, model, name)

    ids = data["accounts"]["id"]
    tiers = data["tiers"]
    pyramid = {t: [0, 0.0] for t in tiers["names"]}
    for i in range(len(ids)):
        pyramid[tiers["names"][tiers["tier"][i]]][0] += 1
        pyramid[tiers["names"][tiers["tier"][i]]][1] += tiers["revenue"][i]
    said = select(ch_client, f"SELECT tier, accounts, revenue FROM {db}.analytics_customer_pyramid")
    assert {t: [n, round(r, 2)] for t, n, r in said} == {
        t: [n, round(r, 2)] for t, (n, r) in pyramid.items()
    }

    engagement = data["engagement"]
    assert engagement["available"]
    scores = dict(
        ((str(a), (round(float(s), 2), str(t))) for a, s, t in select(
            ch_client, f"SELECT account_id, score, tier FROM {db}.analytics_engagement"
        ))
    )  # fmt: skip
    assert {
        ids[i]: (engagement["score"][i], engagement["names"][engagement["heat"][i]])
        for i in range(len(ids))
    } == {a: scores[a] for a in ids}

    per_account = dict(
        select(
            ch_client,
            f"SELECT account_id, count() FROM {db}.events_current GROUP BY account_id",
        )
    )
    shown: defaultdict[str, int] = defaultdict(int)
    for account in data["events"]["account"]:
        shown[ids[account]] += 1
    assert data["events"]["cap"] == EVENTS_PER_ACCOUNT  # a few accounts: the full cap
    assert shown == {a: min(per_account[a], EVENTS_PER_ACCOUNT) for a in ids}

    page = render(data)
    for panel in ('id="attribution"', 'id="model"', 'id="tocall"', 'id="pyramid"', 'id="account"'):
        assert panel in page


def test_journeys_account_data_has_engagement_tier_and_credited_touches(
    ch_client: Client, replayed: str
) -> None:
    (account,) = select(
        ch_client,
        f"SELECT account_id FROM {replayed}.attribution_current GROUP BY account_id "
        "ORDER BY count() DESC, account_id LIMIT 1",
    )[0]
    timeline = account_timeline(ch_client, replayed, str(account))
    assert timeline is not None
    score, heat = select(
        ch_client,
        f"SELECT score, tier FROM {replayed}.analytics_engagement WHERE account_id = {{a:String}}",
        {"a": account},
    )[0]
    assert timeline["engagement"]["tier"] == heat
    assert timeline["engagement"]["score"] == pytest.approx(score, abs=1e-3)
    tier, revenue = select(
        ch_client,
        f"SELECT tier, revenue FROM {replayed}.analytics_customer_tiers "
        "WHERE account_id = {a:String}",
        {"a": account},
    )[0]
    assert (timeline["customer"]["tier"], timeline["customer"]["revenue"]) == (
        tier,
        pytest.approx(revenue, abs=0.01),
    )
    rows = select(
        ch_client,
        f"SELECT count() FROM {replayed}.attribution_current WHERE account_id = {{a:String}}",
        {"a": account},
    )
    credited = [t for tr in timeline["transitions"] for t in tr["credited"]]
    assert len(credited) * len(MODELS) == rows[0][0] > 0
    assert f"({heat})" in value_line(timeline) and f"customer tier {tier}" in value_line(timeline)
    for transition in timeline["transitions"]:
        assert len(credited_lines(transition)) >= len(transition["credited"]) + 1
        if transition["credited"]:
            for model in ("first_touch", "last_touch", "linear", "position_based"):
                total = sum(t["credit"][model] for t in transition["credited"])
                assert total == pytest.approx(1.0, abs=1e-6), (transition, model)


@pytest.fixture()
def without_views(ch_client: Client, chdb_dsn: str, tmp_path: Path) -> Iterator[str]:
    """A replayed database whose attribution, engagement and pyramid views were dropped."""
    from tests.integration.test_replay import write_input

    database = f"w_{uuid.uuid4().hex[:12]}"
    migrate(ch_client, database)
    result = CliRunner().invoke(
        main,
        ["replay", str(write_input(tmp_path / "in.jsonl")), "--clickhouse-url", chdb_dsn,
         "--clickhouse-database", database, "--data-dir", str(tmp_path)],
        catch_exceptions=False,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    for view in (
        "analytics_attribution_by_channel",
        "analytics_attribution_by_campaign",
        "analytics_attribution_by_content",
        "attribution_current",
        "analytics_engagement",
        "analytics_customer_pyramid",
        "analytics_customer_tiers",
    ):
        ch_client.command(f"DROP VIEW IF EXISTS {database}.{view}")
    yield database
    ch_client.command(f"DROP DATABASE IF EXISTS {database}")


def test_without_the_views_each_panel_says_it_has_no_data(
    ch_client: Client, without_views: str, tmp_path: Path
) -> None:
    data = gather(ch_client, without_views, list(load_rules().phases), "default rules")
    assert not data["credited"]["available"] and data["credited"]["account"] == []
    assert not data["engagement"]["available"] and not data["tiers"]["available"]
    account = data["accounts"]["id"][0]
    timeline = account_timeline(ch_client, without_views, account)
    assert timeline is not None and timeline["engagement"] is None and timeline["customer"] is None
    assert all(t["credited"] == [] for t in timeline["transitions"])

    page = tmp_path / "map.html"
    page.write_text(render(data), "utf-8")
    seen = _browse(page, tmp_path)
    _clean(seen)
    for said in ("no attribution data", "no engagement data", "no customer pyramid"):
        assert said + " in this database" in seen["text"]


def test_the_events_embedded_per_account_shrink_with_many_accounts() -> None:
    assert events_cap(80) == EVENTS_PER_ACCOUNT
    assert events_cap(10_000) == EVENTS_AT_LEAST
    assert EVENTS_AT_LEAST < events_cap(2_000) < EVENTS_PER_ACCOUNT


def test_the_page_script_parses() -> None:
    """A syntax error would only show as a page that never gets ready: say where it is."""
    if shutil.which("node") is None:
        pytest.skip("node is not installed")
    script = resources.files("journeys.sinks.report").joinpath("page.js")
    result = subprocess.run(
        ["node", "--check", str(script)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


def test_journeys_account_prints_engagement_tier_and_the_touches_credited(demo_data: Path) -> None:
    found = _journeys(
        "query",
        "--json",
        "SELECT account_id FROM attribution_current WHERE to_phase = 'purchase' "
        "ORDER BY account_id LIMIT 1",
        data=demo_data,
    )
    [row] = orjson.loads(found.stdout)
    shown = _journeys("account", row["account_id"], data=demo_data).stdout
    assert re.search(r"engagement \d+\.\d \((hot|warm|cold)\); customer tier \w+", shown), shown
    assert "touches credited          first   last  linear  posit.  decay" in shown
    assert "revenue credited:" in shown
