"""The Faust app: topics, the agents and the idle watcher, around the pure engine.

    journeys.events (N partitions)       ingest agents, one per partition, on any worker:
            │                            validate; invalid → journeys.dead-letters
            ▼
    journeys.internal.ordered (1)        identity agent, on the one worker that owns it:
            │                            watermark, event-time order, identity router
            ▼
    journeys.internal.journeys (P)  ◄─┐  journey agents, one engine per partition, on any
            │                         │  worker; a merged journey's state goes to its
            │        absorbs ─────────┘  winner's partition
            ▼
    journeys.internal.rows (P)  ──►  the sink (ClickHouse)
    journeys.transitions, journeys.alerts  ──►  anyone

Ingest scales with the input's partitions, the journey stage with P
(`JOURNEYS_JOURNEY_PARTITIONS`); only identity, which crosses every key (a
cookie, an email and an ERP id of one account), is one stream. Each stage's
state lives in its compacted changelog topic (`journeys.streams.changelog`):
a worker that takes a partition over, after a crash or a rebalance, reads its
state from Kafka and goes on where the last save left it.

**Exactly once, fenced.** Each stage partition (identity 0, journeys 0..P-1)
writes through a transactional producer of its own (`StageWriter`, its
`transactional_id` `<group>:<stage>:<partition>`): per batch, the stage's
output, its changelog records and the input offsets it consumed commit in one
Kafka transaction. The worker consumes `read_committed` (`_read_committed`),
so nothing of an aborted batch is ever read. A worker that takes a partition
over opens its writer before it loads the state, which fences the previous
owner at the broker: a worker frozen while the group moved its partitions,
then let go, has its next commit refused (`Fenced`) and stops. The journey
agent commits one transaction per journey partition of a batch (fencing is per
`transactional_id`). Faust commits no offsets of the stages' topics (they are
declared `acks=False`; the agents still ack, for Faust's bookkeeping): only the
transactions do. A re-read is skipped anyway by the input offset each stage
keeps in its state.

Ingest is at least once: a batch it forwards again after a crash or a
rebalance is dropped by the identity stage (it keeps the highest source offset
applied per source partition). Its agents take their input without automatic
acks and ack only once Kafka acknowledged what they sent. A send or commit that
fails stops the worker (exit status 1) before anything moves; it is restarted
and reads again from the last commit. A broker outage is waited out: sends and
transactions wait up to `SEND_PATIENCE` and the worker reports unhealthy
meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn

import faust

from journeys.producers.kafka import explain, faust_options, unreachable
from journeys.producers.topics import Topics
from journeys.schemas.codec import (
    DRAIN_JSON,
    alert_json,
    dead_letter_json,
    encode_row,
    idle_json,
    pack,
    transition_json,
)
from journeys.schemas.privacy import PrivacyGate
from journeys.schemas.rows import Output
from journeys.schemas.settings import Settings
from journeys.streams.changelog import Changelog, Fenced, Outgoing, StageWriter
from journeys.streams.config import engine_config
from journeys.streams.engine.commands import Command, to_wire
from journeys.streams.ingest import Fetched, IdleWatch, split
from journeys.streams.metrics import report
from journeys.streams.stage import STAGE_META, IdentityStage, JourneyStage, Sealed

if TYPE_CHECKING:
    from aiokafka.structs import TopicPartition

log = logging.getLogger(__name__)

INGEST_BATCH = 5_000
STAGE_BATCH = 200
#: A send unacknowledged for longer than this makes the worker report unhealthy.
SEND_PATIENCE = 10.0
#: Exit status of a worker stopped by a failed send (its input is read again on restart).
EXIT_SEND_FAILED = 1


@dataclass
class WorkerState:
    """What the agents and timers of one worker process share, and what it reports."""

    settings: Settings
    source_partitions: int
    idle: IdleWatch
    #: The identity stage, while this worker owns the ordered topic.
    identity: IdentityStage | None = None
    #: The journey stages of the partitions this worker owns.
    journeys: dict[int, JourneyStage] = field(default_factory=dict)
    #: The transactional writer of each stage partition this worker owns (`identity`, 0)
    #: or (`journeys`, p).
    writers: dict[tuple[str, int], StageWriter] = field(default_factory=dict)
    #: (topic, partition) assigned to this worker, as of the last rebalance callback: a
    #: stage partition's writer is opened only while it is here.
    assigned: set[tuple[str, int]] = field(default_factory=set)
    counters: dict[str, int] = field(default_factory=lambda: {"ingested": 0, "invalid": 0})
    #: When each delivery still waiting for Kafka's acknowledgements began (monotonic).
    sending: dict[object, float] = field(default_factory=dict)
    #: Consent and the suppression list, applied to raw events before anything else sees
    #: them (`journeys.schemas.privacy`); None: every valid event goes on.
    gate: PrivacyGate | None = None
    #: `time.monotonic()` since which the consumer has not known its group coordinator.
    coordinator_lost_at: float | None = None
    problem: str | None = "starting"
    unhealthy_since: float = field(default_factory=time.monotonic)


def create_app(settings: Settings, source_partitions: int, idle_after: float = 2.0) -> faust.App:
    """A Faust app for these settings; `source_partitions` is the events topic's count."""
    (settings.data_dir / "faust").mkdir(parents=True, exist_ok=True)
    names = Topics.of(settings)
    partitions = settings.journey_partitions
    app = faust.App(
        f"{settings.topic_prefix}journeys",
        **faust_options(settings),
        value_serializer="raw",
        key_serializer="raw",
        datadir=str(settings.data_dir / "faust"),
        store="memory://",
        web_enabled=False,
        broker_commit_interval=1.0,
        stream_buffer_maxsize=20_000,
    )
    _read_committed()
    state = WorkerState(settings, source_partitions, IdleWatch(idle_after))
    config = engine_config(settings)
    events = app.topic(names.events, value_type=bytes)
    # The stages' input offsets are committed by their transactions only: Faust commits
    # none of these topics' offsets (acks=False), so no commit of its can race one.
    ordered = app.topic(names.ordered, value_type=bytes, partitions=1, internal=True, acks=False)
    journeys = app.topic(
        names.journeys, value_type=bytes, partitions=partitions, internal=True, acks=False
    )
    # Written by the stages' writers (aiokafka), declared with the other internal topics.
    app.topic(names.rows, value_type=bytes, partitions=partitions, internal=True)
    dead_letters = app.topic(names.dead_letters, value_type=bytes, internal=True)
    identity_log = Changelog(settings, names.identity_state, STAGE_META)
    journeys_log = Changelog(settings, names.journeys_state, STAGE_META)
    group = app.conf.id

    async def deliver(sends: list[Awaitable[Any]]) -> None:
        """Wait until Kafka acknowledged every send; raise the first failure."""
        token = object()
        state.sending[token] = time.monotonic()
        try:
            await asyncio.gather(*sends)
        finally:
            del state.sending[token]

    async def commit(
        writer: StageWriter, out: Outgoing, offsets: dict[TopicPartition, int]
    ) -> bool:
        """One stage partition's batch in one transaction (watched like a send)."""
        token = object()
        state.sending[token] = time.monotonic()
        try:
            return await writer.commit(out, offsets)
        finally:
            del state.sending[token]

    async def open_writer(stage: str, partition: int) -> StageWriter | None:
        """The stage partition's writer, opened: older owners are fenced from now on. None
        unless this worker is assigned the partition, or if it was revoked meanwhile (a
        worker must never fence the partition's next owner)."""
        topic = names.ordered if stage == "identity" else names.journeys
        if (topic, partition) not in state.assigned:
            return None
        key = (stage, partition)
        writer = StageWriter(settings, f"{group}:{stage}:{partition}", group)
        old, state.writers[key] = state.writers.get(key), writer
        if old is not None:
            await old.close()
        await writer.open()  # a revocation meanwhile waits for it, then closes it
        return None if writer.closed else writer

    opening = asyncio.Lock()

    async def open_identity() -> IdentityStage | None:
        """The identity stage, read from its changelog if this worker has not yet (after
        fencing any previous owner); None if this worker does not own it."""
        async with opening:
            stage = state.identity
            if stage is None:
                writer = await open_writer("identity", 0)
                if writer is None:
                    return None
                salt = state.gate.salt if state.gate is not None else b""  # forget requests
                folder = settings.data_dir / "state" / "identity"
                stage = IdentityStage(
                    config,
                    settings.allowed_lateness,
                    partitions,
                    salt,
                    folder,
                    settings.state_cache,
                    settings.erase_within / 4000,
                )
                store = stage.open_store()
                try:
                    if store is None:
                        stage.restore(await identity_log.load(0))
                    else:  # a save at a time into the store: the graph never whole in memory
                        await identity_log.load_into(0, store)
                        stage.restore_stored()
                except BaseException:
                    stage.close()
                    raise
                if writer.closed:
                    stage.close()
                    return None  # revoked while it loaded
                # Its last outbox was committed with the state that holds it: sent already.
                stage.outbox = []
                state.identity = stage
                log.info("identity stage opened at input offset %s", stage.offset)
            return stage

    @app.agent(events)
    async def ingest(stream: Any) -> None:
        """Validate raw events; forward valid ones, dead-letter the rest; then ack."""
        async for batch in stream.noack_take(INGEST_BATCH, within=0.05):
            try:
                now = int(time.time() * 1000)
                messages = [
                    (e.message.topic, e.message.partition, e.message.offset, _bytes(e.value))
                    for e in batch
                ]
                out = split(messages, state.source_partitions, now, state.gate)
                sends = [await ordered.send(value=m, partition=0) for m in pack(out.forward)]
                for row in out.dead_letters:
                    sends.append(await dead_letters.send(value=dead_letter_json(row)))
                await deliver(sends)
            except Exception as exc:
                _stop("ingest", exc, state.settings)
            for event in batch:
                await stream.ack(event)
            state.idle.delivered(out.next_offsets, time.time())
            state.counters["ingested"] += len(out.forward)
            state.counters["invalid"] += len(out.dead_letters)
            for reason, count in out.withheld.items():
                state.counters[reason] = state.counters.get(reason, 0) + count

    @app.agent(ordered)
    async def identity(stream: Any) -> None:
        """Route events to journey partitions; commit what the batch sends, the stage's
        state and the input offset in one transaction; then ack."""
        async for batch in stream.noack_take(STAGE_BATCH, within=0.05):
            done = False
            try:
                stage = state.identity or await open_identity()
                if stage is None:  # not (or no longer) this worker's: its owner reads it
                    log.warning("identity batch of a partition not owned here: not written")
                    continue
                writer = state.writers.get(("identity", 0))
                commands, links = stage.handle((e.message.offset, e.value) for e in batch)
                sealed = stage.seal(commands, links)
                if state.identity is stage and writer is not None:
                    out = Outgoing()
                    _add_sealed(out, sealed, names)
                    stage.outbox = []  # committed with its sends: nothing to send again
                    identity_log.save(out, 0, stage.state_changes())
                    last = max(e.message.offset for e in batch)
                    done = await commit(writer, out, {_tp(names.ordered, 0): last + 1})
            except Exception as exc:
                _stop("identity stage", exc, state.settings)
            if not done:  # revoked meanwhile: the new owner reads this batch again
                log.warning("identity stage revoked during a batch: its output not written")
                continue
            for event in batch:
                await stream.ack(event)

    @app.agent(journeys)
    async def journey(stream: Any) -> None:
        """Run the journey partitions; per partition, commit its rows, absorbs, public
        rows, state and input offset in one transaction; ack what was committed."""
        async for batch in stream.noack_take(STAGE_BATCH, within=0.05):
            done: set[int] = set()
            try:
                by_partition: dict[int, list[Any]] = {}
                for event in batch:
                    by_partition.setdefault(event.message.partition, []).append(event)
                missing = [p for p in sorted(by_partition) if p not in state.journeys]
                if state.settings.state_cache:  # one partition's state read at a time
                    for p in missing:
                        await open_journeys(p)
                else:
                    await asyncio.gather(*(open_journeys(p) for p in missing))
                commits = []
                for partition, items in sorted(by_partition.items()):
                    stage = state.journeys.get(partition)
                    writer = state.writers.get(("journeys", partition))
                    if stage is None or writer is None:
                        continue  # revoked while the others opened
                    out, absorbs = stage.handle((e.message.offset, e.value) for e in items)
                    outgoing = Outgoing()
                    _publish(outgoing, out, names, partition)
                    _add_commands(outgoing, absorbs, names.journeys)
                    journeys_log.save(outgoing, partition, stage.state_changes())
                    last = max(e.message.offset for e in items)
                    offsets = {_tp(names.journeys, partition): last + 1}
                    commits.append((partition, commit(writer, outgoing, offsets)))
                results = await asyncio.gather(*(c for _, c in commits))
                done = {p for (p, _), ok in zip(commits, results, strict=True) if ok}
            except Exception as exc:
                _stop("journey stage", exc, state.settings)
            if len(done) < len(by_partition):
                log.warning(
                    "journey partitions %s revoked during a batch: their output not written",
                    sorted(set(by_partition) - done),
                )
            for event in batch:
                if event.message.partition in done:  # else revoked: its new owner reads it
                    await stream.ack(event)

    async def open_journeys(partition: int) -> None:
        """A journey partition's stage, after its writer fenced any previous owner (if
        this worker owns the partition)."""
        writer = await open_writer("journeys", partition)
        if writer is None:
            return
        folder = state.settings.data_dir / "state" / "journeys"
        stage = JourneyStage(
            config,
            partition,
            partitions,
            folder,
            state.settings.state_cache,
            state.settings.erase_within / 4000,
        )
        store = stage.open_store()
        try:
            if store is None:
                stage.restore(await journeys_log.load(partition))
            else:  # the changelog goes to the store a save at a time, never whole in memory
                await journeys_log.load_into(partition, store)
                stage.restore_stored()
        except BaseException:
            stage.close()
            raise
        if writer.closed:
            stage.close()
            return  # revoked while it loaded
        state.journeys[partition] = stage
        log.info("journey partition %d opened at offset %s", partition, stage.offset)

    def source_fetches() -> tuple[float, dict[int, Fetched]]:
        now = time.time()
        assigned = {tp.partition for tp in app.consumer.assignment() if tp.topic == names.events}
        state.idle.assigned(assigned, now)
        return now, _fetched(app, names.events, assigned)

    @app.timer(interval=1.0)
    async def watch_health() -> None:
        """Report unhealthy while Kafka stays silent or leaves sends unacknowledged."""
        _report_health(app, state, *source_fetches())

    @app.timer(interval=0.5)
    async def watch_idle() -> None:
        """Announce idle source partitions; ask for a drain when all are (see streams.stage)."""
        try:
            due = state.idle.due(*source_fetches())
            if due:
                sources = state.source_partitions
                sends = [await ordered.send(value=idle_json(p, sources), partition=0) for p in due]
                await deliver(sends)
                state.idle.announced(due)
            stage = state.identity
            if stage is None and (names.ordered, 0) in state.assigned:
                # Opened without waiting for input: a drain may be all it has left to do.
                stage = await open_identity()
            if stage is not None and stage.drain_due():
                stage.drain_requested = True
                await deliver([await ordered.send(value=DRAIN_JSON, partition=0)])
        except Exception as exc:  # nothing was announced; the next tick decides again
            log.warning("announcing idle partitions failed: %r", exc)
            if state.identity is not None:
                state.identity.drain_requested = False

    async def forget_stages(partitions: Any) -> None:
        """Stages of these partitions are read again from their changelogs when next needed
        (a partition revoked, or assigned anew, may have moved on elsewhere meanwhile); their
        writers close once a commit under way is done, so the next owner fences none."""
        closing = []
        for tp in partitions:
            if tp.topic == names.ordered:
                if state.identity is not None:
                    state.identity.close()
                state.identity = None
                closing.append(state.writers.pop(("identity", 0), None))
            elif tp.topic == names.journeys:
                stage = state.journeys.pop(tp.partition, None)
                if stage is not None:
                    stage.close()
                closing.append(state.writers.pop(("journeys", tp.partition), None))
        await asyncio.gather(*(w.close() for w in closing if w is not None))

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def on_assigned(app: faust.App, assigned: Any, **kwargs: Any) -> None:
        await forget_stages(assigned)
        state.assigned |= {(tp.topic, tp.partition) for tp in assigned}

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def on_revoked(app: faust.App, revoked: Any, **kwargs: Any) -> None:
        state.assigned -= {(tp.topic, tp.partition) for tp in revoked}
        await forget_stages(revoked)

    @app.on_before_shutdown.connect  # type: ignore[arg-type]
    async def close_writers(app: faust.App, **kwargs: Any) -> None:
        writers = list(state.writers.values())
        state.writers.clear()
        await asyncio.gather(*(w.close() for w in writers))

    app.journeys_state = state  # type: ignore[attr-defined]
    return app


