"""Benchmark: how the journey engine's partition state scales ("Exact forever"), run on demand.

    .venv/bin/python tests/bench/bench_state.py [--accounts 10000 50000 ...] [--days 30]
        [--cache 20000] [--profile]

For each size, simulated events (`simulate(accounts=N, days=D, seed=11)`, parsed
as `bench_engine.records` does) go through a `JourneyEngine` of one partition in
batches of `--batch` events, as a worker's would, with `changes()` after each
batch; then it prints, each figure beside a baseline from the same run:

- input: events, input bytes (the JSON lines, without newlines), accounts held
  (identified journeys; unidentified visitors' state is counted in with them);
- changelog: the compacted state (every batch's `changes()` applied in order,
  None deleting) in records and bytes (key and value) per account, per event
  and per input byte (target: at most 3x the input), beside the bytes written
  before compaction; the floor is a pickle of the same events' ids by key;
- RSS: how much the process grew building the engine (events parsed before), and
  how much a fresh process grows restoring it from the compacted state, per
  account and extrapolated linearly to 10**6 accounts (target: 2 GB);
- restore: `PartitionEngine.restore` of the partition (and, apart,
  `IdentityRouter.restore` of the router, another stage's), per account and
  extrapolated linearly to 250,000 accounts (target: 30 s), beside the time to
  only parse its holders (`Holder.from_bytes`, and `orjson.loads` alone) and a
  pickle round trip of the floor's dict;
- on disk: the same events folded, and the state restored, by a partition that
  keeps at most `--cache` journeys in memory and the rest in RocksDB
  (`streams.disk.RocksStore`, as a worker does with `JOURNEYS_STATE_CACHE`):
  RSS growth per account and extrapolated to 10**6 accounts, events/s beside
  the in-memory build, the RocksDB folder's size; the restore as a worker does
  it (the records written to a new store a batch at a time as they are read,
  then `PartitionEngine.restore_stored`), its time and RSS; and, apart, the
  identity router's RSS restored alone (the other stage a worker may hold), in
  memory and on disk (`IdentityRouter.restore_stored`, at most `--cache`
  entries per table in memory), and the two stages' sum at 10**6 accounts.
  The build on disk keeps the router's graph in a RocksDB of its own too.
  RSS is given as measured and once freed memory went back to the OS (glibc
  `malloc_trim`, as a worker does after a restore): what the objects alive take;
- a summary: least-squares lines over the sizes, extrapolated.

Each size is built in a child process and restored in another, so one size's
freed memory does not hide the next one's growth; the changelog and the
compacted state go through a temporary folder (about the input's size). With
`--profile`, the restore of the largest size is run again under cProfile and
the top `--top` functions by cumulative time printed. Generating 10**6
accounts takes too long here: measure several sizes and extrapolate.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import marshal
import pickle
import pstats
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from journeys.producers.simulator import simulate
from journeys.schemas.record import EventRecord
from journeys.streams.disk import RocksStore, give_back_memory
from journeys.streams.engine import EngineConfig, IdentityRouter, JourneyEngine
from journeys.streams.engine.partition import PartitionEngine
from journeys.streams.engine.state import Holder
from journeys.streams.engine.store import MemoryStore

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository, for tests.*
from tests.bench.bench_engine import records  # noqa: E402

SEED = 11
MB = 1024 * 1024
#: The targets of the issue.
RSS_TARGET, RSS_AT = 2 * 1024 * MB, 1_000_000
RESTORE_TARGET, RESTORE_AT = 30.0, 250_000
RATIO_TARGET = 3.0
#: Records per batch a restore on disk writes to its store (a changelog fetch's worth).
STREAM_BATCH = 2000
State = dict[str, dict[bytes, bytes]]


def rss() -> int:
    """The process's resident set size now, in bytes (VmRSS), after a full collection."""
    gc.collect()
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def live() -> int:
    """The resident set size once freed memory went back to the OS (glibc `malloc_trim`):
    what the objects alive take, without the allocator's free lists (a worker returns them
    after a restore, see `streams.disk.give_back_memory`)."""
    give_back_memory()
    return rss()


