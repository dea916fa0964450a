"""Trial slots of a local sweep: the budget across processes, machines and restarts; failed and crashed trials.

Slot n is "the sweep's trial n" (``trials/n-<hash>/``, row n of ``results.csv``, a draw seeded by n). Every
process derives a trial's slot from what Optuna created it with, never from timing, so none can disagree and no
lock is needed: a fresh trial takes the next fresh slot (Optuna numbers trials under a row lock), a retry keeps
the slot it repeats, and a fresh trial drawn past the budget is dropped and its slot deferred to a later,
larger ``--count``. :func:`claim_slot` discards a trial whose slot is taken or past the budget, so the budget is
exact. Failed trials keep their slot and are retried by the next run (:func:`requeue_failed`); a trial left
RUNNING by a dead process on this host is failed and retried at once (:func:`recover_dead_trials`).
"""

from __future__ import annotations

import copy
import logging
import os
import socket
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from core.runfiles import pid_alive
from core.sweep.backends.local.optuna_private import all_trials, storage_of, trial_id_of

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

logger = logging.getLogger(__name__)

HOST = socket.gethostname()
DISCARDED = "discarded"  # user attr: why a trial was dropped before training (not a slot, not a result)
DEFERRED_SLOT = "deferred_slot"  # system attr, set at creation: the slot a queued deferred trial fills
FAILED_TRIAL = "failed_trial"  # system attr of a retry (Optuna's): the Optuna number of the first attempt


class SlotTaken(Exception):  # noqa: N818 - a control-flow signal
    """This trial may not train: its slot is past the budget, or another trial holds it."""


class BudgetClaimed(SlotTaken):  # noqa: N818 - a control-flow signal
    """The trial's slot is past the budget (it is deferred, not lost)."""

    def __init__(self, message: str, slot: int) -> None:
        super().__init__(message)
        self.slot = slot


def root_of(t: FrozenTrial) -> int:
    """The Optuna number of the first attempt of ``t``'s slot (``t`` itself unless it is a retry)."""
    return int(t.system_attrs.get(FAILED_TRIAL, t.number))


def is_fresh(t: FrozenTrial) -> bool:
    """Created by ``study.ask`` (not a retry, not a deferred slot): it takes a new slot."""
    return FAILED_TRIAL not in t.system_attrs and DEFERRED_SLOT not in t.system_attrs


def slot_map(trials: Sequence[FrozenTrial]) -> dict[int, int]:
    """Optuna trial number → slot, for every trial (see the module docstring)."""
    slots: dict[int, int] = {}
    fresh = 0
    for t in sorted(trials, key=lambda x: x.number):
        if DEFERRED_SLOT in t.system_attrs:
            slots[t.number] = int(t.system_attrs[DEFERRED_SLOT])
        elif FAILED_TRIAL in t.system_attrs:
            first = int(t.system_attrs[FAILED_TRIAL])
            slots[t.number] = slots.get(first, first)
        else:
            slots[t.number] = fresh
            fresh += 1
    return slots


def fresh_count(trials: Sequence[FrozenTrial]) -> int:
    return sum(is_fresh(t) for t in trials)


def _state(t: FrozenTrial) -> str:
    return t.state.name


def claim_slot(study: optuna.Study, number: int, budget: int) -> int:
    """The slot trial ``number`` trains in, or SlotTaken (BudgetClaimed past the budget) if it may not train.

    Another trial holds the slot if it has a result there, or runs it and was created earlier: of two
    retries of one slot started at once (two machines re-queued the same failure), the later one yields.
    """
    trials = all_trials(study)
    slots = slot_map(trials)
    me = next(t for t in trials if t.number == number)
    slot = slots[number]
    if slot >= budget:
        raise BudgetClaimed(f"slot {slot} is past the budget of {budget} trials", slot)
    for t in trials:
        if t.number == number or slots[t.number] != slot or DISCARDED in t.user_attrs:
            continue
        if _state(t) in ("COMPLETE", "PRUNED"):
            raise SlotTaken(f"slot {slot} already has a result (Optuna trial {t.number})")
        if _state(t) == "RUNNING" and t.number < me.number:
            raise SlotTaken(f"slot {slot} is already being run by Optuna trial {t.number}")
    return slot


