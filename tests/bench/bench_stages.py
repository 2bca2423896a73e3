"""Benchmark: the streaming stages one at a time, and how the journey stage scales.

Run on demand (not part of the test suite; needs the local broker, or starts it):

    .venv/bin/python tests/bench/bench_stages.py [--accounts 1500] [--partitions 4] [--save]

The machine's cores are shared with the broker, so the journey stage is
measured on its own, over input made by the real identity stage:

- identity: events/s through `IdentityStage.handle` in this process (simulated
  events parsed and forwarded in packs as ingest forwards them, 200 messages
  a batch as the identity agent takes them), and with its commands encoded as
  the agent sends them; the commands are then produced to the journeys topic.
- engine: `JourneyEngine` over the same events sorted (bench_engine's figure:
  the identity graph and every partition in one process, no Kafka).
- journey stage: 1 and then 2 OS processes drain that topic, each pinned to a
  core of its own and assigned its share of the partitions: a plain aiokafka
  consumer, `JourneyStage.handle`, rows and absorbs encoded as the journey
  agent encodes them (`--send` also produces them, `--save` also saves each
  partition's state to a changelog topic after every batch; either commits each
  partition's batch in a transaction of its own, as the journey agent does). Figures: events/s
  from the first fetch to the last partition's end (wall), and events per
  second of the process's own CPU time, which does not depend on what else
  runs on the core. The scaling ratio is given both ways: wall (2 processes'
  events/s over 1's) and CPU-bound (the run's events over the busiest
  process's CPU seconds, i.e. what 2 cores of their own would do, over 1).
- `--workers`: the same input drained by 1 and then 2 real `journeys worker`
  processes (from their group's committed offsets, so to about a second).
- `--profile`: the in-process stage loop over every partition under cProfile,
  the top functions by cumulative time.

Absorbs that a partition sends to another one land behind the measured range
of the topic (the input was produced first); their count is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import multiprocessing
import os
import pstats
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition

from journeys.kafka_broker import ensure_broker
from journeys.processes import settings_env
from journeys.producers.kafka import PARTITION_FETCH_BYTES, aio_producer_options
from journeys.producers.simulator import simulate
from journeys.producers.topics import Topics, ensure_pipeline_topics, ensure_topics
from journeys.schemas.codec import DRAIN_JSON, forwarded_json, idle_json, pack
from journeys.schemas.errors import InvalidEvent
from journeys.schemas.event import parse_event
from journeys.schemas.settings import Settings
from journeys.streams.app import INGEST_BATCH, STAGE_BATCH, _add_commands, _publish
from journeys.streams.changelog import Changelog, Outgoing, StageWriter
from journeys.streams.config import engine_config
from journeys.streams.engine.commands import Command, to_wire
from journeys.streams.stage import STAGE_META, IdentityStage, JourneyStage

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository, for tests.*
from tests.bench.bench_engine import bench_engine, records  # noqa: E402

#: Target: 2 journey-stage processes drain at least this many times as fast as 1.
SCALING_TARGET = 1.7
#: The changelog the in-process runs save to (the real one is left to `--workers`).
BENCH_STATE = "bench.journeys-state"


# --------------------------------------------------------------------- identity


def forwarded_messages(lines: Sequence[bytes]) -> tuple[list[bytes], int]:
    """The ordered topic's messages for these lines, as ingest forwards them from one source
    partition (packs per ingest batch), then `idle` and `drain`; and the events' count."""
    forward = []
    for offset, line in enumerate(lines):
        try:
            record = parse_event(line)
        except InvalidEvent:
            continue
        forward.append(forwarded_json(record, 0, 1, offset))
    messages = [
        message
        for start in range(0, len(forward), INGEST_BATCH)
        for message in pack(forward[start : start + INGEST_BATCH])
    ]
    return [*messages, idle_json(0, 1), DRAIN_JSON], len(forward)


def encode_commands(commands: list[tuple[int, Command]]) -> list[tuple[int, bytes]]:
    """(partition, message) pairs, as the identity agent's `send_commands` sends them."""
    by_partition: dict[int, list[bytes]] = {}
    for partition, command in commands:
        by_partition.setdefault(partition, []).append(to_wire(command))
    return [
        (partition, message)
        for partition, items in sorted(by_partition.items())
        for message in pack(items)
    ]


