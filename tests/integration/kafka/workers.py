"""Workers and a sink as `journeys` processes of their own, watched from outside.

The scale-out tests start each `journeys worker` and the `journeys sink` as a
separate OS process with a data dir of its own (nothing on a worker's disk
outlives it), feed the input while they run, and read the pipeline where an
operator would: the sink's read-only ClickHouse endpoint, each process's
`/health` and `/metrics`, and the committed offsets and members of the
consumer groups of the test's topic prefix. The reference answer is `journeys
replay` of the same lines, written beside the streamed tables once the sink
has let go of its embedded database; `python -m
tests.integration.kafka.workers` compares the two in a process of its own.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from journeys.processes import settings_env
from journeys.producers.client import EventProducer
from journeys.producers.kafka import uncommitted as kafka_uncommitted
from journeys.schemas.record import EventRecord
from journeys.schemas.settings import Settings
from tests.integration.kafka.deployment import ROOT
from tests.integration.kafka.test_outages import free_ports

_CONTROL = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
#: Seconds a quiet input partition waits before it stops holding event time back.
IDLE_AFTER = 1.0


@dataclass
class Fleet:
    """The sink and any number of workers, each `python -m journeys <kind>` with its own
    data dir (`root/<name>`), metrics port and log (`root/<name>.log`)."""

    settings: Settings
    root: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    killed: set[str] = field(default_factory=set)

    def start(self, name: str, kind: str = "worker") -> None:
        """Start `journeys <kind>` as process `name`."""
        port = free_ports(1)
        own = self.settings.model_copy(update={"data_dir": self.root / name, "metrics_port": port})
        env = {**os.environ, **settings_env(own), "JOURNEYS_IDLE_AFTER": str(IDLE_AFTER)}
        with self.log(name).open("ab") as out:
            self.processes[name] = subprocess.Popen(
                [sys.executable, "-m", "journeys", kind],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                start_new_session=True,
            )
        self.ports[name] = port

    def log(self, name: str) -> Path:
        """Where process `name` writes its output."""
        return self.root / f"{name}.log"

    @property
    def workers(self) -> list[str]:
        """The workers started and not killed, in the order they were started."""
        return [n for n in self.processes if n != "sink" and n not in self.killed]

    def kill(self, name: str) -> None:
        """SIGKILL a process (and anything it started); it is not started again."""
        process = self.processes[name]
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(30)
        self.killed.add(name)

    def check_alive(self) -> None:
        """Fail, with its log, if a process exited that was not killed on purpose."""
        for name, process in self.processes.items():
            if name not in self.killed and process.poll() is not None:
                raise AssertionError(
                    f"journeys {name} exited with {process.returncode}; "
                    f"its log ({self.log(name)}):\n{self.tail(name)}"
                )

    def tail(self, name: str, chars: int = 2500) -> str:
        """The end of a process's log, without terminal control sequences."""
        path = self.log(name)
        if not path.exists():
            return "(no log)"
        return _CONTROL.sub("", path.read_text(errors="replace"))[-chars:]

    def tails(self, chars: int = 1500) -> str:
        """The end of every process's log, for failure messages."""
        return "\n".join(
            f"--- {name} ({self.log(name)}) ---\n{self.tail(name, chars)}"
            for name in self.processes
        )

    def stop(self, timeout: float = 40.0) -> dict[str, int | None]:
        """SIGTERM what still runs, SIGKILL it after `timeout`; exit status by name."""
        running = {n: p for n, p in self.processes.items() if p.poll() is None}
        for process in running.values():
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for process in running.values():
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        return {name: process.returncode for name, process in self.processes.items()}

    def health(self, name: str) -> int | None:
        """The process's /health status code; None while it does not answer."""
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.ports[name]}/health", timeout=2
            ) as answer:
                return int(answer.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)
        except OSError:
            return None

    def metrics(self, name: str) -> dict[str, float]:
        """The process's unlabelled `journeys_*` samples; {} while it does not answer."""
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.ports[name]}/metrics", timeout=2
            ) as answer:
                text = answer.read().decode()
        except OSError:
            return {}
        samples = (line.split() for line in text.splitlines() if line.startswith("journeys_"))
        return {s[0]: float(s[1]) for s in samples if len(s) == 2}

    def report(self) -> str:
        """What each live process says in /metrics, and the end of every log."""
        live = [n for n, p in self.processes.items() if p.poll() is None]
        said = "\n".join(f"{name} /metrics: {self.metrics(name)}" for name in live)
        return f"{said}\n{self.tails()}"

    def tables(self) -> dict[str, int] | None:
        """Rows per table (FINAL) through the sink's read endpoint; None while it is down."""
        import clickhouse_connect

        from journeys.sinks.clickhouse.queries import table_counts
        from journeys.sinks.clickhouse.read_access import read_access

        try:
            sink = self.settings.model_copy(update={"data_dir": self.root / "sink"})
            access = read_access(sink)  # the password the sink kept in its data dir
            client = clickhouse_connect.get_client(
                host="127.0.0.1",
                port=self.settings.read_port,
                username=access.user,
                password=access.password.get_secret_value(),
                connect_timeout=2,
            )
            return table_counts(client, self.settings.clickhouse_database)
        except Exception:
            return None

    def wait(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        """Until `condition()`, failing after `timeout` s with `what` and the logs."""
        deadline = time.monotonic() + timeout
        while not condition():
            self.check_alive()
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} within {timeout:.0f}s\n{self.report()}")
            time.sleep(0.3)


