"""Hyperparameter sweeps in W&B's sweep format: config parsing, the local (Optuna) and wandb backends, Part A and
Part B trials, results, analysis, figures and report.
"""

from core.sweep.analysis import analyse, epsilon_squared, fmt, label
from core.sweep.budget import HOST, recover_dead_trials
from core.sweep.config import SweepConfig, load_sweep_config, parse_sweep_config
from core.sweep.local import LocalSettings, open_study, run_local, sqlite_url
from core.sweep.plots import write_sweep_figures
from core.sweep.report import write_report
from core.sweep.results import TrialRecord, best_record, ranked, records_from_study
from core.sweep.run import (
    BACKENDS,
    TRACKING_MODES,
    SweepSettings,
    SweepSummary,
    choose_backend,
    resolve_budget,
    run_sweep,
    validate_trainer_keys,
    write_outputs,
)
from core.sweep.space import (
    CDF_SUFFIX,
    check_local_support,
    grid_search_space,
    make_pruner,
    make_sampler,
    max_epochs,
    suggest,
)
from core.sweep.trial import TrialRequest, execute_trial
from core.sweep.trials import PartATrial, PartBTrial, run_for_request
from core.sweep.wandb_backend import WandbUnavailableError, agent_command
from core.sweep.wandb_trial import run_agent_trial

__all__ = [
    "write_report",
    "write_sweep_figures",
    "BACKENDS",
    "CDF_SUFFIX",
    "HOST",
    "LocalSettings",
    "PartATrial",
    "PartBTrial",
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
    "choose_backend",
    "epsilon_squared",
    "execute_trial",
    "fmt",
    "grid_search_space",
    "label",
    "load_sweep_config",
    "make_pruner",
    "make_sampler",
    "max_epochs",
    "open_study",
    "parse_sweep_config",
    "ranked",
    "run_agent_trial",
    "records_from_study",
    "recover_dead_trials",
    "resolve_budget",
    "run_for_request",
    "run_local",
    "run_sweep",
    "sqlite_url",
    "suggest",
    "validate_trainer_keys",
    "write_outputs",
]
