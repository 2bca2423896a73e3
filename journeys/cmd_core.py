"""Commands that need no broker: schema, migrate, replay, simulate, demo."""

from __future__ import annotations

import click
import orjson

from schemas.event import event_json_schema


@click.command()
def schema() -> None:
    """Print the event's JSON Schema, for producers in other languages."""
    click.echo(orjson.dumps(event_json_schema(), option=orjson.OPT_INDENT_2).decode())


COMMANDS: list[click.Command] = [schema]