def group_members(settings: Settings) -> dict[str, int]:
    """Members of each consumer group of the settings' topic prefix (0 while it rebalances)."""
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    undecodable = logging.getLogger("kafka.admin")  # Faust's member metadata is its own
    level = undecodable.level
    undecodable.setLevel(logging.ERROR)
    try:
        groups = [
            g["group_id"]
            for g in admin.list_groups()
            if g["group_id"].startswith(settings.topic_prefix)
        ]
        described = admin.describe_groups(groups) if groups else {}
        return {
            group: len(info["members"]) if info["group_state"] == "Stable" else 0
            for group, info in described.items()
        }
    finally:
        undecodable.setLevel(level)
        admin.close()


def uncommitted(settings: Settings) -> int:
    """Messages the consumer groups of the topic prefix have not committed yet, over every
    partition of every topic they committed anything on."""
    return kafka_uncommitted(settings)[1]


def behind(settings: Settings) -> int | str:
    """`uncommitted`, or why Kafka did not say."""
    try:
        return uncommitted(settings)
    except Exception as exc:  # the broker answers slowly: ask again later
        return f"unknown ({exc})"


def wait_settled(
    fleet: Fleet, events: int, dead_letters: int, quiet: float = 6.0, timeout: float = 180.0
) -> dict[str, int]:
    """Until ClickHouse holds `events` events and `dead_letters` dead letters, no table
    changed for `quiet` s and every consumer group of the prefix committed all it reads."""
    deadline = time.monotonic() + timeout
    last: dict[str, int] | None = None
    changed = time.monotonic()
    while time.monotonic() < deadline:
        fleet.check_alive()
        counts = fleet.tables()
        if counts != last:
            last, changed = counts, time.monotonic()
        if (
            counts is not None
            and counts.get("events", 0) >= events
            and counts.get("dead_letters", 0) >= dead_letters
            and time.monotonic() - changed > quiet
            and behind(fleet.settings) == 0
        ):
            return counts
        time.sleep(0.5)
    raise AssertionError(
        f"the pipeline did not settle within {timeout:.0f}s: tables {last} "
        f"(want {events} events, {dead_letters} dead letters), uncommitted messages "
        f"{behind(fleet.settings)}; workers {fleet.workers}, killed {sorted(fleet.killed)}\n"
        f"{fleet.report()}"
    )