def peak() -> int:
    """The process's peak resident set size so far, in bytes."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def key_of(event: EventRecord) -> str:
    """The event's identity key as the floor keys it (no identity graph)."""
    return event.account_id or event.email or event.anonymous_id or ""


# ------------------------------------------------------------------ build (a child)


def build(accounts: int, days: int, batch: int, folder: Path) -> dict[str, Any]:
    """Simulate, parse and fold one size; the changelog batches go to `changelog.bin`,
    the floor's dict to `floor.pickle`. Returns the figures measured."""
    lines = list(simulate(accounts=accounts, days=days, seed=SEED))
    input_bytes, input_lines = sum(len(line) for line in lines), len(lines)
    events = records(lines)
    floor: dict[str, list[str]] = {}
    for event in events:
        floor.setdefault(key_of(event), []).append(event.event_id)
    start = time.perf_counter()
    blob = pickle.dumps(floor, pickle.HIGHEST_PROTOCOL)
    dumps = time.perf_counter() - start
    (folder / "floor.pickle").write_bytes(blob)
    floor_keys, floor_bytes = len(floor), len(blob)
    # The lines and the floor stay until the engine is measured: memory they gave back
    # would be taken again by the engine, unseen.
    before = rss()
    base = live()
    start = time.process_time()
    engine, written, batches = fold(events, batch, folder / "changelog.bin")
    took = time.process_time() - start
    after = rss()
    grown = live() - base
    del lines, floor, blob
    held = sum(1 for h in engine.holders.values() if h.is_account)
    return {
        "lines": input_lines, "events": len(events), "input_bytes": input_bytes,
        "accounts": held, "holders": len(engine.holders), "written": written,
        "batches": batches, "build_rss": after - before, "build_cpu": took, "build_live": grown,
        "floor_keys": floor_keys, "floor_bytes": floor_bytes, "floor_dumps": dumps,
        "build_peak": peak(),
    }  # fmt: skip


def fold(
    events: list[EventRecord], batch: int, path: Path, engine: JourneyEngine | None = None
) -> tuple[JourneyEngine, int, int]:
    """The engine fed `events` in batches, `changes()` after each (appended to `path`);
    with the bytes written (keys and values, a delete counting its key) and the batches."""
    engine = engine or JourneyEngine(EngineConfig.default())
    written = batches = 0
    with path.open("wb") as out:
        for start in range(0, len(events), batch):
            engine.process_all(events[start : start + batch])
            engine.take()
            written += save(engine.changes(), out)
            batches += 1
        engine.advance_to(events[-1].ts)
        engine.take()
        written += save(engine.changes(), out)
    return engine, written, batches + 1


def save(changes: dict[str, dict[bytes, bytes | None]], out: Any) -> int:
    """Append one batch of changes to a changelog file; the bytes it holds."""
    marshal.dump(changes, out)
    return sum(len(k) + len(v or b"") for part in changes.values() for k, v in part.items())


# -------------------------------------------------------------- compaction (the parent)


def batches(source: Any) -> Iterator[Any]:
    """The marshalled batches of an open file, in order."""
    while True:
        try:
            yield marshal.load(source)
        except EOFError:
            return


def compact(path: Path) -> State:
    """Every batch applied in order, None deleting: what a compacted changelog keeps."""
    stores: dict[str, MemoryStore] = {}
    with path.open("rb") as source:
        for changes in batches(source):
            for name, part in changes.items():
                stores.setdefault(name, MemoryStore()).write(part)
    return {name: store.records for name, store in stores.items()}


def sizes(state: State) -> dict[str, int]:
    """Records and bytes of the compacted state, by kind."""
    out = dict.fromkeys(
        ("records", "bytes", "holders_bytes", "chunks_bytes", "router_bytes", "other_bytes"), 0
    )
    kinds = {b"h:": "holders_bytes", b"k:": "chunks_bytes"}
    for name, part in state.items():
        for key, value in part.items():
            n = len(key) + len(value)
            out["records"] += 1
            out["bytes"] += n
            out["router_bytes" if name == "router" else kinds.get(key[:2], "other_bytes")] += n
    return out


