"""The pure journey engine: identity, phases, transitions and alerts in event time.

Imports no I/O library. `IdentityRouter` (`router`) decides each event's
journey (`identity`) and sends commands to journey partitions
(`PartitionEngine`, `partition`), which fold journeys (`phases`) and run
their deadlines (`alerts`), in any order. `JourneyEngine` is both in one
process; `Sequencer` orders events for a stream; `load_rules` reads the
phase rules.
"""

from journeys.streams.engine.engine import JourneyEngine
from journeys.streams.engine.partition import (
    CART_ABANDONED,
    DEAL_STALLED,
    EngineConfig,
    PartitionEngine,
)
from journeys.streams.engine.router import IdentityRouter
from journeys.streams.engine.rules import Rules, load_rules
from journeys.streams.engine.sequencer import Sequencer
from journeys.streams.engine.state import REORDER_DUE

__all__ = [
    "CART_ABANDONED",
    "DEAL_STALLED",
    "REORDER_DUE",
    "EngineConfig",
    "IdentityRouter",
    "JourneyEngine",
    "PartitionEngine",
    "Rules",
    "Sequencer",
    "load_rules",
]