def bench_identity(
    settings: Settings, messages: list[bytes], events: int
) -> list[tuple[int, bytes]]:
    """Run the identity stage over `messages`; print its speed; its encoded commands."""
    stage = IdentityStage(
        engine_config(settings), settings.allowed_lateness, settings.journey_partitions
    )
    batches = []
    handle = encode = 0.0
    out: list[tuple[int, bytes]] = []
    for start in range(0, len(messages), STAGE_BATCH):
        batch = list(enumerate(messages[start : start + STAGE_BATCH], start))
        began = time.process_time()
        commands, _links = stage.handle(batch)
        middle = time.process_time()
        out += encode_commands(commands)
        handle += middle - began
        encode += time.process_time() - middle
        batches.append(len(commands))
    print(
        f"identity      {events / handle:>9,.0f} events/s through IdentityStage.handle "
        f"(one core; {events / (handle + encode):,.0f}/s with its commands encoded; "
        f"{sum(batches):,} commands in {len(out):,} messages, {len(messages):,} input messages)"
    )
    return out


async def produce(settings: Settings, topic: str, messages: list[tuple[int, bytes]]) -> None:
    """Send (partition, value) messages in order and wait for every acknowledgement."""
    producer = AIOKafkaProducer(**aio_producer_options(settings))
    await producer.start()
    try:
        futures = [await producer.send(topic, value, partition=p) for p, value in messages]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


# ---------------------------------------------------------------- journey stage


@dataclass(frozen=True)
class DrainJob:
    """What one journey-stage process drains, and how."""

    settings: Settings
    partitions: tuple[int, ...]
    core: int | None
    save: bool
    send: bool


@dataclass
class Drained:
    """What one process did: counts, its wall-clock span (monotonic) and CPU seconds."""

    partitions: tuple[int, ...]
    events: int = 0
    commands: int = 0
    rows: int = 0
    absorbs: int = 0
    started: float = 0.0
    ended: float = 0.0
    cpu: float = 0.0
    cores: list[int] = field(default_factory=list)


async def drain(job: DrainJob, ready: Callable[[], object] = lambda: None) -> Drained:
    """Read the job's partitions of the journeys topic from the beginning to their current
    end through `JourneyStage`s, as the journey agent does; `ready` is called once set up."""
    settings = job.settings
    names = Topics.of(settings)
    config = engine_config(settings)
    total = settings.journey_partitions
    tps = [TopicPartition(names.journeys, p) for p in job.partitions]
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        enable_auto_commit=False,
        max_partition_fetch_bytes=PARTITION_FETCH_BYTES,
    )
    # One transactional writer per partition, as the journey agent commits (no offsets).
    writers: dict[int, StageWriter] = {}
    if job.send or job.save:
        run = uuid.uuid4().hex[:8]
        for p in job.partitions:
            writers[p] = StageWriter(settings, f"bench-{run}:journeys:{p}", f"bench-{run}")
            await writers[p].open()
    changelog = Changelog(settings, settings.topic(BENCH_STATE), STAGE_META) if job.save else None
    await consumer.start()
    result = Drained(job.partitions, cores=sorted(os.sched_getaffinity(0)))
    try:
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = {tp.partition: offset for tp, offset in (await consumer.end_offsets(tps)).items()}
        left = {p for p in job.partitions if end[p] > 0}
        stages = {p: JourneyStage(config, p, total) for p in job.partitions}
        ready()
        result.started, cpu = time.monotonic(), time.process_time()
        while left:
            polled = await consumer.getmany(*tps, timeout_ms=1000, max_records=STAGE_BATCH)
            commits = []
            for tp, messages in sorted(polled.items()):
                stage = stages[tp.partition]
                before = stage.commands
                out, absorbs = stage.handle((m.offset, m.value) for m in messages)
                result.commands += stage.commands - before
                result.events += len(out.events)
                result.rows += len(out)
                result.absorbs += len(absorbs)
                outgoing = Outgoing()  # encoded whether sent or not
                _publish(outgoing, out, names, tp.partition)
                _add_commands(outgoing, absorbs, names.journeys)
                if not job.send:
                    outgoing = Outgoing()
                if changelog is not None:
                    changelog.save(outgoing, tp.partition, stage.state_changes())
                if tp.partition in writers:
                    commits.append(writers[tp.partition].commit(outgoing, {}))
                if messages[-1].offset + 1 >= end[tp.partition]:
                    left.discard(tp.partition)
            await asyncio.gather(*commits)
        result.ended, result.cpu = time.monotonic(), time.process_time() - cpu
    finally:
        await consumer.stop()
        await asyncio.gather(*(writer.close() for writer in writers.values()))
    return result


