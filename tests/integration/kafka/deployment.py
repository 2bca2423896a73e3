"""A deployment as separate processes, watched from outside, and its tables against replay.

`Deployment` runs `journeys run --workers N` (the sink and N workers as
child processes) with its own embedded ClickHouse, and watches it the way an
operator would: through each process's `/metrics` and `/health`. While the
sink runs it holds its embedded database, so `compare_with_replay` reads the
tables afterwards in a process of its own (`python -m
tests.integration.kafka.deployment`), after writing `journeys replay`'s
answer for the same lines to another database of the same path.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from journeys.processes import settings_env
from journeys.schemas.settings import Settings

ROOT = Path(__file__).resolve().parents[3]
_SAMPLE = re.compile(r"^([a-z_]+)(?:\{[^}]*\})? ([-+0-9.e]+|NaN|[+-]Inf)$", re.MULTILINE)


@dataclass
class Deployment:
    """`journeys run` as a child process, with metrics on `port` (sink) and `port + 1 + i`."""

    settings: Settings
    workers: int
    port: int
    log: Path
    process: subprocess.Popen[bytes] | None = None
    extra_env: dict[str, str] = field(default_factory=dict)

    def start(self) -> None:
        env = {
            **os.environ,
            **settings_env(self.settings),
            "JOURNEYS_IDLE_AFTER": "1",
            "JOURNEYS_METRICS_PORT": str(self.port),
            **self.extra_env,
        }
        command = [sys.executable, "-m", "journeys", "run", "--workers", str(self.workers)]
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                command, env=env, stdout=out, stderr=out, cwd=ROOT, start_new_session=True
            )

    def stop(self, timeout: float = 40.0) -> int | None:
        """SIGTERM `journeys run` (it stops its children); its exit status."""
        process = self.process
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)  # run and its children
                process.wait()
        self.process = None
        return process.returncode

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def metrics(self, index: int) -> dict[str, float]:
        """Process `index`'s metrics (0: the sink, 1..N: workers); {} while it does not answer."""
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.port + index}/metrics", timeout=2
            ) as r:
                text = r.read().decode()
        except (OSError, urllib.error.URLError):
            return {}
        return {name: float(value) for name, value in _SAMPLE.findall(text)}

    def health(self, index: int) -> int | None:
        """Process `index`'s /health status code; None while it does not answer."""
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.port + index}/health", timeout=2
            ) as r:
                return int(r.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)
        except (OSError, urllib.error.URLError):
            return None

    def restarts(self) -> list[str]:
        """Lines in which `journeys run` said it started an exited process again."""
        return [
            line
            for line in self.log.read_text(errors="replace").splitlines()
            if "exited with" in line
        ]

    def behind(self) -> int | None:
        """Messages not yet committed by the group that reads them (see `uncommitted`)."""
        return uncommitted(self.settings)

    def settled(self, messages: int) -> tuple[bool, dict[str, float]]:
        """Whether every message was ingested and the stage holds nothing back; figures."""
        workers = [self.metrics(i + 1) for i in range(self.workers)]
        sink = self.metrics(0)
        ingested = sum(
            w.get("journeys_worker_ingested_events", 0) + w.get("journeys_worker_invalid_events", 0)
            for w in workers
        )
        stage = [w for w in workers if w.get("journeys_stage_owned") == 1]
        figures = {
            "ingested": ingested,
            "rows_written": sink.get("journeys_sink_rows_written", -1),
            "buffered": stage[0].get("journeys_stage_buffered_events", -1) if stage else -1,
            "lag": stage[0].get("journeys_stage_event_time_lag_seconds", -1) if stage else -1,
            "late": stage[0].get("journeys_stage_late_events", -1) if stage else -1,
        }
        done = ingested >= messages and figures["buffered"] == 0 and figures["lag"] == 0
        if done:
            behind = self.behind()
            figures["uncommitted"] = -1 if behind is None else behind
            done = behind == 0
        return done, figures

    def wait_settled(
        self, messages: int, quiet: float = 5.0, timeout: float = 180.0
    ) -> dict[str, float]:
        """Until everything is ingested, drained and the sink wrote nothing new for `quiet` s."""
        deadline = time.monotonic() + timeout
        last, changed = -1.0, time.monotonic()
        figures: dict[str, float] = {}
        while time.monotonic() < deadline:
            assert self.running(), f"journeys run exited: {self.log.read_text()[-3000:]}"
            done, figures = self.settled(messages)
            if figures["rows_written"] != last:
                last, changed = figures["rows_written"], time.monotonic()
            if done and last > 0 and time.monotonic() - changed > quiet:
                return figures
            time.sleep(0.5)
        raise AssertionError(
            f"the deployment did not settle: {figures}\n{self.log.read_text()[-3000:]}"
        )


