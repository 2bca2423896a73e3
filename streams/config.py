"""The engine's configuration, built from settings at the entry point."""

from __future__ import annotations

from journeys.schemas.settings import Settings
from journeys.streams.engine import EngineConfig, load_rules


def engine_config(settings: Settings) -> EngineConfig:
    """Rules, thresholds and the dedupe window from settings (the same for replay and workers)."""
    return EngineConfig(
        rules=load_rules(settings.rules_file),
        cart_abandon_after=settings.cart_abandon_after,
        deal_stall_after=settings.deal_stall_after,
        visitor_ttl=settings.visitor_ttl,
        window=settings.dedupe_window,
        reorder_factor=settings.reorder_factor,
    )
