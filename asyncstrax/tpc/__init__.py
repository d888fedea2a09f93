"""The reference TPC chain: synthetic detector data and the plugins that process it.

``asyncstrax.tpc.sim`` simulates a detector; ``asyncstrax.tpc.plugins`` holds the chain
raw_records -> records -> peaks -> peak_basics -> events -> event_basics (``PLUGINS``).
Importing this package loads numba kernels, so ``import asyncstrax`` does not import it.
"""

from .plugins import (
    TPC_PLUGINS,
    EventBasics,
    Events,
    PeakBasics,
    Peaks,
    RawRecords,
    Records,
    make_simulator,
    simulate,
)

PLUGINS = TPC_PLUGINS

__all__ = [
    "PLUGINS",
    "TPC_PLUGINS",
    "EventBasics",
    "Events",
    "PeakBasics",
    "Peaks",
    "RawRecords",
    "Records",
    "make_simulator",
    "simulate",
]