def _bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else bytes(value or b"")


def _publish(out: Outgoing, rows: Output, names: Topics, partition: int) -> None:
    """A journey partition's rows, packed, for its partition of the rows topic, and the
    public transitions and alerts, one message each, keyed by account. (The identity
    stage's links travel with its commands: `IdentityStage.seal`.)"""
    encoded = [encode_row(row) for row in rows.events]
    encoded += [encode_row(row) for row in rows.transitions]
    encoded += [encode_row(row) for row in rows.journeys]
    encoded += [encode_row(row) for row in rows.alerts]
    encoded += [encode_row(row) for row in rows.links]
    encoded += [encode_row(row) for row in rows.generations]  # after the rows they report
    out.add_values(names.rows, partition, pack(encoded))
    # A rebuild's copies of what did not change (`restated`) are stored, not published.
    transitions = [t for t in rows.transitions if not t.restated]
    if transitions:
        out.add_keyed(
            names.transitions, [(t.account_id.encode(), transition_json(t)) for t in transitions]
        )
    alerts = [a for a in rows.alerts if not a.restated]
    if alerts:
        out.add_keyed(names.alerts, [(a.account_id.encode(), alert_json(a)) for a in alerts])


def _add_commands(out: Outgoing, commands: list[tuple[int, Command]], topic: str) -> None:
    """Commands (absorbs) packed per journeys partition."""
    by_partition: dict[int, list[bytes]] = {}
    for partition, command in commands:
        by_partition.setdefault(partition, []).append(to_wire(command))
    for partition, items in sorted(by_partition.items()):
        out.add_values(topic, partition, pack(items))