def _drain_process(job: DrainJob, barrier: Any, results: Any) -> None:
    """One journey-stage process: pinned to its core, drains its partitions, reports."""
    if job.core is not None:
        os.sched_setaffinity(0, {job.core})
    results.put(asyncio.run(drain(job, barrier.wait)))


def drain_in_processes(settings: Settings, processes: int, save: bool, send: bool) -> list[Drained]:
    """Drain the journeys topic with `processes` processes, partitions dealt round-robin."""
    cores = sorted(os.sched_getaffinity(0))
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(processes), context.Queue()
    jobs = [
        DrainJob(
            settings,
            tuple(range(i, settings.journey_partitions, processes)),
            cores[i % len(cores)],
            save,
            send,
        )
        for i in range(processes)
    ]
    children = [context.Process(target=_drain_process, args=(j, barrier, results)) for j in jobs]
    for child in children:
        child.start()
    out = [results.get(timeout=600) for _ in children]
    for child in children:
        child.join(30)
    return sorted(out, key=lambda d: d.partitions)


@dataclass(frozen=True)
class Rates:
    """Events/s of a run: wall-clock, and CPU-bound (over the busiest process's CPU time)."""

    wall: float
    cpu_bound: float


def report_drain(processes: int, drained: list[Drained]) -> Rates:
    events = sum(d.events for d in drained)
    wall = max(d.ended for d in drained) - min(d.started for d in drained)
    busiest = max(d.cpu for d in drained)
    rates = Rates(events / wall, events / busiest)
    each = "; ".join(
        f"partitions {','.join(map(str, d.partitions))} on core {d.cores}: {d.events:,} events, "
        f"{d.events / d.cpu:,.0f}/CPU-s, {d.cpu / (d.ended - d.started):.0%} CPU"
        for d in drained
    )
    print(
        f"journey x{processes}   {rates.wall:>9,.0f} events/s wall, {rates.cpu_bound:,.0f} "
        f"events/s CPU-bound ({events:,} events, {sum(d.commands for d in drained):,} commands, "
        f"{sum(d.rows for d in drained):,} rows, {sum(d.absorbs for d in drained):,} absorbs in "
        f"{wall:.1f}s) [{each}]"
    )
    return rates


def verdict(name: str, figure: float, target: float) -> None:
    print(
        f"  target {name} >= {target:.2f}x: {figure:.2f}x, "
        f"{'met' if figure >= target else 'MISSED'}"
    )


def bench_journey_stage(settings: Settings, save: bool, send: bool, repeats: int) -> None:
    best: dict[int, Rates] = {}
    for processes in (1, 2):
        for _ in range(repeats):
            rates = report_drain(processes, drain_in_processes(settings, processes, save, send))
            old = best.get(processes)
            best[processes] = Rates(
                max(rates.wall, old.wall if old else 0.0),
                max(rates.cpu_bound, old.cpu_bound if old else 0.0),
            )
    print(f"2 journey-stage processes / 1 (best of {repeats}):")
    verdict("wall", best[2].wall / best[1].wall, SCALING_TARGET)
    verdict("CPU-bound", best[2].cpu_bound / best[1].cpu_bound, SCALING_TARGET)


def profile_stage(settings: Settings, save: bool, send: bool, top: int) -> None:
    """The in-process stage loop over every partition, under cProfile."""
    job = DrainJob(settings, tuple(range(settings.journey_partitions)), None, save, send)
    profiler = cProfile.Profile()
    profiler.enable()
    drained = asyncio.run(drain(job))
    profiler.disable()
    print(
        f"profile of one in-process journey stage over every partition ({drained.events:,} events):"
    )
    pstats.Stats(profiler, stream=sys.stdout).sort_stats("cumulative").print_stats(top)


