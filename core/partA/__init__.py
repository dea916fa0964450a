"""One Part A run (CNN from scratch), composed: its config (nested dataclasses and the flat keys sweeps speak)
and ``run_partA``.
"""

from core.partA.config import RECOMMENDED_DATA, RECOMMENDED_TRAIN, WEIGHT_DECAY_FOR
from core.partA.run import FLAT_KEYS, PartAConfig, run_partA

__all__ = ["RECOMMENDED_DATA", "RECOMMENDED_TRAIN", "WEIGHT_DECAY_FOR", "FLAT_KEYS", "PartAConfig", "run_partA"]
