"""Hyperparameter sweeps in W&B's sweep format: config parsing, the local (Optuna) and wandb backends, Part A and
Part B trials, results, analysis, figures and report.
"""

from core.sweep.analysis import analyse, epsilon_squared, fmt, label
from core.sweep.budget import HOST, failure_streak, recover_dead_trials, requeue_failed, slot_map
from core.sweep.config import SweepConfig, load_sweep_config, parse_sweep_config
from core.sweep.local import LocalRun, open_study, run_local
from core.sweep.plots import write_sweep_figures
from core.sweep.report import write_report
from core.sweep.results import TrialRecord, best_record, ranked, records_from_study
from core.sweep.run import (
    SweepSummary,
    check_runnable,
    choose_backend,
    run_sweep,
    validate_trainer_keys,
    write_outputs,
)
from core.sweep.sampler import SlotSeededSampler, slot_seed
from core.sweep.settings import BACKENDS, SweepSettings, resolve_budget
from core.sweep.space import (
    CDF_SUFFIX,
    check_local_support,
    grid_search_space,
    make_pruner,
    make_sampler,
    max_epochs,
    suggest,
)
from core.sweep.storage import StorageError, display_url, normalize_url, open_storage, sqlite_url
from core.sweep.trial import TrialRequest, execute_trial
from core.sweep.trials import PartATrial, PartBTrial, run_for_request
from core.sweep.wandb_backend import WandbUnavailableError, agent_command
from core.sweep.wandb_trial import run_agent_trial
from core.train import TRACKING_MODES

__all__ = [
    "write_report",
    "write_sweep_figures",
    "BACKENDS",
    "CDF_SUFFIX",
    "HOST",
    "LocalRun",
    "PartATrial",
    "PartBTrial",
    "SlotSeededSampler",
    "StorageError",
    "SweepConfig",
    "SweepSettings",
    "SweepSummary",
    "TRACKING_MODES",
    "TrialRecord",
    "TrialRequest",
    "WandbUnavailableError",
    "agent_command",
    "analyse",
    "best_record",
    "check_local_support",
    "check_runnable",
    "choose_backend",
    "display_url",
    "epsilon_squared",
    "execute_trial",
    "failure_streak",
    "fmt",
    "grid_search_space",
    "label",
    "load_sweep_config",
    "make_pruner",
    "make_sampler",
    "max_epochs",
    "normalize_url",
    "open_storage",
    "open_study",
    "parse_sweep_config",
    "ranked",
    "run_agent_trial",
    "records_from_study",
    "recover_dead_trials",
    "requeue_failed",
    "resolve_budget",
    "run_for_request",
    "run_local",
    "run_sweep",
    "slot_map",
    "slot_seed",
    "sqlite_url",
    "suggest",
    "validate_trainer_keys",
    "write_outputs",
]