def _add_sealed(out: Outgoing, sealed: list[Sealed], names: Topics) -> None:
    """The identity stage's messages (`IdentityStage.seal`) for their topics."""
    for message in sealed:
        topic = names.journeys if message.journeys else names.rows
        out.add_values(topic, message.partition, [message.value])


def _tp(topic: str, partition: int) -> TopicPartition:
    from aiokafka.structs import TopicPartition

    return TopicPartition(topic, partition)


def _read_committed() -> None:
    """Make Faust's worker consumer read `read_committed` (Faust sets it only with its own
    `processing_guarantee="exactly_once"`, which this app does not use): the stages'
    topics then never show records of an aborted or open transaction."""
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    create = AIOKafkaConsumerThread._create_worker_consumer
    if getattr(create, "read_committed", False):
        return

    def create_worker_consumer(self: Any, transport: Any) -> Any:
        consumer = create(self, transport)
        consumer._isolation_level = "read_committed"  # read by start(), into its fetcher
        return consumer

    create_worker_consumer.read_committed = True  # type: ignore[attr-defined]
    AIOKafkaConsumerThread._create_worker_consumer = create_worker_consumer  # type: ignore[method-assign]


def _fetched(app: faust.App, topic: str, partitions: set[int]) -> dict[int, Fetched]:
    """What this worker's consumer last heard from the broker about its source partitions.

    Faust has no public accessor for the fetch time, so this reads aiokafka's
    consumer (`last_poll_timestamp`, `highwater`) behind Faust's consumer thread,
    and Faust's committed offsets; anything missing counts as not heard.
    """
    try:
        consumer = app.consumer._thread._ensure_consumer()  # type: ignore[attr-defined]
        committed = app.consumer._committed_offset  # type: ignore[attr-defined]
    except Exception:
        return {}
    from aiokafka.structs import TopicPartition

    out = {}
    for partition in partitions:
        tp = TopicPartition(topic, partition)
        try:
            polled = consumer.last_poll_timestamp(tp)
            highwater = consumer.highwater(tp)
        except Exception:
            continue
        at = polled / 1000 if polled else None
        out[partition] = Fetched(highwater, at, committed.get(tp))
    return out


