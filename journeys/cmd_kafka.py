"""`journeys kafka start|stop|status`: a local Apache Kafka broker for development and tests."""

from __future__ import annotations

import sys

import click

from journeys.options import settings_options
from journeys.schemas.errors import BrokerError
from journeys.schemas.settings import Settings

BROKER_SETTINGS = (
    "data_dir",
    "kafka_bootstrap",
    "kafka_home",
    "kafka_version",
    "kafka_heap",
    "kafka_controller_port",
    "topic_partitions",
)
#: `stop` finds the broker by the pid file under the data dir; `status` also asks the address.
STOP_SETTINGS = ("data_dir",)
STATUS_SETTINGS = ("data_dir", "kafka_bootstrap")


@click.group()
def kafka() -> None:
    """A local single-node Apache Kafka broker (KRaft), fetched from Maven Central once."""


@kafka.command()
@settings_options(*BROKER_SETTINGS)
def start(settings: Settings) -> None:
    """Start the broker in the background (nothing to do if one answers already)."""
    from journeys.kafka_broker import broker_running, ensure_broker

    if broker_running(settings):
        click.echo(f"Kafka already answers on {settings.kafka_bootstrap}")
        return
    try:
        click.echo(f"Kafka running on {ensure_broker(settings)}")
    except BrokerError as exc:
        raise click.ClickException(str(exc)) from exc


@kafka.command()
@settings_options(*STOP_SETTINGS)
def stop(settings: Settings) -> None:
    """Stop the broker started from this data dir."""
    from journeys.kafka_broker import stop_broker

    stopped = stop_broker(settings)
    click.echo("Kafka stopped" if stopped else "no broker started from this data dir is running")


@kafka.command()
@settings_options(*STATUS_SETTINGS)
def status(settings: Settings) -> None:
    """Say whether a broker answers; exit 0 if it does, 1 if not."""
    from journeys.kafka_broker import broker_status

    answering, pid = broker_status(settings)
    where = f" (pid {pid})" if pid else ""
    click.echo(
        f"Kafka {'running' if answering else 'not running'} on {settings.kafka_bootstrap}{where}"
    )
    sys.exit(0 if answering else 1)


COMMANDS: list[click.Command] = [kafka]
