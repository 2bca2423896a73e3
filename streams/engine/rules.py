"""Phase rules as configuration: which event moves an account to which phase.

A business maps its own journey, so the phase list, the moving types, the
supplier actions and the alert triggers come from a TOML file
(`default_rules.toml` holds the contract's defaults). `load_rules` compiles
the file into a lookup the engine uses once per event: `(channel, type)` →
`EventClass`.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from journeys.schemas.errors import ConfigError
from journeys.schemas.record import CHANNELS, KNOWN_TYPES

# Flags of an EventClass, combined as a bit set for speed.
SUPPLIER = 1
CART_ACTIVITY = 2
CART_START = 4
CART_CHECKOUT = 8
CART_END = 16
DEAL_OPEN = 32
DEAL_CLOSE = 64
ORDER = 128


@dataclass(frozen=True, slots=True)
class EventClass:
    """What an event of one (channel, type) does to a journey.

    `moves` lists (phase index, required phase index or -1), highest phase first:
    the event moves the account to the first phase whose requirement it meets.
    """

    moves: tuple[tuple[int, int], ...] = ()
    flags: int = 0


NEUTRAL = EventClass()


@dataclass(frozen=True)
class Rules:
    """Compiled phase rules."""

    phases: tuple[str, ...]
    first_activity_phase: int
    stall_phases: frozenset[int]
    classes: dict[str, dict[str, EventClass]] = field(repr=False)
    #: Phases in which an account's next order can be due (`reorder_due`); empty: never.
    reorder_phases: frozenset[int] = frozenset()

    def classify(self, channel: str, type_: str) -> EventClass:
        """The class of an event; unknown types are neutral (kept, move nothing)."""
        return self.classes[channel].get(type_, NEUTRAL)

    def phase_index(self, name: str) -> int:
        """Index of a phase by name."""
        return self.phases.index(name)


def default_rules_text() -> str:
    """The TOML text of the built-in rules (the contract's defaults)."""
    return (
        resources.files("journeys.streams.engine").joinpath("default_rules.toml").read_text("utf-8")
    )


def load_rules(path: Path | None = None) -> Rules:
    """Rules from a TOML file, or the built-in defaults; `ConfigError` says what is wrong."""
    try:
        text = path.read_text("utf-8") if path else default_rules_text()
        data = tomllib.loads(text)
    except OSError as exc:
        raise ConfigError(f"cannot read rules file {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"rules file {path or 'default'} is not valid TOML: {exc}") from exc
    return compile_rules(data, source=str(path or "default rules"))


def _names(data: dict[str, Any], key: str, source: str) -> list[str]:
    value = data.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{source}: `{key}` must be a list of strings")
    return value


def _keys(type_name: str, source: str) -> list[tuple[str, str]]:
    """(channel, type) pairs a rule's type name refers to."""
    if "." in type_name:
        channel, _, type_ = type_name.partition(".")
        if channel not in CHANNELS:
            raise ConfigError(f"{source}: unknown channel in {type_name!r}")
        return [(channel, type_)]
    owners = [c for c in CHANNELS if type_name in KNOWN_TYPES[c]]
    # A type no channel knows applies to every channel (custom vocabularies).
    return [(c, type_name) for c in (owners or CHANNELS)]


def compile_rules(data: dict[str, Any], source: str = "rules") -> Rules:
    """Compile parsed TOML into `Rules`, checking every name."""
    phases = tuple(_names(data, "phases", source))
    if not phases or len(set(phases)) != len(phases):
        raise ConfigError(f"{source}: `phases` must be a non-empty list of distinct names")

    def index(name: Any, what: str) -> int:
        if name not in phases:
            raise ConfigError(f"{source}: {what} names unknown phase {name!r}; phases: {phases}")
        return phases.index(name)

    first = index(data.get("first_activity_phase", phases[0]), "first_activity_phase")
    moves: dict[tuple[str, str], list[tuple[int, int]]] = {}
    flags: dict[tuple[str, str], int] = {}

    def flag(type_names: list[str], bit: int) -> None:
        for name in type_names:
            for key in _keys(name, source):
                flags[key] = flags.get(key, 0) | bit

    for i, rule in enumerate(data.get("rule", [])):
        where = f"rule {i + 1}"
        phase = index(rule.get("phase"), where)
        after = index(rule["after"], where) if "after" in rule else -1
        for name in _names(rule, "types", f"{source} {where}"):
            for key in _keys(name, source):
                moves.setdefault(key, []).append((phase, after))
    flag(_names(data, "supplier_actions", source), SUPPLIER)

    alerts = data.get("alerts", {})
    cart = alerts.get("cart_abandoned", {})
    flag(_names(cart, "activity", source), CART_ACTIVITY)
    flag(_names(cart, "starts", source), CART_START | CART_ACTIVITY)
    flag(_names(cart, "checkout", source), CART_CHECKOUT)
    flag(_names(cart, "ends", source), CART_END)
    deal = alerts.get("deal_stalled", {})
    flag(_names(deal, "opens", source), DEAL_OPEN)
    flag(_names(deal, "closes", source), DEAL_CLOSE)
    stall_phases = frozenset(
        index(p, "deal_stalled.phases") for p in _names(deal, "phases", source)
    )
    reorder = alerts.get("reorder_due", {})
    flag(_names(reorder, "orders", source), ORDER)
    reorder_phases = frozenset(
        index(p, "reorder_due.phases") for p in _names(reorder, "phases", source)
    )

    classes: dict[str, dict[str, EventClass]] = {c: {} for c in CHANNELS}
    for key in set(moves) | set(flags):
        ordered = tuple(sorted(set(moves.get(key, [])), reverse=True))
        classes[key[0]][key[1]] = EventClass(moves=ordered, flags=flags.get(key, 0))
    return Rules(
        phases=phases,
        first_activity_phase=first,
        stall_phases=stall_phases,
        classes=classes,
        reorder_phases=reorder_phases,
    )
