"""One Part A run (CNN from scratch), composed: its config (nested dataclasses and the flat keys sweeps speak)
and ``run_partA``.
"""

from core.partA.config import (
    FLAT_KEYS,
    MODEL_KEYS,
    RECOMMENDED_DATA,
    RECOMMENDED_TRAIN,
    WEIGHT_DECAY_FOR,
    Coercer,
    PartAConfig,
    as_bool,
    as_float,
    as_int,
    as_str,
    coerce_flat,
    optional,
)
from core.partA.run import run_partA

__all__ = ["FLAT_KEYS", "MODEL_KEYS", "RECOMMENDED_DATA", "RECOMMENDED_TRAIN", "WEIGHT_DECAY_FOR", "Coercer",
           "PartAConfig", "as_bool", "as_float", "as_int", "as_str", "coerce_flat", "optional", "run_partA"]
