"""The ``local`` backend: the sweep config run by Optuna on persistent storage, resumable, many workers.

Storage is an Optuna ``RDBStorage``: SQLite in the run folder by default (``sqlite:///runs/<name>/optuna.db``)
or any SQLAlchemy URL (``--storage postgresql://...``) so workers on several machines share one study.

Budget. ``count`` (``--count`` or ``run_cap``) is the number of trial *slots* in the whole study, across
restarts and workers. A slot is a trial number; a trial re-created after a crash keeps its original
number's slot. Before each trial a worker counts used slots (finished + running + queued re-runs) and
stops at the budget; inside the trial it checks its *rank* (slots with smaller numbers), so two workers
racing for the last slot cannot both train: the loser is discarded before any epoch runs.

Crash safety. Every trial records its host and pid. A trial left RUNNING by a dead process on this host
(``kill -9``) is marked FAIL at the next start and re-queued with the same parameters (Optuna's
``RetryHeartbeatStaleTrialCallback``), and re-runs in its old folder with ``resume=True``. A worker that
died on another host is found by Optuna's heartbeat (``heartbeat_interval``/``grace_period``) instead.
Ctrl-C marks the running trial FAIL as interrupted; it is re-queued the same way.

Grid. Optuna's ``GridSampler`` gives trial *n* grid point *n* (same shuffled order in every worker, same
seed), and trial numbers are unique in the storage, so two workers never draw the same point; a rare
duplicate after re-runs is detected and discarded before training.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.runfiles import to_plain
from core.sweep.budget import (
    DEFERRED,
    DISCARDED,
    HOST,
    BudgetClaimed,
    SlotTaken,
    claim_slot,
    defer_grid_point,
    is_waiting,
    recover_dead_trials,
    root_of,
    used_slots,
)
from core.sweep.config import SweepConfig
from core.sweep.space import check_local_support, make_pruner, make_sampler, suggest
from core.sweep.trial import TrialFn, TrialRequest, execute_trial, metric_value, trial_dir_name

if TYPE_CHECKING:
    import optuna

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LocalSettings:
    """How the local backend runs one sweep (resolved by ``core.sweep.run``)."""

    study_name: str
    storage_url: str
    trials_dir: Path
    budget: int  # total trial slots in the study
    seed: int = 0
    tracker_mode: str = "auto"
    heartbeat_interval: int = 30  # seconds between "still alive" writes of a running trial
    grace_period: int = 120  # a RUNNING trial silent this long (another host) is failed and re-queued
    max_retry: int = 2  # re-runs of a trial that keeps crashing
    must_exist: bool = False  # --resume: refuse to start a new study


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{Path(path).resolve()}"


def _fingerprint(cfg: SweepConfig) -> dict[str, Any]:
    """What may not change between runs of one study (the budget and names may)."""
    keep = ("method", "metric", "parameters", "early_terminate")
    return to_plain({k: cfg.raw.get(k) for k in keep})


def make_storage(settings: LocalSettings) -> optuna.storages.RDBStorage:
    import optuna
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    engine_kwargs: dict[str, Any] = {}
    if settings.storage_url.startswith("sqlite"):
        engine_kwargs = {"connect_args": {"timeout": 120}}  # wait on a busy file instead of failing
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = RetryHeartbeatStaleTrialCallback(max_retry=settings.max_retry, inherit_intermediate_values=True)
        return optuna.storages.RDBStorage(
            settings.storage_url, engine_kwargs=engine_kwargs, heartbeat_interval=settings.heartbeat_interval,
            grace_period=settings.grace_period, heartbeat_stale_trial_callback=retry)


def open_study(cfg: SweepConfig, settings: LocalSettings, *, worker_id: int = 0) -> optuna.Study:
    """Create or load the study; a study made from a different sweep config is an error."""
    import optuna

    check_local_support(cfg)
    storage = make_storage(settings)
    exists = settings.study_name in {s.study_name for s in optuna.get_all_study_summaries(storage)}
    if settings.must_exist and not exists:
        raise ValueError(f"--resume: no sweep named {settings.study_name!r} in {settings.storage_url}; "
                         f"drop --resume to start it, or pass the --name/--storage of an existing sweep")
    study = optuna.create_study(storage=storage, study_name=settings.study_name, load_if_exists=True,
                                direction="maximize" if cfg.metric.maximize else "minimize",
                                pruner=make_pruner(cfg))
    stored = study.user_attrs.get("sweep_config")
    if stored is None:
        study.set_user_attr("sweep_config", _fingerprint(cfg))
    elif stored != _fingerprint(cfg):
        raise ValueError(f"sweep {settings.study_name!r} in {settings.storage_url} was created from a different "
                         f"config (method/metric/parameters/early_terminate differ); use another --name, or "
                         f"delete that study to start over")
    seed = settings.seed if cfg.method == "grid" else settings.seed + 7919 * worker_id + len(study.trials)
    study.sampler = make_sampler(cfg, seed=seed)
    return study


# ------------------------------------------------------------------------------------------- workers
def _make_objective(study: optuna.Study, cfg: SweepConfig, settings: LocalSettings, trial_fn: TrialFn):
    import optuna

    def objective(trial: optuna.Trial) -> float:
        trial.set_user_attr("worker", {"host": HOST, "pid": os.getpid()})
        values = suggest(trial, cfg)
        try:
            number = claim_slot(study, trial.number, settings.budget)
        except SlotTaken as exc:
            trial.set_user_attr(DISCARDED, str(exc))
            if isinstance(exc, BudgetClaimed):
                defer_grid_point(study, trial.number)
            raise
        me = next(t for t in study.get_trials(deepcopy=False) if t.number == trial.number)
        rerun = root_of(me) != trial.number
        run_dir = settings.trials_dir / trial_dir_name(number, values)
        resume = rerun and run_dir.is_dir()
        trial.set_user_attr("sweep_number", number)
        trial.set_user_attr("values", to_plain(values))
        trial.set_user_attr("run_dir", str(run_dir))
        pruned: list[int] = []
        reported = set(me.intermediate_values)  # a re-run inherits the crashed attempt's epochs
        flat = cfg.to_flat(values)
        last_epoch = flat.get("epochs")  # a prune at the last epoch saves nothing: the trial completes

        def report(epoch: int, metrics) -> bool:
            value = metrics.get(cfg.metric.name)
            if value is None:
                return False
            if epoch not in reported:
                trial.report(float(value), epoch)
                reported.add(epoch)
            if (last_epoch is None or epoch < int(last_epoch)) and trial.should_prune():
                pruned.append(epoch)
                return True
            return False

        request = TrialRequest(number=number, values=values, flat=flat, run_dir=run_dir,
                               name=f"{settings.study_name}-{number}", group=settings.study_name, resume=resume,
                               tracker_mode=settings.tracker_mode, report=report)
        logger.info("trial %d%s: %s", number, " (re-run after a crash)" if rerun else "",
                    ", ".join(f"{k}={v}" for k, v in values.items()))
        try:
            result = execute_trial(trial_fn, request, extra={"backend": "local", "optuna_number": trial.number})
        except KeyboardInterrupt:
            trial.set_user_attr("interrupted", True)
            raise
        except Exception as exc:
            trial.set_user_attr("error", f"{type(exc).__name__}: {exc}")
            raise
        trial.set_user_attr("result", to_plain(result.to_dict()))
        value = metric_value(result, cfg.metric.name)
        if pruned:
            raise optuna.TrialPruned(f"trial {number} pruned after epoch {pruned[0]} ({cfg.metric.name} {value:.4g})")
        return value

    return objective


def stop_reason(study: optuna.Study, cfg: SweepConfig, settings: LocalSettings) -> str | None:
    """Why a worker should not start another trial, or None if it should."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    if any(is_waiting(t) and not t.user_attrs.get(DEFERRED) for t in trials):
        return None  # re-runs of crashed trials hold slots already: always run them
    if cfg.metric.target is not None and any(
            t.state == TrialState.COMPLETE and cfg.metric.reached_target(t.value) for t in trials):
        return f"a trial reached the metric target {cfg.metric.name} = {cfg.metric.target}"
    used = used_slots(trials)
    if len(used) >= settings.budget:
        running = sum(t.state == TrialState.RUNNING for t in trials)
        tail = f"; {running} still running in other workers" if running else ""
        return f"all {settings.budget} trial slots are claimed{tail}"
    return None