# ---------------------------------------------------------------- restore (a child)


def restore(folder: Path, profile: int) -> dict[str, Any]:
    """The floor unpickled, then the compacted state restored, in this fresh process."""
    blob = (folder / "floor.pickle").read_bytes()
    before = rss()
    start = time.perf_counter()
    floor = pickle.loads(blob)
    loads = time.perf_counter() - start
    floor_rss = rss() - before
    del blob
    config = EngineConfig.default()
    # Growth from before the state is read to after it is dropped, as a worker taking the
    # partition over: the engine keeps the archive chunks' bytes of the state it read.
    before = rss()
    state = load(folder)
    loaded = rss()
    start, cpu = time.perf_counter(), time.process_time()
    part = PartitionEngine.restore(config, state["0"], 0, 1)
    took, took_cpu = time.perf_counter() - start, time.process_time() - cpu
    on_top = rss() - loaded
    identity = state.pop("router")
    del state
    restore_rss = rss() - before
    start = time.perf_counter()
    router = IdentityRouter.restore(config, identity, 1)
    router_took = time.perf_counter() - start
    held = sum(1 for h in part.holders.values() if h.is_account)
    result = {
        "restore": took, "restore_cpu": took_cpu, "restore_rss": restore_rss,
        "on_top": on_top, "state_rss": loaded - before,
        "router": router_took, "restored_accounts": held, "floor_loads": loads,
        "floor_rss": floor_rss, "floor_len": len(floor),
    }  # fmt: skip
    del part, router, floor, identity
    state = load(folder)
    result["parse"], result["loads"] = parse_only(state["0"])
    result["restore_peak"] = peak()
    if profile:
        run_profile(config, state["0"], profile)
    return result


# ------------------------------------------------------------ on disk (children)