def uncommitted(settings: Settings) -> int | None:
    """Messages not yet committed by the group that reads them (workers: events, the
    ordered and the journeys topics; the sink: rows and dead letters); None while Kafka
    does not answer."""
    from kafka import KafkaConsumer, TopicPartition

    from journeys.producers.kafka import unread
    from journeys.producers.topics import Topics

    names = Topics.of(settings)
    groups = {
        f"{settings.topic_prefix}journeys": [names.events, names.ordered, names.journeys],
        f"{settings.topic_prefix}journeys-sink": [names.rows, names.dead_letters],
    }
    total = 0
    try:
        for group, topics in groups.items():
            consumer = KafkaConsumer(
                bootstrap_servers=settings.kafka_bootstrap,
                group_id=group,
                enable_auto_commit=False,
                bootstrap_timeout_ms=3000,
                isolation_level="read_committed",
            )
            try:
                tps = [
                    TopicPartition(topic, p)
                    for topic in topics
                    for p in sorted(consumer.partitions_for_topic(topic) or ())
                ]
                ends = consumer.end_offsets(tps)
                done = {tp: consumer.committed(tp) or 0 for tp in tps}
                total += sum(unread(consumer, tp, done[tp], ends[tp]) for tp in tps)
            finally:
                consumer.close()
    except Exception:
        return None
    return total


def compare_with_replay(
    chdb_path: Path, database: str, lines: list[bytes], work: Path
) -> dict[str, Any]:
    """Replay `lines` next to the streamed `database` and compare (in a process of its own)."""
    source = work / "replay-input.jsonl"
    source.write_bytes(b"\n".join(lines) + b"\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.integration.kafka.deployment",
            str(chdb_path),
            database,
            str(source),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.splitlines()[-1])


def _compare(chdb_path: str, database: str, source: str) -> dict[str, Any]:
    from journeys.sinks.clickhouse.client import connect, select
    from journeys.sinks.clickhouse.queries import snapshot
    from journeys.sinks.clickhouse.writer import ClickHouseSink
    from journeys.streams.engine import EngineConfig
    from journeys.streams.replay import replay
    from tests.integration.kafka.pipeline import comparable

    dsn = f"chdb://{chdb_path}"
    reference = f"{database}_replay"
    sink = ClickHouseSink(dsn, reference)
    sink.setup()
    with open(source, "rb") as handle:
        lines = [line.rstrip(b"\n") for line in handle]
    replay(((f"line:{i}", line) for i, line in enumerate(lines)), sink, EngineConfig.default(), 0)
    client = connect(dsn)
    streamed = comparable(snapshot(client, database))
    replayed = comparable(snapshot(client, reference))
    [(stored, distinct)] = select(
        client, f"SELECT count(), uniqExact(event_id) FROM {database}.events FINAL"
    )
    return {
        "events": int(stored),
        "distinct_events": int(distinct),
        "counts": {name: len(rows) for name, rows in streamed.items()},
        "replay_counts": {name: len(rows) for name, rows in replayed.items()},
        "different": sorted(name for name in replayed if streamed.get(name) != replayed[name]),
    }


if __name__ == "__main__":
    print(json.dumps(_compare(*sys.argv[1:4]), default=str))
