"""Secrets a deployment generates once and keeps beside its data, readable by its user only.

The read endpoint's password and the privacy salt are each made the first
time they are needed, written with mode 0600 (created exclusively, so two
processes starting together agree on one), and read back on every later
start.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from journeys.schemas.errors import ConfigError


def kept_secret(path: Path, what: str, make: Callable[[], str], if_empty: str) -> str:
    """The secret in `path`, generated there by `make` (0600) the first time.

    `what` names it in errors; `if_empty` says what to do when the file is empty."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read(path, what, if_empty)
    except OSError as exc:
        raise ConfigError(f"cannot keep {what} in {path}: {exc}") from exc
    with os.fdopen(fd, "w") as out:
        out.write(make() + "\n")
    return _read(path, what, if_empty)


def _read(path: Path, what: str, if_empty: str) -> str:
    try:
        text = path.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} in {path}: {exc}") from exc
    if not text:
        raise ConfigError(f"{path} is empty: {if_empty}")
    return text
