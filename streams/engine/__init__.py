"""The pure journey engine: identity, phases, transitions and alerts in event time.

Imports no I/O library. `JourneyEngine` applies events in any order
(`identity` decides the journey, `phases` folds it, `alerts` runs its
deadlines); `Sequencer` orders them for a stream; `load_rules` reads the
phase rules.
"""

from journeys.streams.engine.engine import CART_ABANDONED, DEAL_STALLED, EngineConfig, JourneyEngine
from journeys.streams.engine.rules import Rules, load_rules
from journeys.streams.engine.sequencer import Sequencer
from journeys.streams.engine.state import REORDER_DUE

__all__ = [
    "CART_ABANDONED",
    "DEAL_STALLED",
    "REORDER_DUE",
    "EngineConfig",
    "JourneyEngine",
    "Rules",
    "Sequencer",
    "load_rules",
]
