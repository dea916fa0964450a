"""The ``local`` backend: the sweep config run by Optuna on persistent storage, many processes and machines.

SQLite in the run folder for the processes of one machine, or a PostgreSQL server so several machines share one
study (:mod:`.storage`). Every process runs the same loop — recover trials of dead processes on this host, decide
whether to stop, run one trial — and agrees with the others through the storage only. ``count`` is the number of
trial slots across restarts, processes and machines, and the sampler is seeded by the slot, so trial n is the
same configuration whoever runs it (:mod:`.budget`, :mod:`.sampler`). A failed trial keeps its slot and is
retried by the next run; ``max_consecutive_failures`` failures in a row stop every process; Ctrl-C records the
running trial as interrupted.
"""

from __future__ import annotations

import logging
import traceback
import warnings
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.reports import TrialRecord
from core.runfiles import mask_secrets, to_plain, write_text
from core.sweep.backends.local.budget import (
    DISCARDED,
    BudgetClaimed,
    SlotTaken,
    claim_slot,
    defer_slot,
    failure_streak,
    fresh_count,
    is_fresh,
    recover_dead_trials,
    requeue_failed,
    root_of,
    waiting_slots,
)
from core.sweep.backends.local.optuna_private import all_trials, storage_of, trial_id_of
from core.sweep.backends.local.sampler import SlotSeededSampler
from core.sweep.backends.local.space import check_local_support, make_pruner, suggest
from core.sweep.backends.local.storage import open_storage
from core.sweep.backends.local.workers import one_interrupt, run_processes
from core.sweep.definition import SweepConfig
from core.sweep.protocol import TrialProgram, TrialRequest, execute_trial, metric_value, trial_dir_name
from core.sweep.settings import SweepSettings
from core.train import RunResult, StopRequest

if TYPE_CHECKING:
    import optuna

logger = logging.getLogger(__name__)

ERROR_FILE = "error.txt"  # a failed trial's traceback, in its folder


@dataclass(frozen=True)
class LocalRun:
    """How a run of the local backend ended (for the caller's summary and exit code)."""

    started_at: datetime  # when run_local began (naive local time, as Optuna stores it); failure streaks start here
    reason: str  # why the last check stopped
    failure_streak: int
    stopped_for_failures: bool
    retried: tuple[int, ...] = ()  # slots re-queued at the start (earlier failures and interruptions)


def _fingerprint(cfg: SweepConfig) -> dict[str, Any]:
    """What may not change between runs of one study (the budget and names may)."""
    keep = ("method", "metric", "parameters", "early_terminate")
    return to_plain({k: cfg.raw.get(k) for k in keep})


def make_storage(settings: SweepSettings) -> optuna.storages.RDBStorage:
    """The study's storage; crashed trials are retried by Optuna's own callback, without a retry limit
    (every retry is a rerun the user asked for)."""
    import optuna
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = RetryHeartbeatStaleTrialCallback(max_retry=None, inherit_intermediate_values=True)
    return open_storage(settings.storage_url, heartbeat_interval=settings.heartbeat_interval,
                        grace_period=settings.grace_period, retry_callback=retry)


def open_study(cfg: SweepConfig, settings: SweepSettings) -> optuna.Study:
    """Create or load the study ``settings.name`` in ``settings.storage_url``; a study made from a different
    sweep config is an error, and so is a missing one with ``--resume`` (``settings.must_exist``)."""
    import optuna

    check_local_support(cfg)
    storage = make_storage(settings)
    try:
        storage.get_study_id_from_name(settings.name)
        exists = True
    except KeyError:
        exists = False
    if settings.must_exist and not exists:
        raise ValueError(f"--resume: no sweep named {settings.name!r} in {settings.shown_url}; "
                         f"drop --resume to start it, or pass the --name/--storage of an existing sweep")
    study = optuna.create_study(storage=storage, study_name=settings.name, load_if_exists=True,
                                direction="maximize" if cfg.metric.maximize else "minimize",
                                pruner=make_pruner(cfg), sampler=SlotSeededSampler(cfg, settings.seed))
    stored = study.user_attrs.get("sweep_config")
    if stored is None:
        study.set_user_attr("sweep_config", _fingerprint(cfg))
    elif stored != _fingerprint(cfg):
        raise ValueError(f"sweep {settings.name!r} in {settings.shown_url} was created from a different "
                         f"config (method/metric/parameters/early_terminate differ); use another --name, or "
                         f"delete that study to start over")
    return study


# ------------------------------------------------------------------------------------------- workers
class TrialInterrupted(Exception):  # noqa: N818 - a control-flow signal; an Exception so Optuna records FAIL
    """The trial stopped at a safe point because this process was asked to stop (Ctrl-C); it runs again."""


