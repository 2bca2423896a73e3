"""`journeys simulate`: synthetic B2B journeys to a file, stdout or Kafka."""

from __future__ import annotations

import sys
import time
from datetime import datetime

import click

from journeys.options import settings_options
from schemas.settings import Settings


@click.command()
@click.option("--accounts", default=200, show_default=True, help="Companies to simulate.")
@click.option("--days", default=90, show_default=True, help="Days of history.")
@click.option("--seed", default=7, show_default=True, help="Random seed (same seed, same output).")
@click.option("--start", default=None, help="First day, ISO 8601 (default 2026-01-05T00:00:00Z).")
@click.option("--invalid-share", default=0.005, show_default=True, help="Share of malformed lines.")
@click.option("--out", "out", default="-", show_default=True, help="JSONL file, or - for stdout.")
@click.option("--to-kafka", is_flag=True, help="Produce to the events topic instead of writing a file.")
@settings_options("kafka_bootstrap", "topic_prefix", "topic_partitions")
def simulate(
    accounts: int, days: int, seed: int, start: str | None, invalid_share: float, out: str,
    to_kafka: bool, settings: Settings,
) -> None:
    """Realistic synthetic B2B journeys: DMUs across web, email, order and sales."""
    from producers.simulator import simulate as generate

    began = time.monotonic()
    first = datetime.fromisoformat(start) if start else None
    if first is not None and first.tzinfo is None:
        raise click.BadParameter("give a zone, e.g. 2026-01-05T00:00:00Z", param_hint="--start")
    lines = generate(accounts=accounts, days=days, seed=seed, start=first, invalid_share=invalid_share)
    count = 0
    if to_kafka:
        from journeys.cmd_stream import source_partitions
        from producers.client import EventProducer

        source_partitions(settings)
        producer = EventProducer(settings)
        producer.start()
        try:
            batch: list[bytes] = []
            for line in lines:
                batch.append(line)
                if len(batch) == 50_000:
                    producer.send_raw(batch)
                    count += len(batch)
                    batch = []
            producer.send_raw(batch)
            count += len(batch)
        finally:
            producer.close()
        where = settings.topic("events")
    else:
        handle = sys.stdout.buffer if out == "-" else open(out, "wb")  # noqa: SIM115
        try:
            for line in lines:
                handle.write(line + b"\n")
                count += 1
        finally:
            if handle is not sys.stdout.buffer:
                handle.close()
        where = "stdout" if out == "-" else out
    click.echo(f"simulated {count:,} events of {accounts} accounts over {days} days to {where} "
               f"in {time.monotonic() - began:.1f}s", err=True)


COMMANDS: list[click.Command] = [simulate]