def run_worker(cfg: SweepConfig, settings: LocalSettings, trial_fn: TrialFn, *, worker_id: int = 0) -> int:
    """Run trials until the budget is claimed; returns how many this worker started."""
    study = open_study(cfg, settings, worker_id=worker_id)
    objective = _make_objective(study, cfg, settings, trial_fn)
    started = 0
    while True:
        recover_dead_trials(study)
        reason = stop_reason(study, cfg, settings)
        if reason:
            logger.info("worker %d stops: %s", worker_id, reason)
            return started
        study.optimize(objective, n_trials=1, catch=(Exception,))
        started += 1


def _worker_entry(cfg: SweepConfig, settings: LocalSettings, trial_fn: TrialFn, worker_id: int, workers: int,
                  log_level: int) -> None:
    logging.basicConfig(level=log_level, format=f"%(asctime)s [worker {worker_id}] %(levelname)s %(message)s")
    cpus = os.cpu_count() or 1
    if workers > 1:  # share the cores instead of oversubscribing them; read by torch when it is imported
        os.environ.setdefault("OMP_NUM_THREADS", str(max(1, cpus // workers)))
    run_worker(cfg, settings, trial_fn, worker_id=worker_id)


def run_local(cfg: SweepConfig, settings: LocalSettings, trial_fn: TrialFn, *, workers: int = 1) -> None:
    """Run the sweep with ``workers`` processes on one storage (1 = in this process)."""
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    if settings.budget < 1:
        raise ValueError(f"the trial budget must be >= 1, got {settings.budget}")
    open_study(cfg, settings)  # create and validate once, before any worker starts
    settings = replace(settings, must_exist=False)
    if workers == 1:
        run_worker(cfg, settings, trial_fn)
        return
    ctx = mp.get_context("spawn")
    level = logging.getLogger().getEffectiveLevel()
    procs = [ctx.Process(target=_worker_entry, args=(cfg, settings, trial_fn, i, workers, level),
                         name=f"sweep-worker-{i}") for i in range(workers)]
    for p in procs:
        p.start()
    try:
        for p in procs:
            p.join()
    except KeyboardInterrupt:
        for p in procs:  # they received the same SIGINT: let them record their trial as interrupted
            p.join(timeout=60)
        raise
    bad = [f"{p.name} (exit code {p.exitcode})" for p in procs if p.exitcode != 0]
    if bad:
        raise RuntimeError(f"sweep worker(s) {', '.join(bad)} failed; finished trials are kept in "
                           f"{settings.storage_url}: rerun the same command to continue")
