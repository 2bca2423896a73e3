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

Nothing is acknowledged before it is safe: the agents take their input
without automatic acks, wait until Kafka acknowledged everything they sent
and the stage's state is saved, and only then ack, so Faust commits only
offsets whose effects are stored. A send that fails stops the worker (exit
status 1) before anything moves; it is restarted and reads again from the
last commit. A broker outage is waited out: sends wait up to Faust's
`producer_request_timeout` and the worker reports unhealthy meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, NoReturn

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
from journeys.streams.changelog import Batches, Changelog
from journeys.streams.config import engine_config
from journeys.streams.engine.commands import Command, to_wire
from journeys.streams.ingest import Fetched, IdleWatch, split
from journeys.streams.metrics import report
from journeys.streams.stage import STAGE_META, IdentityStage, JourneyStage, Sealed

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
    state = WorkerState(settings, source_partitions, IdleWatch(idle_after))
    config = engine_config(settings)
    events = app.topic(names.events, value_type=bytes)
    ordered = app.topic(names.ordered, value_type=bytes, partitions=1, internal=True)
    journeys = app.topic(names.journeys, value_type=bytes, partitions=partitions, internal=True)
    rows = app.topic(names.rows, value_type=bytes, partitions=partitions, internal=True)
    dead_letters = app.topic(names.dead_letters, value_type=bytes, internal=True)
    batches = Batches(settings)
    identity_log = Changelog(batches, names.identity_state, STAGE_META)
    journeys_log = Changelog(batches, names.journeys_state, STAGE_META)

    async def deliver(sends: list[Awaitable[Any]]) -> None:
        """Wait until Kafka acknowledged every send; raise the first failure."""
        token = object()
        state.sending[token] = time.monotonic()
        try:
            await asyncio.gather(*sends)
        finally:
            del state.sending[token]

    async def send_sealed(outbox: list[Sealed]) -> list[Any]:
        """Send the identity stage's outbox (see `journeys.streams.stage`)."""
        return [
            await (journeys if sealed.journeys else rows).send(
                value=sealed.value, partition=sealed.partition
            )
            for sealed in outbox
        ]

    async def send_commands(commands: list[tuple[int, Command]]) -> list[Any]:
        by_partition: dict[int, list[bytes]] = {}
        for partition, command in commands:
            by_partition.setdefault(partition, []).append(to_wire(command))
        return [
            await journeys.send(value=message, partition=partition)
            for partition, items in sorted(by_partition.items())
            for message in pack(items)
        ]

    opening = asyncio.Lock()

    async def open_identity() -> IdentityStage:
        """The identity stage, read from its changelog if this worker has not yet."""
        async with opening:
            stage = state.identity
            if stage is None:
                salt = state.gate.salt if state.gate is not None else b""  # forget requests
                stage = IdentityStage(config, settings.allowed_lateness, partitions, salt)
                stage.restore(await identity_log.load(0))
                # Saved, maybe not sent: sent again (a journey partition applies it once).
                await deliver(await send_sealed(stage.outbox))
                state.identity = stage
                log.info(
                    "identity stage opened at input offset %s (%d messages sent again)",
                    stage.offset, len(stage.outbox),
                )  # fmt: skip
            return stage

    def owned(topic: str, partition: int) -> bool:
        """Whether this worker is assigned the partition now."""
        return any(
            tp.topic == topic and tp.partition == partition for tp in app.consumer.assignment()
        )

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
        """Route events to journey partitions; save the stage's state with what it is to
        send, send it, and ack input once Kafka has it all."""
        async for batch in stream.noack_take(STAGE_BATCH, within=0.05):
            try:
                stage = state.identity or await open_identity()
                commands, links = stage.handle((e.message.offset, e.value) for e in batch)
                outbox = stage.seal(commands, links)
                if state.identity is not stage:
                    continue  # revoked meanwhile: the new owner reads this batch again
                await identity_log.save(0, stage.state_changes())
                await deliver(await send_sealed(outbox))
            except Exception as exc:
                _stop("identity stage", exc, state.settings)
            for event in batch:
                await stream.ack(event)

    @app.agent(journeys)
    async def journey(stream: Any) -> None:
        """Run the journey partitions; ack input once rows and absorbs are sent and each
        partition's state is saved."""
        async for batch in stream.noack_take(STAGE_BATCH, within=0.05):
            try:
                by_partition: dict[int, list[Any]] = {}
                for event in batch:
                    by_partition.setdefault(event.message.partition, []).append(event)
                opened = {}
                sends: list[Any] = []
                missing = [p for p in sorted(by_partition) if p not in state.journeys]
                loaded = await asyncio.gather(*(journeys_log.load(p) for p in missing))
                for partition, saved in zip(missing, loaded, strict=True):
                    stage = JourneyStage(config, partition, partitions)
                    stage.restore(saved)
                    state.journeys[partition] = stage
                    log.info("journey partition %d opened at offset %s", partition, stage.offset)
                for partition, items in sorted(by_partition.items()):
                    stage = state.journeys[partition]
                    opened[partition] = stage
                    out, absorbs = stage.handle((e.message.offset, e.value) for e in items)
                    sends += await _publish(out, rows, batches, names, partition)
                    sends += await send_commands(absorbs)
                await deliver(sends)
                kept = [p for p, stage in opened.items() if state.journeys.get(p) is stage]
                await asyncio.gather(
                    *(journeys_log.save(p, opened[p].state_changes()) for p in kept)
                )
            except Exception as exc:
                _stop("journey stage", exc, state.settings)
            for event in batch:
                if event.message.partition in kept:  # else revoked: its new owner reads it
                    await stream.ack(event)

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
            if stage is None and owned(names.ordered, 0):
                # Opened without waiting for input: a drain may be all it has left to do.
                stage = await open_identity()
            if stage is not None and stage.drain_due():
                stage.drain_requested = True
                await deliver([await ordered.send(value=DRAIN_JSON, partition=0)])
        except Exception as exc:  # nothing was announced; the next tick decides again
            log.warning("announcing idle partitions failed: %r", exc)
            if state.identity is not None:
                state.identity.drain_requested = False

    def forget_stages(partitions: Any) -> None:
        """Stages of these partitions are read again from their changelogs when next needed
        (a partition revoked, or assigned anew, may have moved on elsewhere meanwhile)."""
        for tp in partitions:
            if tp.topic == names.ordered:
                state.identity = None
            elif tp.topic == names.journeys:
                state.journeys.pop(tp.partition, None)

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def on_assigned(app: faust.App, assigned: Any, **kwargs: Any) -> None:
        forget_stages(assigned)

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def on_revoked(app: faust.App, revoked: Any, **kwargs: Any) -> None:
        forget_stages(revoked)

    @app.on_before_shutdown.connect  # type: ignore[arg-type]
    async def close_changelogs(app: faust.App, **kwargs: Any) -> None:
        await batches.close()

    app.journeys_state = state  # type: ignore[attr-defined]
    return app


