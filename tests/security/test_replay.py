"""`journeys replay` and dead letters against hostile input (issue 16).

- A huge line or many lines must not grow the replay's memory: it reads at
  most an event's limit of a line, keeps 64 KiB of a dead letter's payload
  with the whole line's size and SHA-256, hands dead letters over in steps
  and sorts large inputs on disk. Peak RSS is measured on a real
  `journeys replay` child process against a one-line replay.
- A UTF-8 byte order mark before the first event is not "invalid JSON".
- Progress is shown through the engine and the final writes, not only while
  reading.
- Dead letters are keyed by where their input was read: identical rejected
  inputs are counted one row each, while reading the same input again (a
  redelivered message, a file replayed again) gives the same rows.
"""

from __future__ import annotations

import hashlib
import io
import random
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from journeys.cli import main
from journeys.producers.collect.limits import dead_letter
from journeys.schemas.codec import DEAD_LETTER_PAYLOAD_BYTES
from journeys.sinks.clickhouse.client import connect
from journeys.sinks.memory import MemorySink
from journeys.streams import replay as replaying
from journeys.streams.engine import EngineConfig
from journeys.streams.ingest import split
from tests.unit.engine.journey import ev

BOM = b"\xef\xbb\xbf"
#: How far a big replay's peak RSS may rise above a one-line replay's (the issue's bound).
HEADROOM_MB = 150
#: Runs the child and prints its peak RSS (KiB): the only child of a fresh interpreter.
PEAK = (
    "import resource, subprocess, sys\n"
    "done = subprocess.run(sys.argv[1:], capture_output=True)\n"
    "sys.stderr.buffer.write(done.stderr)\n"
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    "sys.exit(done.returncode)\n"
)


