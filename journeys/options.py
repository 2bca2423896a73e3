"""Click options generated from `Settings`, so every setting has a `--flag` twin.

`settings_options("data_dir", "clickhouse_url")` adds `--data-dir` and
`--clickhouse-url`; each shows its `JOURNEYS_*` variable in `--help`. The
command receives one built `Settings` as `settings`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import click
from pydantic import ValidationError

from journeys.schemas.errors import ConfigError
from journeys.schemas.settings import Settings

#: Extra spellings of a few flags.
ALIASES = {"rules_file": ("--rules",)}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def settings_options(*names: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Add the named settings as options; pass the command a `settings` keyword."""

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(command)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            given = {name: kwargs.pop(name) for name in names if kwargs.get(name) is not None}
            for name in names:
                kwargs.pop(name, None)
            kwargs["settings"] = build_settings(**given)
            return command(*args, **kwargs)

        for name in reversed(names):
            info = Settings.model_fields[name]
            help_text = (info.description or name.replace("_", " ")).rstrip(".")
            default = info.default
            shown = f" [default: {default}]" if default not in (None, "") else ""
            wrapper = click.option(
                _flag(name),
                *ALIASES.get(name, ()),
                name,
                default=None,
                help=f"{help_text}{shown} [env: JOURNEYS_{name.upper()}]",
            )(wrapper)
        return wrapper

    return decorate


def build_settings(**given: Any) -> Settings:
    """Settings from the environment with the given flags on top; a clear error otherwise."""
    try:
        return Settings(**given)
    except (ValidationError, ConfigError) as exc:
        raise click.UsageError(f"invalid setting: {exc}") from exc