def _make_objective(study: optuna.Study, cfg: SweepConfig, settings: SweepSettings, program: TrialProgram,
                    budget: int, stop: StopRequest | None = None):
    import optuna

    def objective(trial: optuna.Trial) -> float:
        if stop is not None and stop.requested:  # asked to stop while Optuna created this trial
            trial.set_user_attr("interrupted", True)
            raise TrialInterrupted(f"stopped by {stop.reason} before it started")
        try:  # before anything is drawn: a trial that may not train leaves no trace but its slot
            number = claim_slot(study, trial.number, budget)
        except SlotTaken as exc:
            trial.set_user_attr(DISCARDED, str(exc))
            me = storage_of(study).get_trial(trial_id_of(trial))
            if isinstance(exc, BudgetClaimed) and (is_fresh(me) or root_of(me) == trial.number):
                defer_slot(study, exc.slot)
            logger.debug("Optuna trial %d not run: %s", trial.number, exc)
            raise
        me = storage_of(study).get_trial(trial_id_of(trial))
        for stale in ("error", "interrupted"):  # a retry inherits the failed attempt's attributes
            if me.user_attrs.get(stale):
                trial.set_user_attr(stale, None)
        values = suggest(trial, cfg)
        rerun = root_of(me) != trial.number
        run_dir = settings.trials_dir / trial_dir_name(number, values)
        resume = rerun and run_dir.is_dir()
        trial.set_user_attr("sweep_number", number)
        trial.set_user_attr("values", to_plain(values))
        trial.set_user_attr("run_dir", str(run_dir))
        pruned: list[int] = []
        reported = set(me.intermediate_values)  # a re-run inherits the crashed attempt's epochs
        last_epoch = values.get("epochs")  # a prune at the last epoch saves nothing: the trial completes

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

        request = TrialRequest(number=number, values=values, run_dir=run_dir,
                               name=f"{settings.name}-{number}", group=settings.name, resume=resume,
                               tracker_mode=settings.tracker_mode, report=report, stop=stop)
        logger.info("trial %d%s: %s", number, " (run again)" if rerun else "",
                    ", ".join(f"{k}={v}" for k, v in values.items()))
        try:
            result = execute_trial(program, request, extra={"backend": "local", "optuna_number": trial.number})
        except KeyboardInterrupt:
            trial.set_user_attr("interrupted", True)
            raise
        except Exception as exc:
            error = mask_secrets(f"{type(exc).__name__}: {exc}")
            trial.set_user_attr("error", error)
            run_dir.mkdir(parents=True, exist_ok=True)
            write_text(run_dir / ERROR_FILE, mask_secrets("".join(traceback.format_exception(exc))))
            logger.warning("trial %d failed: %s (traceback: %s)", number, error.splitlines()[0] if error else "",
                           run_dir / ERROR_FILE)
            raise
        if stop is not None and stop.requested and result.stopped_by == "request":  # cut short: not a result
            trial.set_user_attr("interrupted", True)
            raise TrialInterrupted(f"trial {number} stopped by {stop.reason} after {result.epochs_run} epoch(s)")
        trial.set_user_attr("result", to_plain(result.to_dict()))
        value = metric_value(result, cfg.metric.name)
        if pruned:
            raise optuna.TrialPruned(f"trial {number} pruned after epoch {pruned[0]} ({cfg.metric.name} {value:.4g})")
        return value

    return objective


def stop_reason(study: optuna.Study, cfg: SweepConfig, settings: SweepSettings, budget: int,
                started_at: datetime | None) -> str | None:
    """Why a process should not start another trial, or None if it should (``budget`` trial slots in the
    study; failures in a row count from ``started_at``, the start of this run)."""
    trials = all_trials(study)
    limit = settings.max_consecutive_failures
    streak = failure_streak(trials, started_at)
    if limit and streak >= limit:
        return f"{streak} trials failed in a row (--max-consecutive-failures {limit})"
    if cfg.metric.target is not None and any(
            t.state.name == "COMPLETE" and cfg.metric.reached_target(t.value) for t in trials):
        return f"a trial reached the metric target {cfg.metric.name} = {cfg.metric.target}"
    if waiting_slots(trials, budget) or fresh_count(trials) < budget:
        return None  # queued retries hold slots already; fresh slots are left
    running = sum(t.state.name == "RUNNING" and DISCARDED not in t.user_attrs for t in trials)
    tail = f"; {running} still running" if running else ""
    return f"all {budget} trial slots are claimed{tail}"


