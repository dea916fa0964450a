"""Trial slots of a local sweep: the budget across workers and restarts, and recovery of crashed trials.

A *slot* is a trial number. A trial re-created after a crash carries the original's number in
``system_attrs["failed_trial"]`` (Optuna's retry callback) and so uses that slot again. Used slots =
roots of all trials except discarded ones and queued grid points deferred past the budget.

:func:`claim_slot` runs inside a trial before any epoch: it rejects a trial whose rank among slots is past
the budget, a second re-run of the same crashed trial, or a grid point another live trial holds (the
earlier trial number wins, so two racing workers agree on who trains). :func:`recover_dead_trials` fails
trials left RUNNING by a dead process on this host (``kill -9``) with the storage's atomic state change,
exactly as Optuna's ``fail_stale_trials`` does, and re-queues them through the storage's retry callback.
"""

from __future__ import annotations

import copy
import logging
import os
import socket
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import optuna

logger = logging.getLogger(__name__)

HOST = socket.gethostname()
DISCARDED = "discarded"  # user attr: why a trial was dropped before training (not a slot, not a result)
DEFERRED = "deferred"  # user attr of a queued grid point that a discarded over-budget trial had drawn


class SlotTaken(Exception):  # noqa: N818 - a control-flow signal
    """This trial may not train: the budget is claimed, or another trial already runs this point."""


class BudgetClaimed(SlotTaken):  # noqa: N818 - a control-flow signal
    """Every slot of the budget is claimed (the trial's grid point is deferred, not lost)."""


def root_of(t: optuna.trial.FrozenTrial) -> int:
    """The trial number whose slot ``t`` uses (a re-run uses the crashed original's)."""
    return int(t.system_attrs.get("failed_trial", t.number))


def is_waiting(t: optuna.trial.FrozenTrial) -> bool:
    from optuna.trial import TrialState

    return t.state == TrialState.WAITING


def used_slots(trials: list[optuna.trial.FrozenTrial]) -> set[int]:
    return {root_of(t) for t in trials
            if DISCARDED not in t.user_attrs and not (is_waiting(t) and t.user_attrs.get(DEFERRED))}


def _retried_numbers(trials: list[optuna.trial.FrozenTrial]) -> set[int]:
    done: set[int] = set()
    for t in trials:
        done.update(t.system_attrs.get("retry_history", []))
    return done


def _pid_dead(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:  # a killed child not yet reaped is a zombie: dead for our purpose
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def recover_dead_trials(study: optuna.Study) -> list[int]:
    """Fail RUNNING trials whose process on this host is gone, and re-queue interrupted ones."""
    from optuna.trial import TrialState

    storage = study._storage  # the RDBStorage we built: atomic state changes, as Optuna's own fail_stale_trials
    retry = storage.get_heartbeat_stale_trial_callback()
    requeued: list[int] = []
    trials = study.get_trials(deepcopy=False)
    retried = _retried_numbers(trials)
    for t in trials:
        worker = t.user_attrs.get("worker") or {}
        dead = (t.state == TrialState.RUNNING and worker.get("host") == HOST and worker.get("pid") != os.getpid()
                and _pid_dead(int(worker.get("pid", -1))))
        interrupted = (t.state == TrialState.FAIL and t.user_attrs.get("interrupted")
                       and t.number not in retried)
        if dead:
            try:
                changed = storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL)
            except Exception:  # another worker failed it first (UpdateFinishedTrialError, busy database)
                changed = False
            if not changed:
                continue
            logger.warning("trial %d was left RUNNING by a dead process (pid %s): marked FAIL, queued to re-run",
                           t.number, worker.get("pid"))
        elif interrupted:
            logger.warning("trial %d was interrupted: queued to re-run", t.number)
        else:
            continue
        retry(study, copy.deepcopy(storage.get_trial(t._trial_id)))
        requeued.append(t.number)
    return requeued


def claim_slot(study: optuna.Study, number: int, budget: int) -> int:
    """The trial's *sweep number* (0, 1, 2, ...: its slot's rank), or SlotTaken if it may not train.

    It may not train past the budget, as a second re-run of one crashed trial, or on a grid point another
    live trial holds. The rank counts used slots with smaller numbers, so a re-run gets the number of the
    trial it replaces and numbers have no gaps from re-runs or discarded trials.
    """
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    me = next(t for t in trials if t.number == number)
    root = root_of(me)
    live = (TrialState.RUNNING, TrialState.COMPLETE, TrialState.PRUNED)
    grid_id = me.system_attrs.get("grid_id")
    for t in trials:
        if t.number == number or DISCARDED in t.user_attrs or t.state not in live:
            continue
        earlier = t.number < number or t.state != TrialState.RUNNING
        if root_of(t) == root and earlier:
            raise SlotTaken(f"trial {root} is already being re-run by trial {t.number}")
        if grid_id is not None and t.system_attrs.get("grid_id") == grid_id and earlier:
            raise SlotTaken(f"grid point {grid_id} is already taken by trial {t.number}")
    below = {r for r in used_slots([t for t in trials if t.number != number]) if r < root}
    if root == number and len(below) >= budget:  # (a re-run of a crashed trial uses that trial's slot)
        raise BudgetClaimed(f"all {budget} trial slots are already claimed")
    return len(below)


def defer_grid_point(study: optuna.Study, number: int) -> None:
    """Queue the grid point a discarded trial had drawn, so a later, larger --count still visits it."""
    import optuna
    from optuna.trial import TrialState

    t = next(x for x in study.get_trials(deepcopy=False) if x.number == number)
    if "grid_id" not in t.system_attrs:
        return
    keep = {k: t.system_attrs[k] for k in ("grid_id", "search_space") if k in t.system_attrs}
    study.add_trial(optuna.trial.create_trial(state=TrialState.WAITING, params=t.params,
                                              distributions=t.distributions, system_attrs=keep,
                                              user_attrs={DEFERRED: True}))