def disk_size(path: Path) -> int:
    """Bytes of the files under `path`."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def build_on_disk(accounts: int, days: int, batch: int, cache: int, folder: Path) -> dict[str, Any]:
    """The same events folded by a partition keeping `cache` journeys in memory, the rest
    in RocksDB, and a router keeping `cache` entries per table in memory, the rest in a
    RocksDB of its own (as a worker holding both stages does): RSS growth and events/s."""
    lines = list(simulate(accounts=accounts, days=days, seed=SEED))
    events = records(lines)
    before = live()
    engine = JourneyEngine(EngineConfig.default())
    store = RocksStore(folder / "rocks")
    graph = RocksStore(folder / "rocks-router")
    engine.router = IdentityRouter(engine.config, 1, graph, cache)
    engine.parts = [PartitionEngine(engine.config, 0, 1, store, cache)]
    start = time.process_time()
    fold(events, batch, folder / "changelog-disk.bin", engine)
    took = time.process_time() - start
    part = engine.parts[0]
    result = {
        "disk_build_rss": rss() - before, "disk_build_cpu": took,
        "disk_build_live": live() - before,
        "disk_live": len(part.holders), "disk_loads": part.loads,
        "disk_files": disk_size(store.path), "disk_build_peak": peak(),
        "disk_build_rocks": store.memory() + graph.memory(),
        "disk_router_files": disk_size(graph.path),
    }  # fmt: skip
    store.close()
    graph.close()
    return result


def restore_on_disk(folder: Path, cache: int) -> dict[str, Any]:
    """The compacted state restored into RocksDB keeping `cache` journeys in memory, as a
    worker does: the records written to the store a batch at a time as they are read
    (`Changelog.load_into`), then `PartitionEngine.restore_stored`. RSS growth (and once
    freed memory went back to the OS) and the time, reading the records included."""
    config = EngineConfig.default()
    before = live()
    store = RocksStore(folder / "rocks")
    start = time.perf_counter()
    with (folder / "partition.stream").open("rb") as source:
        for batch in batches(source):
            store.write(dict(batch))
    part = PartitionEngine.restore_stored(config, store, 0, 1, cache)
    took = time.perf_counter() - start
    result = {"disk_restore": took, "disk_restore_rss": rss() - before,
              "disk_restore_live": live() - before,
              "disk_restore_held": len(part.holders),
              "disk_restore_rocks": store.memory()}  # fmt: skip
    store.close()
    return result


def restore_router(folder: Path) -> dict[str, Any]:
    """The identity router restored alone in this fresh process: its RSS growth once the
    state read is dropped and freed memory went back to the OS."""
    config = EngineConfig.default()
    before = live()
    identity = marshal.loads((folder / "router.bin").read_bytes())
    router = IdentityRouter.restore(config, identity, 1)
    del identity
    return {"router_rss": live() - before, "router_keys": len(router.shadows)}


def restore_router_on_disk(folder: Path, cache: int) -> dict[str, Any]:
    """The identity router restored as a worker does with a store: its records written to
    a new RocksDB a batch at a time, then `IdentityRouter.restore_stored` keeping `cache`
    entries per table in memory; RSS growth once freed memory went back, and the time."""
    config = EngineConfig.default()
    before = live()
    store = RocksStore(folder / "rocks-router")
    start = time.perf_counter()
    records = list(marshal.loads((folder / "router.bin").read_bytes()).items())
    for first in range(0, len(records), STREAM_BATCH):
        store.write(dict(records[first : first + STREAM_BATCH]))
    del records
    router = IdentityRouter.restore_stored(config, store, 1, cache)
    took = time.perf_counter() - start
    result = {"router_disk_rss": live() - before, "router_disk_restore": took,
              "router_disk_rocks": store.memory(), "router_disk_wakes": len(router._wakes)}  # noqa: SLF001  # fmt: skip
    store.close()
    return result


def load(folder: Path) -> State:
    """The compacted state the parent wrote."""
    state: State = marshal.loads((folder / "state.bin").read_bytes())
    return state


def parse_only(state: dict[bytes, bytes]) -> tuple[float, float]:
    """Seconds to parse every holder record (`Holder.from_bytes`), and to `orjson.loads`
    them only: where a restore's time goes before any fold."""
    holders = [(k[2:].decode(), v) for k, v in state.items() if k[:2] == b"h:"]
    start = time.perf_counter()
    for key, value in holders:
        Holder.from_bytes(value, key)
    parse = time.perf_counter() - start
    start = time.perf_counter()
    for _, value in holders:
        orjson.loads(value)
    return parse, time.perf_counter() - start


def run_profile(config: EngineConfig, state: dict[bytes, bytes], top: int) -> None:
    """The partition's restore under cProfile: the `top` functions by cumulative time."""
    profiler = cProfile.Profile()
    profiler.enable()
    PartitionEngine.restore(config, state, 0, 1)
    profiler.disable()
    print("profile of PartitionEngine.restore (cProfile, by cumulative time):", flush=True)
    pstats.Stats(profiler, stream=sys.stdout).sort_stats("cumulative").print_stats(top)


# ------------------------------------------------------------------ the parent


def child(*args: str) -> dict[str, Any]:
    """Run a step in a fresh process; the figures it wrote."""
    folder = Path(args[-1])
    subprocess.run([sys.executable, __file__, *args], check=True)
    data: dict[str, Any] = orjson.loads((folder / "result.json").read_bytes())
    return data


def measure(accounts: int, days: int, batch: int, profile: int, cache: int) -> dict[str, Any]:
    """Every figure of one size."""
    with tempfile.TemporaryDirectory(prefix="bench-state-") as tmp:
        figures = child("--step", "build", "--accounts", str(accounts), "--days", str(days),
                        "--batch", str(batch), tmp)  # fmt: skip
        state = compact(Path(tmp) / "changelog.bin")
        figures.update(sizes(state))
        with (Path(tmp) / "state.bin").open("wb") as out:
            marshal.dump(state, out)
        (Path(tmp) / "router.bin").write_bytes(marshal.dumps(state["router"]))
        with (Path(tmp) / "partition.stream").open("wb") as out:  # as a changelog is read
            records = list(state["0"].items())
            for start in range(0, len(records), STREAM_BATCH):
                marshal.dump(records[start : start + STREAM_BATCH], out)
        del state
        gc.collect()
        figures.update(child("--step", "restore", "--top", str(profile), tmp))
        figures.update(child("--step", "disk", "--cache", str(cache), tmp))
        figures.update(child("--step", "router", tmp))
        figures.update(child("--step", "router-disk", "--cache", str(cache), tmp))
        figures.update(child("--step", "build-disk", "--accounts", str(accounts),
                             "--days", str(days), "--batch", str(batch),
                             "--cache", str(cache), tmp))  # fmt: skip
    figures["cache"] = cache
    figures["simulated"] = accounts
    return figures