def feed(
    settings: Settings,
    chunks: Sequence[Sequence[EventRecord]],
    raw: Sequence[bytes] = (),
    pause: float = 0.3,
    before: Callable[[int], None] | None = None,
) -> None:
    """Send chunk after chunk (keyed by account or visitor, as sources do) with a pause
    between them, `raw` lines (unkeyed) with the first; `before(i)` runs before chunk i."""
    producer = EventProducer(settings)
    producer.start()
    try:
        for i, chunk in enumerate(chunks):
            if before is not None:
                before(i)
            producer.send(chunk)
            if i == 0 and raw:
                producer.send_raw(raw)
            time.sleep(pause)
    finally:
        producer.close()


def compare_with_replay(
    settings: Settings, chdb: Path, lines: list[bytes], work: Path
) -> dict[str, Any]:
    """`journeys replay` of `lines` into `<database>_replay` beside the streamed database,
    then both compared table by table (each in a process of its own: the embedded
    database opens in one process at a time)."""
    source = work / "replay-input.jsonl"
    source.write_bytes(b"\n".join(lines) + b"\n")
    database = settings.clickhouse_database
    reference = settings.model_copy(
        update={"clickhouse_url": f"chdb://{chdb}", "clickhouse_database": f"{database}_replay"}
    )
    replayed = subprocess.run(
        [sys.executable, "-m", "journeys", "replay", "-q", str(source)],
        env={**os.environ, **settings_env(reference)},
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        check=False,
    )
    assert replayed.returncode == 0, f"journeys replay failed:\n{replayed.stderr[-3000:]}"
    compared = subprocess.run(
        [sys.executable, "-m", "tests.integration.kafka.workers", str(chdb), database],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        check=False,
    )
    assert compared.returncode == 0, f"the comparison failed:\n{compared.stderr[-3000:]}"
    result: dict[str, Any] = json.loads(compared.stdout.splitlines()[-1])
    return result


def resolved(tables: dict[str, Any]) -> dict[str, Any]:
    """Identity links with each account followed to the account it merged into.

    Which account an alias row names can depend on the order links were learnt (an
    email linked to a company domain before the domain turned out to be an ERP
    account names the domain; linked after, the ERP account), while the account it
    belongs to through the `account` links does not; the membership is compared.
    """
    links = tables.get("identity_links", [])
    merged = {row["alias"]: row["account_id"] for row in links if row["kind"] == "account"}

    def final(account: str) -> str:
        seen = {account}
        while merged.get(account, account) not in seen:
            account = merged[account]
            seen.add(account)
        return account

    rows = [{**row, "account_id": final(row["account_id"])} for row in links]
    return {**tables, "identity_links": sorted(rows, key=lambda r: (r["kind"], r["alias"]))}


def _compare(chdb: str, database: str) -> dict[str, Any]:
    """Streamed `database` against `<database>_replay`: what differs, with examples."""
    from journeys.sinks.clickhouse.client import connect, select
    from journeys.sinks.clickhouse.queries import snapshot
    from tests.integration.kafka.pipeline import comparable

    client = connect(f"chdb://{chdb}")
    streamed = resolved(comparable(snapshot(client, database)))
    replayed = resolved(comparable(snapshot(client, f"{database}_replay")))
    [(stored, distinct)] = select(
        client, f"SELECT count(), uniqExact(event_id) FROM {database}.events FINAL"
    )
    examples = {}
    for name in sorted(replayed):
        if streamed.get(name) != replayed[name]:
            ours = [json.dumps(r, default=str, sort_keys=True) for r in streamed.get(name, [])]
            theirs = [json.dumps(r, default=str, sort_keys=True) for r in replayed[name]]
            examples[name] = {
                "only_streamed": sorted(set(ours) - set(theirs))[:3],
                "only_replayed": sorted(set(theirs) - set(ours))[:3],
            }
    return {
        "events": int(stored),
        "distinct_events": int(distinct),
        "counts": {name: len(rows) for name, rows in streamed.items()},
        "replay_counts": {name: len(rows) for name, rows in replayed.items()},
        "different": sorted(examples),
        "examples": examples,
    }


if __name__ == "__main__":
    print(json.dumps(_compare(sys.argv[1], sys.argv[2]), default=str))