def _bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else bytes(value or b"")


async def _publish(
    out: Output,
    rows: Any,
    batches: Batches,
    names: Topics,
    partition: int,
) -> list[Any]:
    """Send a journey partition's rows to its partition of the rows topic, packed, and the
    public transitions and alerts, one message each, keyed by account. Returns the sends'
    futures, to be awaited before anything is acknowledged. (The identity stage's links
    travel in its outbox: `IdentityStage.seal`.)"""
    encoded = [encode_row(row) for row in out.events]
    encoded += [encode_row(row) for row in out.transitions]
    encoded += [encode_row(row) for row in out.journeys]
    encoded += [encode_row(row) for row in out.alerts]
    encoded += [encode_row(row) for row in out.links]
    sends = [await rows.send(value=message, partition=partition) for message in pack(encoded)]
    if out.transitions:
        public = [(t.account_id.encode(), transition_json(t)) for t in out.transitions]
        sends += await batches.send_keyed(names.transitions, public)
    if out.alerts:
        public = [(a.account_id.encode(), alert_json(a)) for a in out.alerts]
        sends += await batches.send_keyed(names.alerts, public)
    return sends


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
    why = explain(settings.kafka_bootstrap, agent, exc) if unreachable(exc) else repr(exc)
    log.critical("%s failed, stopping the worker (its input will be read again): %s", agent, why)
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stderr.flush()
    os._exit(EXIT_SEND_FAILED)
