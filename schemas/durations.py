"""Durations written the contract's way: `30m`, `4h`, `14d` (also `s`, `w`, `ms`)."""

from __future__ import annotations

import re
from datetime import timedelta

from journeys.schemas.errors import ConfigError

_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)\s*$")


def parse_duration_ms(text: str | int | float | timedelta) -> int:
    """Milliseconds in a duration such as `4h`; `ConfigError` with an example if unreadable."""
    if isinstance(text, timedelta):
        return int(text.total_seconds() * 1000)
    if isinstance(text, int | float) and not isinstance(text, bool):
        return int(text * 1000)
    match = _PATTERN.match(str(text))
    if not match:
        raise ConfigError(f"not a duration: {text!r}; write it like 30m, 4h or 14d")
    return int(float(match.group(1)) * _UNITS_MS[match.group(2)])


def format_duration_ms(ms: int) -> str:
    """The shortest exact contract spelling of a duration (`14d`, `90m`)."""
    for unit in ("w", "d", "h", "m", "s"):
        size = _UNITS_MS[unit]
        if ms and ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"
