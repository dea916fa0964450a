"""The training loop and everything it owns: config, epochs, fit, checkpoints, optimisers and schedules, RNG
state, devices, CPU memory policy, stop requests at safe points, W&B tracking.
"""

from core.train.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_model,
    load_weights,
    make_payload,
    save_checkpoint,
)
from core.train.ema import WeightEMA
from core.train.epoch import EvalStats, evaluate, supports_device_skip, train_one_epoch
from core.train.memory import ENV_SWITCH, glibc, keep_freed_for_process, keep_freed_memory, policy_enabled
from core.train.mixing import make_batch_mixer
from core.train.optim import (
    OPTIMIZERS,
    SCHEDULERS,
    LRSchedule,
    default_param_groups,
    make_optimizer,
    register_optimizer,
    register_scheduler,
)
from core.train.recipe import MONITORS
from core.train.result import EPOCH_METRICS, RUN_METRICS, RunResult
from core.train.rng import capture_rng_state, restore_rng_state, seed_everything
from core.train.stopping import STOP_SIGNALS, StopRequest, StopRequested, stop_after_training
from core.train.tracking import TRACKING_MODES, Tracker, has_wandb_credentials, resolve_mode
from core.train.trainer import (
    EarlyStopping,
    EpochStats,
    NonFiniteLossError,
    StopTraining,
    TrainConfig,
    TrainingError,
    check_resumable,
    check_run_start,
    fit,
    format_lr,
)
from core.train.tta import FlipTTA, with_tta

__all__ = ["EPOCH_METRICS", "RUN_METRICS", "RunResult", "CheckpointError", "ENV_SWITCH", "EarlyStopping", "MONITORS",
           "EpochStats", "EvalStats", "FlipTTA", "LRSchedule", "TRACKING_MODES", "NonFiniteLossError", "OPTIMIZERS",
           "register_optimizer", "register_scheduler", "SCHEDULERS", "STOP_SIGNALS", "StopRequest", "StopRequested",
           "StopTraining", "Tracker", "TrainConfig", "TrainingError", "WeightEMA", "capture_rng_state",
           "check_resumable", "check_run_start", "default_param_groups", "evaluate", "fit", "format_lr", "glibc",
           "has_wandb_credentials", "keep_freed_for_process", "keep_freed_memory", "load_checkpoint", "load_model",
           "load_weights", "make_batch_mixer", "make_optimizer", "make_payload", "policy_enabled", "resolve_mode",
           "restore_rng_state", "save_checkpoint", "seed_everything", "stop_after_training", "supports_device_skip",
           "train_one_epoch", "with_tta"]