def report(f: dict[str, Any], days: int, batch: int) -> None:
    """Print one size's figures."""
    n, events, inputs = f["accounts"], f["events"], f["input_bytes"]
    print(
        f"--- {f['simulated']:,} simulated accounts over {days} days (seed {SEED})\n"
        f"input     {events:,} events ({f['lines']:,} lines), {inputs / MB:,.1f} MB of JSON "
        f"lines ({inputs / events:,.0f} bytes/event); {n:,} accounts held, "
        f"{f['holders'] - n:,} unidentified visitors; {events / n:,.1f} events/account"
    )
    print(
        f"changelog {f['records']:,} records, {f['bytes'] / MB:,.1f} MB compacted: "
        f"{f['bytes'] / n:,.0f} bytes/account, {f['bytes'] / events:,.0f} bytes/event, "
        f"{f['bytes'] / inputs:.2f}x the input (target <= {RATIO_TARGET:.0f}x); holders "
        f"{f['holders_bytes'] / MB:,.1f} MB, archive chunks {f['chunks_bytes'] / MB:,.1f} MB, "
        f"router (shadows, aliases, redirects) {f['router_bytes'] / MB:,.1f} MB, forwards and "
        f"absorbed {f['other_bytes'] / MB:,.1f} MB; before compaction "
        f"{f['written'] / MB:,.1f} MB written in {f['batches']:,} batches of {batch:,} events "
        f"({f['written'] / inputs:.2f}x the input); floor: pickled event_ids by key "
        f"{f['floor_bytes'] / n:,.0f} bytes/account ({f['floor_bytes'] / inputs:.2f}x)"
    )
    print(
        f"rss       building: +{f['build_rss'] / MB:,.0f} MB, {f['build_rss'] / n:,.0f} "
        f"bytes/account -> {f['build_rss'] / n * RSS_AT / 1024**3:,.2f} GB at {RSS_AT:,} "
        f"accounts; restored in a fresh process: +{f['restore_rss'] / MB:,.0f} MB, "
        f"{f['restore_rss'] / n:,.0f} bytes/account -> "
        f"{f['restore_rss'] / n * RSS_AT / 1024**3:,.2f} GB (target <= "
        f"{RSS_TARGET / 1024**3:.0f} GB), the state read and dropped included (it took "
        f"+{f['state_rss'] / MB:,.0f} MB while read); the engine alone, on top of the state "
        f"read: {f['on_top'] / n:,.0f} bytes/account -> "
        f"{f['on_top'] / n * RSS_AT / 1024**3:,.2f} GB; floor: the event_ids dict unpickled "
        f"+{f['floor_rss'] / MB:,.0f} MB, {f['floor_rss'] / n:,.0f} bytes/account; peak RSS "
        f"build {f['build_peak'] / MB:,.0f} MB, restore {f['restore_peak'] / MB:,.0f} MB"
    )
    per = f["restore"] / n
    print(
        f"restore   partition {f['restore']:,.2f} s ({f['restore_cpu']:,.2f} s CPU), "
        f"{per * 1e6:,.1f} us/account -> {per * RESTORE_AT:,.1f} s at {RESTORE_AT:,} accounts "
        f"(target <= {RESTORE_TARGET:.0f} s); {f['restored_accounts']:,} accounts restored; "
        f"router (identity stage) {f['router']:,.2f} s; parsing the holders only: "
        f"Holder.from_bytes {f['parse']:,.2f} s, orjson.loads {f['loads']:,.2f} s; floor: "
        f"pickle round trip {f['floor_dumps'] + f['floor_loads']:,.2f} s; building the "
        f"engine took {f['build_cpu']:,.1f} s CPU ({events / f['build_cpu']:,.0f} events/s)",
        flush=True,
    )