class _QuietOptunaFailures:
    """Optuna logs every failed trial with its traceback; we log one line per failure ourselves."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.getMessage().startswith("Trial ") and " failed with " in record.getMessage())


class _QuietTrainerInterrupt:
    """The trainer tells a Ctrl-C'd standalone run to ``--resume`` and logs each stop request; in a sweep
    the script prints one line that says how to resume."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(("interrupted in epoch", "stop requested ("))


_QUIET, _QUIET_INTERRUPT = _QuietOptunaFailures(), _QuietTrainerInterrupt()


def run_worker(cfg: SweepConfig, settings: SweepSettings, program: TrialProgram, budget: int, started_at: datetime,
               *, worker_id: int = 0) -> int:
    """Run trials until a stop reason holds; returns how many this process started. SIGINT and SIGTERM only
    *request* a stop: the running trial ends before its next batch, recorded as interrupted, and this raises
    KeyboardInterrupt — never inside a database write or a checkpoint. The same signal twice interrupts at once.
    """
    logging.getLogger("optuna.study._optimize").addFilter(_QUIET)
    for name in ("core.train.trainer", "core.train.stopping"):
        logging.getLogger(name).addFilter(_QUIET_INTERRUPT)
    study = open_study(cfg, settings)
    stop = StopRequest()
    objective = _make_objective(study, cfg, settings, program, budget, stop)
    started = 0
    with stop.on_signals():
        while True:
            if stop.requested:
                raise KeyboardInterrupt(f"stopped by {stop.reason}")
            recover_dead_trials(study)
            reason = stop_reason(study, cfg, settings, budget, started_at)
            if reason:
                logger.info("worker %d stops: %s", worker_id, reason)
                return started
            study.optimize(objective, n_trials=1, catch=(Exception,))
            started += 1


def run_local(cfg: SweepConfig, settings: SweepSettings, program: TrialProgram) -> LocalRun:
    """Run the sweep with ``settings.workers`` processes on one storage (1 = in this process).

    Other processes may run the same sweep at the same time (other terminals, other machines): they share
    the budget (``settings.budget(cfg)``, resolved once here) through the storage. Failed and interrupted
    trials of earlier runs are retried first.
    """
    budget = settings.budget(cfg)
    if budget < 1:
        raise ValueError(f"the trial budget must be >= 1, got {budget}")
    started_at = datetime.now()  # naive local time, as Optuna stores it
    study = open_study(cfg, settings)  # create and validate once, before any worker starts
    recover_dead_trials(study)
    retried = requeue_failed(study, budget, retry_errors=settings.retry_failed)
    logger.info("sweep %s: %d trial slots on %s, %d process(es) here", settings.name, budget, settings.shown_url,
                settings.workers)
    if settings.workers == 1:
        with one_interrupt():
            run_worker(cfg, settings, program, budget, started_at)
    else:
        bad = run_processes(run_worker, (cfg, settings, program, budget, started_at), settings.workers)
        if bad:
            raise RuntimeError(f"sweep worker(s) {', '.join(bad)} failed; finished trials are kept in "
                               f"{settings.shown_url}: rerun the same command to continue")
    trials = all_trials(study)
    streak = failure_streak(trials, started_at)
    limit = settings.max_consecutive_failures
    return LocalRun(started_at=started_at, reason=stop_reason(study, cfg, settings, budget, started_at) or "",
                    failure_streak=streak, stopped_for_failures=bool(limit and streak >= limit),
                    retried=tuple(retried))


def records_from_study(study: optuna.Study, cfg: SweepConfig) -> list[TrialRecord]:
    """One record per trial slot: a crashed trial that was re-run is replaced by its re-run."""
    records: dict[int, TrialRecord] = {}
    for t in study.get_trials(deepcopy=False):
        if DISCARDED in t.user_attrs or not t.user_attrs.get("values"):
            continue  # dropped before training, or queued and never started
        ua = t.user_attrs
        result = RunResult.from_dict(ua["result"]) if ua.get("result") else None
        root = root_of(t)
        rec = TrialRecord(
            number=int(ua.get("sweep_number", root)), state=t.state.name, hyperparameters=ua["values"],
            objective=result.metrics().get(cfg.metric.name) if result else None, result=result,
            started_at=t.datetime_start, ended_at=t.datetime_complete,
            run_dir=Path(ua["run_dir"]) if ua.get("run_dir") else None,
            retry_of=root if root != t.number else None, error=ua.get("error"))
        records[root] = rec  # trials come in number order: the latest attempt of a slot wins
    return sorted(records.values(), key=lambda r: r.number)
