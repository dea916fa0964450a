"""Part B: fine-tuning strategies as small objects, one Part B run, and the comparison of strategies with Part A.
"""

from core.finetune.compare import read_partA_row, run_compare
from core.finetune.defaults import CPU_EPOCHS, CPU_IMAGE_SIZE, GPU_EPOCHS, device_defaults, with_device_defaults
from core.finetune.feature_cache import FeatureView, HeadFeatureCache, head_part_name
from core.finetune.groups import count_parameters, optimizer_param_count
from core.finetune.run import PARTB_FLAT_KEYS, PartBConfig, PartBRun, run_partB
from core.finetune.strategies import (
    LPFT,
    STRATEGY_NAMES,
    Full,
    Gradual,
    HeadOnly,
    LayerDecay,
    TopK,
    make_strategy,
)

__all__ = [
    "FeatureView",
    "HeadFeatureCache",
    "head_part_name",
    "CPU_EPOCHS",
    "CPU_IMAGE_SIZE",
    "GPU_EPOCHS",
    "Full",
    "Gradual",
    "HeadOnly",
    "LPFT",
    "LayerDecay",
    "PARTB_FLAT_KEYS",
    "PartBConfig",
    "PartBRun",
    "STRATEGY_NAMES",
    "TopK",
    "count_parameters",
    "device_defaults",
    "make_strategy",
    "optimizer_param_count",
    "read_partA_row",
    "run_compare",
    "run_partB",
    "with_device_defaults",
]
