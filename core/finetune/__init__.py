"""Part B: fine-tuning strategies as small objects, one Part B run, and the comparison of strategies with Part A.
"""

from core.finetune.compare import read_partA_row, run_compare
from core.finetune.defaults import CPU_EPOCHS, CPU_IMAGE_SIZE, GPU_EPOCHS, device_defaults, with_device_defaults
from core.finetune.feature_cache import FeatureView, HeadFeatureCache, head_part_name
from core.finetune.groups import count_parameters
from core.finetune.partB import PARTB_FLAT_KEYS, PARTB_KEYS, PartBConfig, PartBRun, run_partB
from core.finetune.strategies import (
                                      LPFT,
                                      STRATEGIES,
                                      FinetuneStrategy,
                                      Full,
                                      Gradual,
                                      HeadOnly,
                                      LayerDecay,
                                      TopK,
                                      make_strategy,
                                      register_strategy,
)

__all__ = ["CPU_EPOCHS", "CPU_IMAGE_SIZE", "GPU_EPOCHS", "LPFT", "PARTB_FLAT_KEYS", "PARTB_KEYS", "STRATEGIES",
           "FeatureView",
           "FinetuneStrategy", "Full", "Gradual", "HeadFeatureCache", "HeadOnly", "LayerDecay", "PartBConfig",
           "PartBRun", "TopK", "count_parameters", "device_defaults", "head_part_name", "make_strategy",
           "read_partA_row", "register_strategy", "run_compare", "run_partB", "with_device_defaults"]
