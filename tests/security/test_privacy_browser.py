"""Consent from a real browser: analytics-next in chromium, with the consent choice stamped
on every event as Segment's consent wrapper does (`context.consent.categoryPreferences`),
against the collector on loopback."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import orjson

from journeys.producers.collect.publisher import MemoryPublisher
from journeys.schemas.privacy import ConsentMode
from journeys.schemas.record import EventRecord
from journeys.schemas.rows import DeadLetterRow
from journeys.schemas.settings import Settings
from tests.browser.shop import require_browser, serving_shop, visit
from tests.unit.collect.server import running

KEY = "wk_browser"


class Counting(MemoryPublisher):
    """Keeps what passes the privacy gate and counts every request's publish."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    async def publish(
        self, records: Sequence[EventRecord], dead_letters: Sequence[DeadLetterRow]
    ) -> None:
        await super().publish(records, dead_letters)
        self.calls += 1


def _visit(consent: str, mode: ConsentMode, tmp_path: Path) -> list[EventRecord]:
    require_browser()
    publisher = Counting()
    config = Settings(write_keys=KEY, consent_mode=mode, data_dir=tmp_path)
    with running(config, publisher) as collector:
        with serving_shop(lambda: publisher.calls >= 5) as shop:
            report = visit(shop, collector, f"{KEY}&consent={consent}")
    assert report["done"] and report["errors"] == [], report
    assert publisher.dead_letters == []
    return publisher.records


def test_consent_given_in_the_browser_is_kept_with_the_choice(tmp_path: Path) -> None:
    records = _visit("given", "drop", tmp_path)
    assert len(records) == 5
    for record in records:
        preferences = orjson.loads(record.context)["consent"]["categoryPreferences"]
        assert preferences == {"Analytics": True, "Advertising": False}
    assert {r.email for r in records if r.type == "identify"} == {"inkoop@kwekerij-x.nl"}


def test_consent_denied_in_the_browser_is_dropped(tmp_path: Path) -> None:
    assert _visit("denied", "drop", tmp_path) == []


def test_consent_denied_in_the_browser_is_anonymised(tmp_path: Path) -> None:
    records = _visit("denied", "anonymise", tmp_path)
    assert len(records) == 5
    assert len({r.anonymous_id for r in records}) == 5  # nothing links the five calls
    for record in records:
        stored = record.to_json().decode()
        for personal in ("kwekerij", "c-17", "inkoop", '"ip"', "userAgent"):
            assert personal not in stored, (personal, stored)
