"""Settings: durations, defaults and the environment."""

from __future__ import annotations

import pytest

from journeys.schemas.durations import format_duration_ms, parse_duration_ms
from journeys.schemas.errors import ConfigError
from journeys.schemas.settings import Settings


@pytest.mark.parametrize(
    ("text", "ms"),
    [("30m", 1_800_000), ("4h", 14_400_000), ("14d", 1_209_600_000), ("90s", 90_000)],
)
def test_durations(text: str, ms: int) -> None:
    assert parse_duration_ms(text) == ms
    assert parse_duration_ms(format_duration_ms(ms)) == ms


def test_bad_duration_says_how_to_write_one() -> None:
    with pytest.raises(ConfigError, match="like 30m, 4h or 14d"):
        parse_duration_ms("four hours")


def test_defaults_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in [n for n in os.environ if n.startswith("JOURNEYS_")]:
        monkeypatch.delenv(name)
    defaults = Settings()
    assert (defaults.cart_abandon_after, defaults.deal_stall_after) == (14_400_000, 1_209_600_000)
    assert defaults.kafka_bootstrap == "127.0.0.1:9092"
    assert defaults.clickhouse_dsn.startswith("chdb:///") and defaults.clickhouse_dsn.endswith(
        ".journeys/clickhouse"
    )
    monkeypatch.setenv("JOURNEYS_CART_ABANDON_AFTER", "30m")
    monkeypatch.setenv("JOURNEYS_CLICKHOUSE_URL", "http://u:p@ch:8123")
    settings = Settings()
    assert settings.cart_abandon_after == 1_800_000
    assert settings.clickhouse_dsn == "http://u:p@ch:8123"
    assert settings.topic("events") == "journeys.events"