def _peak_mb(path: Path, data: Path) -> float:
    """Peak RSS (MB) of `journeys replay path` into an embedded ClickHouse of its own."""
    command = [sys.executable, "-m", "journeys", "replay", "--quiet", str(path)]
    command += ["--clickhouse-url", f"chdb://{data / 'ch'}", "--data-dir", str(data)]
    done = subprocess.run(
        [sys.executable, "-c", PEAK, *command], capture_output=True, timeout=240, check=False
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    return int(done.stdout.split()[-1]) / 1024


def _baseline(tmp_path: Path) -> float:
    one = tmp_path / "one.jsonl"
    one.write_bytes(ev("content_view", 0, event_id="e1", anonymous_id="v1").to_json() + b"\n")
    return _peak_mb(one, tmp_path / "one")


@pytest.mark.integration
def test_a_50_mb_line_replays_within_150_mb_of_a_one_line_replay(tmp_path: Path) -> None:
    big = tmp_path / "big.jsonl"
    with big.open("wb") as out:
        out.write(b'{"event_id":"x","blob":"')
        for _ in range(50):
            out.write(b"a" * 1024 * 1024)
        out.write(b'"}\n')
    baseline, peak = _baseline(tmp_path), _peak_mb(big, tmp_path / "big")
    assert peak - baseline < HEADROOM_MB, (baseline, peak)


@pytest.mark.integration
def test_200_000_bad_lines_replay_within_150_mb_of_a_one_line_replay(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b"".join(b'{"broken": %d\n' % n for n in range(200_000)))
    baseline, peak = _baseline(tmp_path), _peak_mb(bad, tmp_path / "bad")
    assert peak - baseline < HEADROOM_MB, (baseline, peak)


def test_a_huge_line_is_read_in_pieces_and_its_dead_letter_keeps_64_kib(tmp_path: Path) -> None:
    line = b'{"blob":"' + b"b" * (3 * 1024 * 1024) + b'"}'
    handle = io.BufferedReader(io.BytesIO(b"\n" + line + b"\n" + b"{oops\n"))
    lines = list(replaying.read_lines(handle, "big.jsonl"))
    assert [
        len(x[1]) for x in lines if isinstance(x, tuple) and not isinstance(x, replaying.Oversized)
    ] == [1, 6]
    huge = next(x for x in lines if isinstance(x, replaying.Oversized))
    assert (huge.source, huge.size) == ("big.jsonl:2", len(line))
    assert huge.sha256 == hashlib.sha256(line).hexdigest()
    sink = MemorySink()
    summary = replaying.replay(lines, sink, EngineConfig.default(), 0, spill_dir=tmp_path)
    sink.flush()
    assert summary.invalid == 2
    [row] = [d for d in sink.written.dead_letters if d.source == "big.jsonl:2"]
    assert row.payload == line[:DEAD_LETTER_PAYLOAD_BYTES]
    assert f"{len(line):,} bytes" in row.reason and huge.sha256 in row.reason
    assert row.reason.startswith("event too large")


def test_valid_events_beyond_a_run_are_sorted_on_disk_holding_one_run(tmp_path: Path) -> None:
    records = [
        ev("content_view", rng, event_id=f"e{n % 300}", anonymous_id=f"v{n % 7}")
        for n, rng in enumerate(random.Random(5).choices(range(50), k=1000))
    ]
    runs = replaying.SortedRuns(tmp_path, size=40)
    most_held = 0
    for record in records:
        runs.add(record)
        most_held = max(most_held, len(runs.held))
        assert len(runs.files) < replaying.MAX_RUNS
    assert most_held <= 40 and runs.files  # spilled, never holding more than a run
    assert list(runs.merged()) == sorted(records, key=lambda r: (r.ts, r.event_id))  # stable


def test_a_valid_event_behind_a_byte_order_mark_is_an_event() -> None:
    first = BOM + ev("content_view", 0, event_id="b1", anonymous_id="v1").to_json()
    sink = MemorySink()
    summary = replaying.replay([("f:1", first + b"\r\n")], sink, EngineConfig.default(), 0)
    sink.flush()
    assert (summary.events, summary.invalid) == (1, 0)
    assert split([("events", 0, 0, first)], 1, 0).dead_letters == []  # nor from Kafka


def test_identical_bad_lines_are_a_dead_letter_each_and_a_rerun_the_same_ones() -> None:
    lines = [(f"/data/in.jsonl:{n}", b"{not json") for n in range(1, 20_001)]

    def ids() -> list[str]:
        sink = MemorySink()
        replaying.replay(lines, sink, EngineConfig.default(), 0)
        sink.flush()
        return [d.dead_letter_id for d in sink.written.dead_letters]

    first = ids()
    assert len(set(first)) == 20_000
    assert ids() == first  # the same file again: the same rows


def test_identical_kafka_messages_are_a_dead_letter_each_and_a_redelivery_the_same() -> None:
    messages = [("journeys.events", 3, offset, b'{"type": 1}') for offset in range(2_500)]
    first = [d.dead_letter_id for d in split(messages, 4, 0).dead_letters]
    assert len(set(first)) == 2_500
    again = [d.dead_letter_id for d in split(messages[:10], 4, 99).dead_letters]
    assert again == first[:10]
    assert (
        split([("journeys.events", 2, 0, b'{"type": 1}')], 4, 0).dead_letters[0].dead_letter_id
        not in first
    )


def test_identical_rejected_collector_items_are_a_dead_letter_each() -> None:
    rows = [
        dead_letter(b'{"type":"x"}', "no identity", "collect:/v1/batch", 0, 1024)
        for _ in range(2_500)
    ]
    assert len({row.dead_letter_id for row in rows}) == 2_500
    keyed = [
        dead_letter(b"{}", "r", "collect:/v1/batch", 0, 1024, position="req-1:7") for _ in range(2)
    ]
    assert keyed[0].dead_letter_id == keyed[1].dead_letter_id  # one request item, one row


@pytest.mark.integration
def test_replaying_bad_lines_twice_keeps_one_row_per_line(
    tmp_path: Path, chdb_dsn: str, database_name: Callable[[str], str]
) -> None:
    name = database_name("dlc")
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b"{not json\n" * 2_000)
    for _ in range(2):
        result = CliRunner().invoke(
            main,
            ["replay", "-q", str(path), "--clickhouse-url", chdb_dsn]
            + ["--clickhouse-database", name, "--data-dir", str(tmp_path)],
            catch_exceptions=False,
        )
        assert result.exit_code == 0, result.output
    client = connect(chdb_dsn)
    count = client.query(f"SELECT count() FROM {name}.dead_letters FINAL").result_rows[0][0]
    assert count == 2_000


@pytest.mark.integration
def test_progress_goes_on_through_the_engine_and_the_writes(
    tmp_path: Path,
    chdb_dsn: str,
    database_name: Callable[[str], str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("journeys.cmd_core._on_terminal", lambda: True, raising=False)
    path = tmp_path / "in.jsonl"
    path.write_bytes(
        orjson.dumps({"nope": 1})
        + b"\n"
        + ev("signup", 0, event_id="s", email="a@b.nl").to_json()
        + b"\n"
    )
    result = CliRunner().invoke(
        main,
        ["replay", str(path), "--clickhouse-url", chdb_dsn]
        + ["--clickhouse-database", database_name("prg"), "--data-dir", str(tmp_path)],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    stages = [s for s in ("replaying", "journeys", "writing") if s in result.stderr]
    assert stages == ["replaying", "journeys", "writing"], result.stderr
