"""`journeys simulate`: synthetic B2B journeys as JSON lines, to a file, stdout or Kafka.

Generating (`producers.simulator.simulate`) and delivering are kept apart:
`write_lines` writes any iterable of lines to a binary handle, `send_lines`
produces them to the events topic; the command only picks one.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from itertools import islice
from typing import IO

import click

from journeys.options import settings_options
from journeys.schemas.settings import Settings

BATCH = 20_000


def parse_start(value: str | None) -> datetime | None:
    """`--start` as an aware datetime; a bare date means midnight UTC; a naive time is an error."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise click.BadParameter(f"not an ISO 8601 time: {value!r}", param_hint="--start") from exc
    if moment.tzinfo is None:
        if len(value) == 10:  # 2026-01-05
            return moment.replace(tzinfo=UTC)
        raise click.BadParameter("give a zone, e.g. 2026-01-05T00:00:00Z", param_hint="--start")
    return moment


def batches(lines: Iterable[bytes], size: int = BATCH) -> Iterator[list[bytes]]:
    """Lines in lists of at most `size` (fewer writes, fewer Kafka round trips)."""
    source = iter(lines)
    while batch := list(islice(source, size)):
        yield batch


def write_lines(lines: Iterable[bytes], handle: IO[bytes]) -> int:
    """Write JSON lines, one per line; return how many."""
    count = 0
    for batch in batches(lines):
        handle.write(b"\n".join(batch))
        handle.write(b"\n")
        count += len(batch)
    return count


def send_lines(lines: Iterable[bytes], settings: Settings) -> int:
    """Produce the lines as they are to the events topic (malformed ones too: the
    pipeline dead-letters them); return how many Kafka acknowledged."""
    from journeys.producers.client import EventProducer
    from journeys.producers.topics import ensure_pipeline_topics

    ensure_pipeline_topics(settings)
    producer = EventProducer(settings)
    producer.start()
    count = 0
    try:
        for batch in batches(lines):
            producer.send_raw(batch)
            count += len(batch)
    finally:
        producer.close()
    return count


@click.command()
@click.option(
    "--accounts",
    default=200,
    show_default=True,
    type=click.IntRange(min=0),
    help="Companies to simulate.",
)
@click.option(
    "--days", default=90, show_default=True, type=click.IntRange(min=0), help="Days of history."
)
@click.option(
    "--seed",
    default=7,
    show_default=True,
    type=int,
    help="Random seed (same seed and arguments, byte-identical output).",
)
@click.option(
    "--start",
    default=None,
    metavar="ISO",
    help="First day, ISO 8601 with a zone [default: 2026-01-05T00:00:00Z].",
)
@click.option(
    "--invalid-share",
    default=0.005,
    show_default=True,
    type=click.FloatRange(0.0, 0.5),
    help="Share of malformed lines.",
)
@click.option(
    "--out",
    default="-",
    show_default=True,
    metavar="FILE",
    type=click.Path(dir_okay=False, allow_dash=True),
    help="JSONL file, or - for stdout.",
)
@click.option(
    "--to-kafka", is_flag=True, help="Produce to the events topic instead of writing a file."
)
@settings_options("kafka_bootstrap", "topic_prefix", "topic_partitions")
def simulate(
    accounts: int,
    days: int,
    seed: int,
    start: str | None,
    invalid_share: float,
    out: str,
    to_kafka: bool,
    settings: Settings,
) -> None:
    """Realistic synthetic B2B journeys: DMUs of growers, installers and wholesalers across
    web, email, order and sales, with the noise of real feeds (duplicates, events without
    an id, malformed lines)."""
    from journeys.producers.simulator import simulate as generate

    began = time.monotonic()
    lines = generate(
        accounts=accounts,
        days=days,
        seed=seed,
        start=parse_start(start),
        invalid_share=invalid_share,
    )
    if to_kafka:
        count, where = send_lines(lines, settings), settings.topic("events")
    elif out == "-":
        count, where = write_lines(lines, sys.stdout.buffer), "stdout"
        sys.stdout.buffer.flush()
    else:
        with open(out, "wb") as handle:
            count, where = write_lines(lines, handle), out
    click.echo(
        f"simulated {count:,} lines of {accounts:,} accounts over {days} days to {where} "
        f"in {time.monotonic() - began:.1f}s",
        err=True,
    )


COMMANDS: list[click.Command] = [simulate]
