"""One Part A run (CNN from scratch), composed: its config (nested dataclasses and the flat keys sweeps speak)
and ``run_partA``.
"""

from core.partA.run import FLAT_KEYS, PartAConfig, run_partA

__all__ = [
    "FLAT_KEYS",
    "PartAConfig",
    "run_partA",
]
