"""Options from settings: typed in --help, bad values named by flag and variable."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from journeys.cli import main


def _help(*command: str) -> str:
    result = CliRunner().invoke(main, [*command, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    return result.output


def test_help_shows_each_settings_type() -> None:
    text = _help("collect")
    assert "--collect-port INTEGER" in text
    assert "--collect-rate-limit FLOAT RANGE" in text
    assert "--collect-truncate-ip / --no-collect-truncate-ip" in text
    assert "[default: off]" in text
    replay = _help("replay")
    assert "--data-dir PATH" in replay and "--rules-file, --rules FILE" in replay
    assert "--cart-abandon-after DURATION" in replay
    assert "JOURNEYS_CART_ABANDON_AFTER" in replay


def test_kafka_stop_and_status_take_only_their_own_options() -> None:
    stop, status = _help("kafka", "stop"), _help("kafka", "status")
    assert "--data-dir" in stop and "--kafka-heap" not in stop and "--kafka-bootstrap" not in stop
    assert "--kafka-bootstrap" in status and "--kafka-version" not in status
    assert "--kafka-heap" in _help("kafka", "start")


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (["kafka", "start", "--topic-partitions", "0"], {}, "0 is not in the range x>=1"),
        (["kafka", "start", "--topic-partitions", "many"], {}, "'many' is not a valid integer"),
        (
            ["kafka", "status"],
            {"JOURNEYS_TOPIC_PARTITIONS": "many"},
            "--topic-partitions / JOURNEYS_TOPIC_PARTITIONS: Input should be a valid integer",
        ),
        (["replay", "--cart-abandon-after", "soon", "-"], {}, "write it like 30m, 4h or 14d"),
        (
            ["replay", "-"],
            {"JOURNEYS_DEAL_STALL_AFTER": "2 weeks"},
            "--deal-stall-after / JOURNEYS_DEAL_STALL_AFTER: not a duration",
        ),
        (["replay", "--rules", "/no/such/rules.toml", "-"], {}, "does not exist"),
    ],
)
def test_bad_values_get_one_clear_line(args: list[str], env: dict[str, str], expected: str) -> None:
    result = CliRunner().invoke(main, args, env=env)
    assert result.exit_code == 2, result.output
    assert expected in result.output
    assert "pydantic" not in result.output and "https://" not in result.output
    assert "Traceback" not in result.output


def test_a_boolean_flag_reaches_the_settings() -> None:
    from journeys.options import build_settings

    assert build_settings(collect_truncate_ip=True).collect_truncate_ip is True
    assert build_settings().collect_truncate_ip is False