def report_disk(f: dict[str, Any]) -> None:
    """Print one size's figures on disk."""
    n, events = f["accounts"], f["events"]

    def gb(name: str) -> str:
        return f"{f[name] / n * RSS_AT / 1024**3:,.2f} GB"

    print(
        f"on disk   at most {f['cache']:,} journeys in memory, the rest in RocksDB: building "
        f"+{f['disk_build_rss'] / MB:,.0f} MB, {f['disk_build_rss'] / n:,.0f} bytes/account "
        f"-> {gb('disk_build_rss')} at {RSS_AT:,} (in memory {gb('build_rss')}); once freed "
        f"memory went back to the OS +{f['disk_build_live'] / MB:,.0f} MB -> "
        f"{gb('disk_build_live')} (in memory {gb('build_live')}; RocksDB's own "
        f"{f['disk_build_rocks'] / MB:,.0f} MB of it, bounded), "
        f"{events / f['disk_build_cpu']:,.0f} events/s (in memory "
        f"{events / f['build_cpu']:,.0f}), {f['disk_loads']:,} journeys read back, RocksDB "
        f"{f['disk_files'] / MB:,.0f} MB on disk; restored: {f['disk_restore']:,.2f} s "
        f"({f['disk_restore'] / n * RESTORE_AT:,.1f} s at {RESTORE_AT:,}), "
        f"+{f['disk_restore_rss'] / MB:,.0f} MB once the state read is dropped "
        f"-> {gb('disk_restore_rss')}, +{f['disk_restore_live'] / MB:,.0f} MB once freed "
        f"memory went back -> {gb('disk_restore_live')}, RocksDB's own "
        f"{f['disk_restore_rocks'] / MB:,.0f} MB of it (target <= "
        f"{RSS_TARGET / 1024**3:.0f} GB); the identity router restored alone (another stage, "
        f"one partition for all accounts) +{f['router_rss'] / MB:,.0f} MB -> "
        f"{gb('router_rss')}, on disk with at most {f['cache']:,} entries per table in memory "
        f"+{f['router_disk_rss'] / MB:,.0f} MB -> {gb('router_disk_rss')} (RocksDB's own "
        f"{f['router_disk_rocks'] / MB:,.0f} MB of it; {f['router_disk_wakes']:,} visitor "
        f"timers), restored in {f['router_disk_restore']:,.2f} s, its RocksDB "
        f"{f['disk_router_files'] / MB:,.0f} MB on disk after the build; peak "
        f"RSS building on disk {f['disk_build_peak'] / MB:,.0f} MB",
        flush=True,
    )


def line(xs: list[float], ys: list[float], at: float) -> float:
    """The least-squares line through (xs, ys), at `at` (the only point's ratio if one)."""
    if len(xs) < 2:
        return ys[0] / xs[0] * at
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum(
        (x - mx) ** 2 for x in xs
    )
    return my + slope * (at - mx)


