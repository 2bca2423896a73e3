"""Phase rules as configuration: which event moves an account to which phase.

A business maps its own journey, so the phase list, the moving types, the
supplier actions and the alert triggers come from a TOML file
(`default_rules.toml` holds the contract's defaults). `load_rules` compiles
the file into a lookup the engine uses once per event: `(channel, type)` →
`EventClass`.

The `[engagement]` table sets the account engagement score (contract section 8):
the weight of each activity type (plain or channel-qualified, like the phase
rules; `default` for the others), its half-life, and the `warm` and `hot`
thresholds. A rules file without it gets the built-in defaults;
`enabled = false` turns the score and `account_hot` off.
"""

from __future__ import annotations

import hashlib
import math
import tomllib
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from journeys.schemas.durations import parse_duration_ms
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
class Engagement:
    """The engagement score's rules: each activity event adds its type's weight, and the
    sum halves every `half_life` ms of event time; `warm` and `hot` are the tiers'
    thresholds. `half_life` 0 means the score is off (always 0, no `account_hot`)."""

    half_life: int = 0
    warm: float = 0.0
    hot: float = 0.0
    default: float = 0.0
    #: (channel, type) -> weight, for the types that do not weigh `default`.
    weights: dict[tuple[str, str], float] = field(default_factory=dict, repr=False)

    @property
    def enabled(self) -> bool:
        """Whether the score is kept at all."""
        return self.half_life > 0

    def weight(self, channel: str, type_: str) -> float:
        """What one activity event of (channel, type) adds to the score."""
        return self.weights.get((channel, type_), self.default)


#: No engagement score (what `enabled = false` in the rules file gives).
ENGAGEMENT_OFF = Engagement()


@dataclass(frozen=True)
class Rules:
    """Compiled phase rules."""

    phases: tuple[str, ...]
    first_activity_phase: int
    stall_phases: frozenset[int]
    classes: dict[str, dict[str, EventClass]] = field(repr=False)
    #: Phases in which an account's next order can be due (`reorder_due`); empty: never.
    reorder_phases: frozenset[int] = frozenset()
    #: The account engagement score and its `account_hot` alert.
    engagement: Engagement = ENGAGEMENT_OFF

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
    return rules_from_text(rules_text(path), str(path or "default rules"))


def rules_text(path: Path | None = None) -> str:
    """The TOML text of a rules file, or of the built-in defaults."""
    try:
        return path.read_text("utf-8") if path else default_rules_text()
    except OSError as exc:
        raise ConfigError(f"cannot read rules file {path}: {exc.strerror}") from exc


def rules_hash(text: str) -> str:
    """The SHA-256 (hex) of a rules file's text: how a generation names its rules
    (`generations.rules_hash`)."""
    return hashlib.sha256(text.encode()).hexdigest()


def rules_from_text(text: str, source: str = "rules") -> Rules:
    """Rules from the TOML text of a rules file; `ConfigError` says what is wrong."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"rules file {source} is not valid TOML: {exc}") from exc
    return compile_rules(data, source=source)


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
    engagement = data.get("engagement")
    if engagement is None:  # a rules file from before engagement: the built-in score
        engagement = _default_engagement()
    return Rules(
        phases=phases,
        first_activity_phase=first,
        stall_phases=stall_phases,
        classes=classes,
        reorder_phases=reorder_phases,
        engagement=compile_engagement(engagement, flags, f"{source} [engagement]"),
    )


_ENGAGEMENT_KEYS = {"enabled", "half_life", "warm", "hot", "weights"}


@cache
def _default_engagement() -> dict[str, Any]:
    table: dict[str, Any] = tomllib.loads(default_rules_text())["engagement"]
    return table


def _number(value: Any, what: str, source: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{source}: {what} must be a finite number, not {value!r}")
    return float(value)


def compile_engagement(
    table: Any, flags: dict[tuple[str, str], int], source: str = "[engagement]"
) -> Engagement:
    """The `[engagement]` table compiled; `flags` (per (channel, type)) tell supplier
    actions, which never count: weighting one is an error."""
    if not isinstance(table, dict):
        raise ConfigError(f"{source} must be a table")
    unknown = sorted(set(table) - _ENGAGEMENT_KEYS)
    if unknown:
        raise ConfigError(f"{source}: unknown keys {unknown}; known: {sorted(_ENGAGEMENT_KEYS)}")
    enabled = table.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ConfigError(f"{source}: `enabled` must be true or false")
    if not enabled:
        return ENGAGEMENT_OFF
    for name in ("half_life", "warm", "hot"):
        if name not in table:
            raise ConfigError(f'{source}: `{name}` is missing (e.g. half_life = "14d")')
    try:
        half_life = parse_duration_ms(str(table["half_life"]))
    except ConfigError as exc:
        raise ConfigError(f"{source}: half_life: {exc}") from exc
    if half_life <= 0:
        raise ConfigError(f"{source}: half_life must be longer than 0")
    warm = _number(table["warm"], "warm", source)
    hot = _number(table["hot"], "hot", source)
    if not 0 <= warm <= hot or hot <= 0:
        raise ConfigError(f"{source}: thresholds need 0 <= warm <= hot and hot > 0")
    weights = table.get("weights", {})
    if not isinstance(weights, dict):
        raise ConfigError(f"{source}: `weights` must be a table of type = number")
    default = _number(weights.get("default", 1.0), "weights.default", source)
    by_key: dict[tuple[str, str], float] = {}
    # Plain names first, so a channel-qualified weight overrides its plain type's.
    for name in sorted((n for n in weights if n != "default"), key=lambda n: "." in n):
        weight = _number(weights[name], f"weights.{name}", source)
        for key in _keys(name, source):
            if flags.get(key, 0) & SUPPLIER:
                raise ConfigError(
                    f"{source}: weights.{name}: {key[0]}.{key[1]} is a supplier action, "
                    "which never counts as account activity"
                )
            by_key[key] = weight
    return Engagement(half_life=half_life, warm=warm, hot=hot, default=default, weights=by_key)