def _coordinator_known(app: faust.App) -> bool:
    """Whether the consumer knows its group coordinator (aiokafka forgets it when the
    broker stops answering); True when that cannot be read."""
    try:
        consumer = app.consumer._thread._ensure_consumer()  # type: ignore[attr-defined]
        return consumer._coordinator.coordinator_id is not None
    except Exception:
        return True


def _report_health(
    app: faust.App, state: WorkerState, now: float, fetched: dict[int, Fetched]
) -> None:
    clock = time.monotonic()
    if _coordinator_known(app):
        state.coordinator_lost_at = None
    elif state.coordinator_lost_at is None:
        state.coordinator_lost_at = clock
    lost = state.coordinator_lost_at
    sending = min(state.sending.values(), default=None)
    bootstrap = state.settings.kafka_bootstrap
    if sending is not None and clock - sending > SEND_PATIENCE:
        report(state, f"Kafka has not acknowledged sends for {clock - sending:.0f}s")
    elif lost is not None and clock - lost > state.idle.fresh_within:
        report(state, f"Kafka at {bootstrap} has not answered for {clock - lost:.0f}s")
    elif state.idle.stale(now, fetched):
        report(state, f"no fetch from Kafka at {bootstrap} lately")
    else:
        report(state, None)


def _stop(agent: str, exc: Exception, settings: Settings) -> NoReturn:
    """A send or a state save failed: stop the worker before any offset moves.

    The batch is not acknowledged, so a restarted worker reads it again. The
    process exits at once (no graceful shutdown that could let Faust commit
    more), with status `EXIT_SEND_FAILED`.
    """
    if isinstance(exc, Fenced):
        why = f"fenced: another worker owns the partition now ({exc})"
    elif unreachable(exc):
        why = explain(settings.kafka_bootstrap, agent, exc)
    else:
        why = repr(exc)
    log.critical("%s failed, stopping the worker (its input will be read again): %s", agent, why)
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stderr.flush()
    os._exit(EXIT_SEND_FAILED)
