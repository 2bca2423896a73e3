"""The Faust app: topics, the two agents and the idle watcher, around the pure engine.

    journeys.events (N partitions)      ingest agents, one per partition, on any worker:
            │                           validate; invalid → journeys.dead-letters
            ▼
    journeys.internal.ordered (1)       journey agent, on the one worker that owns it:
            │                           watermark, event-time order, engine, checkpoint
            ▼
    journeys.internal.rows (1)  ──►  the sink (ClickHouse)
    journeys.transitions, journeys.alerts  ──►  anyone

Ingest scales with the input's partitions and the number of workers; the
journey stage is one ordered stream, because identity links cross every key
(a cookie, an email and an ERP id of one account hash to different
partitions) and history must be applied in event-time order.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import faust

from journeys.schemas.codec import alert_json, dead_letter_json, encode_row, transition_json
from journeys.schemas.errors import InvalidEvent
from journeys.schemas.event import parse_event
from journeys.schemas.rows import DeadLetterRow, Output
from journeys.schemas.settings import Settings
from journeys.streams.checkpoint import CheckpointStore
from journeys.streams.config import engine_config
from journeys.streams.stage import JourneyStage, envelope, pack

log = logging.getLogger(__name__)

INGEST_BATCH = 5_000
STAGE_BATCH = 200
#: Items packed into one message of an internal topic (a JSON array).
MESSAGE_ROWS = 2_000


@dataclass
class Runtime:
    """What the agents of one worker process share."""

    settings: Settings
    source_partitions: int
    idle_after: float
    stage: JourneyStage | None = None
    counters: dict[str, int] = field(default_factory=lambda: {"ingested": 0, "invalid": 0})


def create_app(settings: Settings, source_partitions: int, idle_after: float = 2.0) -> faust.App:
    """A Faust app for these settings; `source_partitions` is the events topic's count."""
    (settings.data_dir / "faust").mkdir(parents=True, exist_ok=True)
    app = faust.App(
        f"{settings.topic_prefix}journeys",
        broker=f"kafka://{settings.kafka_bootstrap}",
        value_serializer="raw",
        key_serializer="raw",
        datadir=str(settings.data_dir / "faust"),
        store="memory://",
        web_enabled=False,
        topic_replication_factor=1,
        topic_partitions=settings.topic_partitions,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        broker_commit_interval=1.0,
        stream_buffer_maxsize=20_000,
    )
    runtime = Runtime(settings, source_partitions, idle_after)
    events = app.topic(settings.topic("events"), value_type=bytes)
    ordered = app.topic(settings.topic("internal.ordered"), value_type=bytes, partitions=1, internal=True)
    rows = app.topic(settings.topic("internal.rows"), value_type=bytes, partitions=1, internal=True)
    transitions = app.topic(settings.topic("transitions"), value_type=bytes, internal=True)
    alerts = app.topic(settings.topic("alerts"), value_type=bytes, internal=True)
    dead_letters = app.topic(settings.topic("dead-letters"), value_type=bytes, internal=True)

    @app.agent(events)
    async def ingest(stream: Any) -> None:
        """Validate raw events; forward valid ones in order, invalid ones to dead letters."""
        async for batch in stream.take_events(INGEST_BATCH, within=0.05):
            now = int(time.time() * 1000)
            forward: list[bytes] = []
            for event in batch:
                message = event.message
                raw = event.value if isinstance(event.value, bytes) else bytes(event.value or b"")
                try:
                    record = parse_event(raw)
                except InvalidEvent as exc:
                    source = f"{message.topic}:{message.partition}:{message.offset}"
                    row = DeadLetterRow.of(raw, str(exc), source, now)
                    await dead_letters.send(value=dead_letter_json(row))
                    runtime.counters["invalid"] += 1
                    continue
                forward.append(envelope(record, message.partition, runtime.source_partitions))
            # One message per batch: Faust's per-message send costs more than the work itself.
            for chunk in range(0, len(forward), MESSAGE_ROWS):
                await ordered.send(value=pack(forward[chunk : chunk + MESSAGE_ROWS]), partition=0)
            runtime.counters["ingested"] += len(forward)

    @app.agent(ordered)
    async def journey(stream: Any) -> None:
        """Run the journey stage; ack input only once its effects are checkpointed."""
        async for batch in stream.noack_take(STAGE_BATCH, within=0.1):
            stage = runtime.stage or _open_stage(runtime)
            out = stage.handle((event.message.offset, event.value) for event in batch)
            await _publish(out, rows, transitions, alerts)
            await app.producer.flush()
            stage.checkpoint()
            for event in batch:
                await stream.ack(event)

    @app.timer(interval=0.5)
    async def watch_idle() -> None:
        """Mark quiet input partitions idle, and drain when all are (see streams.stage)."""
        if runtime.stage is not None:
            for message in runtime.stage.control_messages(runtime.idle_after):
                await ordered.send(value=message, partition=0)

    @app.on_partitions_revoked.connect
    async def on_revoked(app: faust.App, revoked: Any, **kwargs: Any) -> None:
        if runtime.stage is not None and any(tp.topic == ordered.get_topic_name() for tp in revoked):
            runtime.stage.close()
            runtime.stage = None

    app.journeys_runtime = runtime  # type: ignore[attr-defined]
    return app


def _open_stage(runtime: Runtime) -> JourneyStage:
    settings = runtime.settings
    store = CheckpointStore(settings.data_dir / "stage" / f"{settings.topic_prefix}journeys")
    stage = JourneyStage(engine_config(settings), settings.allowed_lateness, store)
    for attempt in range(100):
        try:
            stage.open()
            break
        except Exception as exc:  # the previous owner may still hold the directory
            if attempt == 99:
                raise
            log.info("waiting for the stage checkpoint to be released: %s", exc)
            time.sleep(0.1)
    runtime.stage = stage
    log.info("journey stage opened at input offset %s", stage.offset)
    return stage


async def _publish(out: Output, rows: Any, transitions: Any, alerts: Any) -> None:
    """Rows in the order the sink needs them (links last), packed; public topics beside."""
    encoded = [encode_row(row) for row in out.events]
    encoded += [encode_row(row) for row in out.transitions]
    encoded += [encode_row(row) for row in out.journeys]
    encoded += [encode_row(row) for row in out.alerts]
    encoded += [encode_row(row) for row in out.links]
    for chunk in range(0, len(encoded), MESSAGE_ROWS):
        await rows.send(value=pack(encoded[chunk : chunk + MESSAGE_ROWS]), partition=0)
    for transition in out.transitions:
        await transitions.send(key=transition.account_id.encode(), value=transition_json(transition))
    for alert in out.alerts:
        await alerts.send(key=alert.account_id.encode(), value=alert_json(alert))