def defer_slot(study: optuna.Study, slot: int) -> None:
    """Queue ``slot`` (a WAITING trial without parameters): drawn, with that slot's seed, when it is popped."""
    import optuna
    from optuna.trial import TrialState

    study.add_trial(optuna.trial.create_trial(state=TrialState.WAITING, system_attrs={DEFERRED_SLOT: slot}))


def waiting_slots(trials: Sequence[FrozenTrial], budget: int) -> list[int]:
    """Slots within the budget that a queued trial (retry or deferred slot) will fill."""
    slots = slot_map(trials)
    return sorted(slots[t.number] for t in trials if _state(t) == "WAITING" and slots[t.number] < budget)


def _retried(trials: Sequence[FrozenTrial]) -> set[int]:
    done: set[int] = set()
    for t in trials:
        done.update(t.system_attrs.get("retry_history", []))
    return done


def _retry(study: optuna.Study, t: FrozenTrial) -> None:
    storage = storage_of(study)
    storage.get_heartbeat_stale_trial_callback()(study, copy.deepcopy(storage.get_trial(trial_id_of(t))))


def recover_dead_trials(study: optuna.Study) -> list[int]:
    """Fail RUNNING trials whose process on this host is gone (``kill -9``) and queue their retry."""
    from optuna.trial import TrialState

    storage = storage_of(study)
    requeued: list[int] = []
    for t in all_trials(study):
        worker = t.user_attrs.get("worker") or {}
        if not (t.state == TrialState.RUNNING and worker.get("host") == HOST and worker.get("pid") != os.getpid()
                and not pid_alive(int(worker.get("pid", -1)))):
            continue
        try:  # atomic: of several workers noticing the same dead trial, one changes its state
            changed = storage.set_trial_state_values(trial_id_of(t), state=TrialState.FAIL)
        except Exception:  # another worker failed it first (UpdateFinishedTrialError, busy database)
            changed = False
        if changed:
            logger.warning("trial %s was left running by a dead process (pid %s): queued to run again",
                           t.user_attrs.get("sweep_number", t.number), worker.get("pid"))
            _retry(study, t)
            requeued.append(t.number)
    return requeued


def requeue_failed(study: optuna.Study, budget: int, *, retry_errors: bool = True) -> list[int]:
    """Queue a retry of every slot within the budget whose attempts all failed (same parameters).

    Interrupted (Ctrl-C) and crashed trials are always retried; trials that raised only when
    ``retry_errors`` (``--no-retry-failed`` makes them count against the budget instead). Returns the slots.
    """
    trials = all_trials(study)
    slots = slot_map(trials)
    retried = _retried([t for t in trials if DISCARDED not in t.user_attrs])  # a dropped retry handled nothing
    by_slot: dict[int, list[FrozenTrial]] = {}
    for t in trials:
        if DISCARDED not in t.user_attrs and slots[t.number] < budget:
            by_slot.setdefault(slots[t.number], []).append(t)
    requeued = []
    for slot, attempts in sorted(by_slot.items()):
        if any(_state(t) != "FAIL" for t in attempts):
            continue  # has a result, runs, or is queued already
        last = max(attempts, key=lambda t: t.number)
        if last.number in retried or (last.user_attrs.get("error") and not retry_errors):
            continue
        _retry(study, last)
        requeued.append(slot)
    if requeued:
        logger.info("retrying %d failed or interrupted trial(s): %s", len(requeued), requeued)
    return requeued


def failure_streak(trials: Sequence[FrozenTrial], since: datetime | None = None) -> int:
    """Trials that raised in a row, up to the latest finished one (finished after ``since``)."""
    done = [t for t in trials if t.datetime_complete is not None and DISCARDED not in t.user_attrs
            and (since is None or t.datetime_complete >= since) and _state(t) in ("COMPLETE", "PRUNED", "FAIL")]
    streak = 0
    for t in sorted(done, key=lambda x: x.datetime_complete):
        if _state(t) != "FAIL":
            streak = 0
        elif t.user_attrs.get("error") and not t.user_attrs.get("interrupted"):
            streak += 1
    return streak
