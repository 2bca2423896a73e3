"""Click options generated from `Settings`, so every setting has a `--flag` twin.

`settings_options("data_dir", "clickhouse_url")` adds `--data-dir` and
`--clickhouse-url`; each shows its `JOURNEYS_*` variable in `--help` and the
type click checks (INTEGER, FLOAT, PATH, DURATION, booleans as `--x/--no-x`).
The command receives one built `Settings` as `settings`. A bad value, given
as a flag or in the environment, is reported by its flag and variable name in
one line, never as a raw validation dump.
"""

from __future__ import annotations

import functools
import os
import types
import typing
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import annotated_types
import click
from pydantic import BeforeValidator, SecretStr, ValidationError
from pydantic.fields import FieldInfo

from journeys.schemas.durations import parse_duration_ms
from journeys.schemas.errors import ConfigError
from journeys.schemas.settings import Settings

#: Extra spellings of a few flags.
ALIASES = {"rules_file": ("--rules",), "replay_jobs": ("--jobs",)}
#: Settings whose file must exist when given.
EXISTING_FILES = frozenset({"rules_file"})


class DurationType(click.ParamType):
    """A duration written the contract's way (`30m`, `4h`, `14d`), checked when parsed."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        """Keep the text (Settings parses it again) once it is known to be a duration."""
        try:
            parse_duration_ms(value)
        except ConfigError as exc:
            self.fail(str(exc), param, ctx)
        return value


DURATION = DurationType()


def flag_name(name: str) -> str:
    """The `--flag` of a setting."""
    return "--" + name.replace("_", "-")


def env_name(name: str) -> str:
    """The environment variable of a setting."""
    return f"JOURNEYS_{name.upper()}"


def _bare(annotation: Any) -> Any:
    """`Path` for `Path | None`: the type a value has when it is given."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0] if len(args) == 1 else str
    return annotation


def _bounds(info: FieldInfo) -> dict[str, Any]:
    bounds: dict[str, Any] = {}
    for item in info.metadata:
        if isinstance(item, annotated_types.Ge):
            bounds["min"] = item.ge
        elif isinstance(item, annotated_types.Le):
            bounds["max"] = item.le
    return bounds


def is_duration(info: FieldInfo) -> bool:
    """Whether a setting is a duration (`DurationMs`)."""
    return any(
        isinstance(item, BeforeValidator) and item.func is parse_duration_ms
        for item in info.metadata
    )


def click_type(name: str, info: FieldInfo) -> click.ParamType:
    """The click type that checks a setting's value on the command line."""
    if is_duration(info):
        return DURATION
    bare = _bare(info.annotation)
    if typing.get_origin(bare) is typing.Literal:
        return click.Choice([str(v) for v in typing.get_args(bare)])
    if bare is int:
        bounds = _bounds(info)
        return click.IntRange(**bounds) if bounds else click.INT
    if bare is float:
        bounds = _bounds(info)
        return click.FloatRange(**bounds) if bounds else click.FLOAT
    if bare is Path:
        if name in EXISTING_FILES:
            return click.Path(exists=True, dir_okay=False, path_type=Path)
        return click.Path(path_type=Path)
    return click.STRING


def _shown_default(info: FieldInfo) -> str:
    default = info.default
    if default is None or default == "":
        return ""
    if isinstance(default, bool):
        return f" [default: {'on' if default else 'off'}]"
    if isinstance(default, SecretStr):
        return ""
    return f" [default: {default}]"


def setting_option(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The click option of one setting (default None: unset flags leave the environment)."""
    info = Settings.model_fields[name]
    help_text = (info.description or name.replace("_", " ")).rstrip(".")
    help_text = f"{help_text}{_shown_default(info)} [env: {env_name(name)}]"
    if _bare(info.annotation) is bool:
        flag = flag_name(name)
        return click.option(f"{flag}/--no-{flag[2:]}", name, default=None, help=help_text)
    return click.option(
        flag_name(name),
        *ALIASES.get(name, ()),
        name,
        type=click_type(name, info),
        default=None,
        help=help_text,
    )


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

        decorated: Callable[..., Any] = wrapper
        for name in reversed(names):
            decorated = setting_option(name)(decorated)
        return decorated

    return decorate


def build_settings(**given: Any) -> Settings:
    """Settings from the environment with the given flags on top; a clear error otherwise."""
    try:
        return Settings(**given)
    except ValidationError as exc:
        raise click.UsageError(describe_errors(exc)) from exc
    except ConfigError as exc:
        raise click.UsageError(_describe_config_error(exc, given)) from exc


def _where(name: str) -> str:
    return f"{flag_name(name)} / {env_name(name)}"


def describe_errors(exc: ValidationError) -> str:
    """One line per invalid setting, named by flag and variable, without links."""
    lines = []
    for error in exc.errors(include_url=False):
        loc = error.get("loc") or ("?",)
        name = str(loc[0])
        got = error.get("input")
        shown = f" (got {got!r})" if isinstance(got, str | int | float) else ""
        where = _where(name) if name in Settings.model_fields else name
        lines.append(f"invalid value for {where}: {error['msg']}{shown}")
    return "\n".join(lines)


def _describe_config_error(exc: ConfigError, given: dict[str, Any]) -> str:
    """Name the duration setting (flag or environment) a `ConfigError` came from."""
    for name in _duration_names():
        raw = given.get(name, _environment(name))
        if raw is None:
            continue
        try:
            parse_duration_ms(raw)
        except ConfigError as bad:
            return f"invalid value for {_where(name)}: {bad}"
    return f"invalid setting: {exc}"


def _duration_names() -> Iterable[str]:
    return [name for name, info in Settings.model_fields.items() if is_duration(info)]


def _environment(name: str) -> str | None:
    wanted = env_name(name).lower()
    for key, value in os.environ.items():  # pydantic-settings reads names case-insensitively
        if key.lower() == wanted:
            return value
    return None