def summary(all_figures: list[dict[str, Any]]) -> None:
    """Least-squares lines over the sizes, extrapolated to the targets' sizes."""
    xs = [float(f["accounts"]) for f in all_figures]

    def at(name: str, where: float) -> float:
        return line(xs, [float(f[name]) for f in all_figures], where)

    trip = at("floor_dumps", RESTORE_AT) + at("floor_loads", RESTORE_AT)
    worker = at("disk_restore_live", RSS_AT) + at("router_disk_rss", RSS_AT)
    ratio = sum(f["bytes"] for f in all_figures) / sum(f["input_bytes"] for f in all_figures)

    print(
        f"=== extrapolated linearly (least squares over {len(xs)} sizes, "
        f"{int(xs[0]):,}..{int(xs[-1]):,} accounts held)\n"
        f"rss       at {RSS_AT:,} accounts: building {at('build_rss', RSS_AT) / 1024**3:,.2f} GB, "
        f"restored {at('restore_rss', RSS_AT) / 1024**3:,.2f} GB, of which the engine alone "
        f"{at('on_top', RSS_AT) / 1024**3:,.2f} GB (target <= "
        f"{RSS_TARGET / 1024**3:.0f} GB); floor {at('floor_rss', RSS_AT) / 1024**3:,.2f} GB\n"
        f"restore   at {RESTORE_AT:,} accounts: {at('restore', RESTORE_AT):,.1f} s (target <= "
        f"{RESTORE_TARGET:.0f} s); Holder.from_bytes alone {at('parse', RESTORE_AT):,.1f} s; "
        f"floor pickle round trip {trip:,.1f} s\n"
        f"changelog compacted {ratio:.2f}x "
        f"the input over all sizes (target <= {RATIO_TARGET:.0f}x)\n"
        f"on disk   at {RSS_AT:,} accounts, at most {all_figures[0]['cache']:,} journeys in "
        f"memory: building {at('disk_build_rss', RSS_AT) / 1024**3:,.2f} GB, "
        f"{at('disk_build_live', RSS_AT) / 1024**3:,.2f} GB once freed memory went back "
        f"(router included; in memory {at('build_live', RSS_AT) / 1024**3:,.2f} GB); "
        f"restored {at('disk_restore_rss', RSS_AT) / 1024**3:,.2f} GB, "
        f"{at('disk_restore_live', RSS_AT) / 1024**3:,.2f} GB once freed memory went back; "
        f"the identity router alone {at('router_rss', RSS_AT) / 1024**3:,.2f} GB in memory, "
        f"{at('router_disk_rss', RSS_AT) / 1024**3:,.2f} GB on disk; a worker holding both "
        f"stages on disk {worker / 1024**3:,.2f} GB (target <= "
        f"{RSS_TARGET / 1024**3:.0f} GB for the worker); restore at {RESTORE_AT:,} accounts "
        f"{at('disk_restore', RESTORE_AT):,.1f} s (target <= {RESTORE_TARGET:.0f} s)",
        flush=True,
    )


def main() -> None:
    """Measure each size in child processes and print it, then the extrapolation; as a
    child (`--step`), one step of one size, its figures written to the folder."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--accounts", type=int, nargs="+", default=[10_000, 50_000, 100_000, 250_000],
        help="simulated accounts of each size (more than end up identified)",
    )  # fmt: skip
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--batch", type=int, default=5000, help="events between changes()")
    parser.add_argument("--profile", action="store_true", help="profile the largest size's restore")
    parser.add_argument("--top", type=int, default=15, help="functions the profile prints")
    parser.add_argument(
        "--cache", type=int, default=20_000, help="journeys in memory, on disk (the setting "
        "state_cache)",
    )  # fmt: skip
    parser.add_argument(
        "--step",
        choices=("build", "restore", "disk", "build-disk", "router", "router-disk"),
        help=argparse.SUPPRESS,
    )
    parser.add_argument("folder", nargs="?", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.step is not None:
        folder = Path(args.folder)
        if args.step == "build":
            result = build(args.accounts[0], args.days, args.batch, folder)
        elif args.step == "build-disk":
            result = build_on_disk(args.accounts[0], args.days, args.batch, args.cache, folder)
        elif args.step == "disk":
            result = restore_on_disk(folder, args.cache)
        elif args.step == "router":
            result = restore_router(folder)
        elif args.step == "router-disk":
            result = restore_router_on_disk(folder, args.cache)
        else:
            result = restore(folder, args.top)
        (folder / "result.json").write_bytes(orjson.dumps(result))
        return
    done = []
    sizes_asked = sorted(args.accounts)
    for accounts in sizes_asked:
        profile = args.top if args.profile and accounts == sizes_asked[-1] else 0
        figures = measure(accounts, args.days, args.batch, profile, args.cache)
        report(figures, args.days, args.batch)
        report_disk(figures)
        done.append(figures)
    summary(done)


if __name__ == "__main__":
    main()