# ------------------------------------------------------------------ real workers


def progress(settings: Settings, group: str, topic: str) -> tuple[int, int]:
    """The sum of the group's committed offsets on `topic`, and of its end offsets."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, group_id=group, enable_auto_commit=False
    )
    try:
        tps = [TopicPartition(topic, p) for p in range(settings.journey_partitions)]
        done = sum(consumer.committed(tp) or 0 for tp in tps)
        return done, sum(consumer.end_offsets(tps).values())
    finally:
        consumer.close()


def bench_workers(
    base: Settings, commands: list[tuple[int, bytes]], events: int, root: Path
) -> None:
    """Drain the commands with 1, then 2 `journeys worker` processes; events/s from their
    group's committed offsets (the first commit seen to the last)."""
    rates = {}
    for workers in (1, 2):
        settings = fresh(base, root)
        ensure_pipeline_topics(settings)
        asyncio.run(produce(settings, settings.topic("internal.journeys"), commands))
        env = {**os.environ, **settings_env(settings), "JOURNEYS_IDLE_AFTER": "1"}
        children = [
            subprocess.Popen([sys.executable, "-m", "journeys", "worker"], env=env)
            for _ in range(workers)
        ]
        group, topic, total = (
            f"{settings.topic_prefix}journeys",
            Topics.of(settings).journeys,
            len(commands),
        )
        try:
            deadline = time.monotonic() + 300
            first: tuple[float, int] | None = None
            done, end = 0, total
            while (done < end or done < total) and time.monotonic() < deadline:
                done, end = progress(settings, group, topic)
                if first is None and done:
                    first = (time.monotonic(), done)
                time.sleep(0.25)
            ended = time.monotonic()
        finally:
            for child in children:
                child.terminate()
            for child in children:
                child.wait(30)
        if first is None or done < end:
            print(f"workers x{workers}: did not finish ({done:,} of {end:,} messages committed)")
            return
        share = (done - first[1]) / done  # absorbs make the topic longer than the input
        rates[workers] = events * share / max(1e-3, ended - first[0])
        print(
            f"workers x{workers}   {rates[workers]:>9,.0f} events/s from committed offsets "
            f"({share:.0%} of the input after the first commit, {ended - first[0]:.1f}s)"
        )
    verdict("journeys worker x2 / x1", rates[2] / rates[1], SCALING_TARGET)


# -------------------------------------------------------------------------- main


def fresh(base: Settings, root: Path) -> Settings:
    """Settings with topics and a data dir of their own."""
    name = uuid.uuid4().hex[:8]
    return base.model_copy(update={"topic_prefix": f"bench{name}.", "data_dir": root / name})


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--accounts", type=int, default=1500)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--partitions", type=int, default=4, help="journey partitions (P)")
    parser.add_argument("--save", action="store_true", help="save state to a changelog per batch")
    parser.add_argument("--send", action="store_true", help="produce rows and absorbs")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each drain, best kept")
    parser.add_argument("--workers", action="store_true", help="also real `journeys worker`s")
    parser.add_argument("--profile", action="store_true", help="cProfile the stage loop")
    parser.add_argument("--top", type=int, default=25, help="functions shown by --profile")
    args = parser.parse_args()
    base = Settings(journey_partitions=args.partitions)
    ensure_broker(base)
    lines = list(simulate(accounts=args.accounts, days=args.days, seed=7))
    messages, events = forwarded_messages(lines)
    print(
        f"input         {events:,} simulated events, "
        f"{args.accounts:,} accounts over {args.days} days"
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        settings = fresh(base, root)
        commands = bench_identity(settings, messages, events)
        bench_engine(records(lines))
        ensure_pipeline_topics(settings)
        ensure_topics(settings, {BENCH_STATE: args.partitions})
        asyncio.run(produce(settings, settings.topic("internal.journeys"), commands))
        bench_journey_stage(settings, args.save, args.send, args.repeats)
        if args.workers:
            bench_workers(base, commands, events, root)
        if args.profile:
            profile_stage(settings, args.save, args.send, args.top)


if __name__ == "__main__":
    main()
