"""The ``local`` sweep backend: the W&B sweep config run by Optuna on SQLite or a database server, with many
processes and machines, resumable (:mod:`.study`; budget, sampler, search space, storage and worker processes
in modules of their own, Optuna's private attributes in :mod:`.optuna_private`).
"""

from pathlib import Path

from core.sweep.backend import BackendRun, SweepBackend, register_backend
from core.sweep.backends.local.budget import HOST, failure_streak, recover_dead_trials, requeue_failed, slot_map
from core.sweep.backends.local.sampler import SlotSeededSampler, slot_seed
from core.sweep.backends.local.space import (
    CDF_SUFFIX,
    check_local_support,
    grid_search_space,
    make_pruner,
    make_sampler,
    max_epochs,
    suggest,
)
from core.sweep.backends.local.storage import StorageError, display_url, normalize_url, open_storage, sqlite_url
from core.sweep.backends.local.study import LocalRun, open_study, records_from_study, run_local


@register_backend("local")
class LocalBackend(SweepBackend):
    """Optuna on ``settings.storage_url``. ``count``: the study's trial slots in all, across restarts, processes
    and machines (default ``run_cap``); ``resume`` (any value): the study must exist already."""

    def run(self, cfg, settings, program, *, argv=None) -> BackendRun:
        run = run_local(cfg, settings, program)
        url = settings.shown_url
        return BackendRun(records=tuple(records_from_study(open_study(cfg, settings), cfg)), retries_failed=True,
                          failure_streak=run.failure_streak if run.stopped_for_failures else 0, storage_url=url,
                          outputs={"optuna storage": Path(url.removeprefix("sqlite:///"))
                                   if url.startswith("sqlite:///") else url})

    def notes(self, cfg) -> list[str]:
        sampler = {"grid": "Optuna GridSampler (W&B grid values)", "random": "Optuna RandomSampler",
                   "bayes": "Optuna TPESampler: W&B's bayes is a Gaussian process, TPE a different Bayesian "
                            "optimiser (random for its first 10 trials)"}[cfg.method]
        notes = [f"method {cfg.method} → {sampler}."]
        hb = cfg.early_terminate
        if hb is not None:
            notes.append(f"early_terminate hyperband → Optuna HyperbandPruner(min_resource={hb.first_bracket}, "
                         f"reduction_factor={int(hb.eta)}) fed {cfg.metric.name} every epoch; W&B's strict={hb.strict} "
                         "has no Optuna counterpart.")
        if any(p.distribution.startswith(("normal", "q_normal", "log_normal", "q_log_normal"))
               or p.distribution == "categorical_w_probabilities" for p in cfg.parameters):
            notes.append("normal/log_normal/categorical_w_probabilities parameters are drawn as a uniform 'u' "
                         "(stored as '<name>:cdf' in Optuna) mapped through W&B's distribution.")
        return notes


__all__ = ["CDF_SUFFIX", "HOST", "LocalBackend", "LocalRun", "SlotSeededSampler", "StorageError",
           "check_local_support", "display_url", "failure_streak", "grid_search_space", "make_pruner", "make_sampler",
           "max_epochs", "normalize_url", "open_storage", "open_study", "records_from_study", "recover_dead_trials",
           "requeue_failed", "run_local", "slot_map", "slot_seed", "sqlite_url", "suggest"]
