"""The stage changelogs' compaction bound (`JOURNEYS_ERASE_WITHIN`, docs/privacy.md): what an
erasure tombstones leaves the changelogs within it; other topics are left alone."""

from __future__ import annotations

from journeys.producers.topics import _config, erase_bounds
from journeys.schemas.settings import Settings

HOUR = 3_600_000


def test_the_stage_changelogs_are_bounded_by_the_erase_setting() -> None:
    assert Settings().erase_within == 24 * HOUR  # the documented default, 1d
    settings = Settings(topic_prefix="p.", erase_within=8 * 3600)  # seconds: 8h
    bounds = {"segment.ms", "max.compaction.lag.ms", "delete.retention.ms"}
    for name in ("p.journeys.internal.identity-state", "p.journeys.internal.journeys-state"):
        config = _config(settings, name)
        assert config["cleanup.policy"] == "compact" and config["retention.ms"] == "-1"
        assert {k: config[k] for k in bounds} == dict.fromkeys(bounds, str(2 * HOUR))
    for name in ("p.journeys.internal.suppressions", "p.journeys.events"):
        assert not bounds & set(_config(settings, name)), name


def test_the_bound_is_never_zero() -> None:
    assert erase_bounds(1) == dict.fromkeys(erase_bounds(1), "1")
