"""What `journeys run` starts: the sink serves reads of the embedded engine it holds, and the
alert notifier runs beside the workers when webhooks are configured."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

import clickhouse_connect
import pytest

from journeys.processes import settings_env, start_processes, stop_processes
from journeys.producers.topics import ensure_pipeline_topics
from journeys.schemas.settings import Settings
from journeys.sinks.clickhouse.read_access import read_access

pytestmark = [pytest.mark.integration, pytest.mark.kafka]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _settings(tmp_path: Path, bootstrap: str, prefix: str, **more: object) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        kafka_bootstrap=bootstrap,
        topic_prefix=prefix,
        topic_partitions=2,
        **more,  # type: ignore[arg-type]
    )


def test_the_sink_of_a_running_pipeline_serves_reads(
    kafka_bootstrap: str, topic_prefix: Callable[[], str], tmp_path: Path
) -> None:
    port = _free_port()
    settings = _settings(tmp_path, kafka_bootstrap, topic_prefix(), read_port=port)
    ensure_pipeline_topics(settings)
    processes = start_processes(0, settings_env(settings))
    assert [p.kind for p in processes] == ["sink"]
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                access = read_access(settings)
                client = clickhouse_connect.get_client(
                    host="127.0.0.1",
                    port=port,
                    username=access.user,
                    password=access.password.get_secret_value(),
                )
                break
            except Exception:
                assert processes[0].poll() is None, "the sink exited"
                assert time.monotonic() < deadline, "the sink never served reads"
                time.sleep(0.5)
        views = {row[0] for row in client.query("SHOW TABLES FROM journeys").result_rows}
        assert {"events_current", "journeys_current", "open_alerts"} <= views
        assert client.query("SELECT count() FROM journeys.events_current").result_rows == [(0,)]
        with pytest.raises(Exception, match="164|READONLY|read"):
            client.command("CREATE TABLE journeys.x (a UInt8) ENGINE = Memory")
    finally:
        stop_processes(processes)


def test_run_starts_the_notifier_only_when_webhooks_are_configured(
    kafka_bootstrap: str, topic_prefix: Callable[[], str], tmp_path: Path
) -> None:
    settings = _settings(tmp_path, kafka_bootstrap, topic_prefix())
    assert start_processes(0, settings_env(settings), with_sink=False) == []
    webhooks = _settings(
        tmp_path,
        kafka_bootstrap,
        settings.topic_prefix,
        alert_webhooks="*=http://127.0.0.1:9/x",
        alert_allow_private=True,
    )
    ensure_pipeline_topics(webhooks)
    processes = start_processes(0, settings_env(webhooks), with_sink=False)
    try:
        assert [p.kind for p in processes] == ["notify"]
        time.sleep(2)
        assert processes[0].poll() is None, "the notifier exited"
    finally:
        stop_processes(processes)
    assert os.environ.get("JOURNEYS_ALERT_WEBHOOKS") is None
