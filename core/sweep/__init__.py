"""Hyperparameter sweeps in W&B's sweep format: what a sweep is (config, parameters, settings), how it runs
(``run_sweep``, one trial), the backends behind one small interface (:mod:`.backend`: ``SWEEP_BACKENDS``, each in
:mod:`.backends`), and the Part A and Part B trial programs. Its outputs are written by :mod:`core.reports`.
"""

from core.sweep.backend import SWEEP_BACKENDS, BackendRun, SweepBackend, get_backend, register_backend
from core.sweep.backends.local import LocalBackend
from core.sweep.backends.wandb import WandbBackend
from core.sweep.definition import SweepConfig, load_sweep_config, parse_sweep_config
from core.sweep.launch import SweepSummary, check_runnable, choose_backend, run_sweep, validate_trainer_keys
from core.sweep.params import ParamSpec
from core.sweep.protocol import TrialProgram, TrialRequest, execute_trial
from core.sweep.settings import SweepSettings, resolve_budget
from core.sweep.trials import partA_program, partB_program
from core.train import TRACKING_MODES

__all__ = ["SWEEP_BACKENDS", "TRACKING_MODES", "BackendRun", "LocalBackend", "ParamSpec", "SweepBackend", "SweepConfig",
           "SweepSettings", "SweepSummary", "TrialProgram", "TrialRequest", "WandbBackend", "check_runnable",
           "choose_backend", "execute_trial", "get_backend", "load_sweep_config", "parse_sweep_config",
           "partA_program", "partB_program", "register_backend", "resolve_budget", "run_sweep",
           "validate_trainer_keys"]
