"""The `journeys` console script: one group, one module of commands per concern."""

from __future__ import annotations

import logging
import os
import sys

import click

from journeys.schemas.errors import JourneysError


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
def main(verbose: int) -> None:
    """Track B2B customer journeys: events in, journeys, transitions and alerts out."""
    level = logging.WARNING - 10 * verbose
    logging.basicConfig(
        level=max(level, logging.DEBUG), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if not verbose:  # the Kafka client reports transient coordinator moves as warnings and errors
        logging.getLogger("kafka").setLevel(logging.CRITICAL)


def _register() -> None:
    from journeys import (
        cmd_collect,
        cmd_core,
        cmd_demo,
        cmd_kafka,
        cmd_notify,
        cmd_privacy,
        cmd_read,
        cmd_rebuild,
        cmd_simulate,
        cmd_stream,
    )

    modules = (
        cmd_core,
        cmd_collect,
        cmd_demo,
        cmd_kafka,
        cmd_notify,
        cmd_privacy,
        cmd_read,
        cmd_rebuild,
        cmd_simulate,
        cmd_stream,
    )
    for module in modules:
        for command in module.COMMANDS:
            main.add_command(command)


_register()


#: What this process may not give others on the files and folders it creates: the data dir
#: (embedded ClickHouse, the broker's log, the read endpoint's password) holds emails and
#: secrets, so everything is created 0600/0700 for the user who runs the pipeline.
PRIVATE_UMASK = 0o077


def run() -> None:
    """Entry point that turns the project's own errors into a clean message and exit code 1.

    Files and folders it creates (and those of its children: the broker, the workers)
    are readable by its user only."""
    os.umask(PRIVATE_UMASK)
    try:
        main(standalone_mode=True)
    except JourneysError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
