"""Per-slot seeding of Optuna's samplers: trial n draws the same configuration in every process and after a resume.

One seeded sampler per process fails once processes share a study: the same seed draws the same configurations
in each, a time- or host-dependent one differs after a resume. :class:`SlotSeededSampler` gives the method's
sampler the seed ``hash(sweep seed, slot)`` before each trial (the slot, :mod:`.budget`, is fixed when Optuna
creates the trial), so trial n depends only on the seed, n and the history shown. For grid the grid id is the
slot rather than Optuna's trial number (which retries and deferred slots shift), so every point runs once.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from core.sweep.backends.local.budget import HOST, slot_map
from core.sweep.backends.local.optuna_private import all_trials, storage_of, trial_id_of
from core.sweep.backends.local.space import grid_search_space, make_sampler
from core.sweep.definition import SweepConfig

if TYPE_CHECKING:
    import optuna
    from optuna.distributions import BaseDistribution
    from optuna.trial import FrozenTrial, TrialState

try:
    from optuna.samplers import BaseSampler
except ImportError:  # pragma: no cover - optuna is a dependency; keeps this module importable for docs
    BaseSampler = object  # type: ignore[misc,assignment]

__all__ = ["SlotSeededSampler", "slot_seed"]


def slot_seed(seed: int, slot: int) -> int:
    """The sampler seed of ``slot`` in a sweep seeded ``seed`` (any ints; a 32-bit seed out)."""
    digest = hashlib.sha256(f"inat-cnn sweep {int(seed)} slot {int(slot)}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


class SlotSeededSampler(BaseSampler):
    """The sweep method's Optuna sampler, seeded per trial by the trial's slot."""

    def __init__(self, cfg: SweepConfig, seed: int) -> None:
        self._cfg, self._seed = cfg, int(seed)
        self._grid = make_sampler(cfg, seed=seed) if cfg.method == "grid" else None
        space = grid_search_space(cfg) if self._grid is not None else {}
        self._grid_space = {k: list(v) for k, v in sorted(space.items())}  # as GridSampler records it
        self._grid_size = math.prod(len(v) for v in space.values()) if space else 0
        self._inner: dict[int, optuna.samplers.BaseSampler] = {}  # trial id -> the sampler seeded for it

    def _for(self, trial: FrozenTrial) -> optuna.samplers.BaseSampler:
        if self._grid is not None:
            return self._grid
        inner = self._inner.get(trial_id_of(trial))
        if inner is None:  # a trial this process did not start (never happens in a sweep worker)
            inner = self._inner[trial_id_of(trial)] = make_sampler(self._cfg, seed=self._seed)
        return inner

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        storage = storage_of(study)  # as GridSampler does: a Hyperband bracket study filters its trials
        # The first code Optuna runs for a trial this process just created or popped: its owner is recorded
        # here, not later in the objective, so a kill -9 leaves as small a window as possible for a RUNNING
        # trial that no process on this host owns (recover_dead_trials retries owned ones at once; an
        # ownerless one waits for the heartbeat's grace period).
        storage.set_trial_user_attr(trial_id_of(trial), "worker", {"host": HOST, "pid": os.getpid()})
        slot = slot_map(all_trials(study))[trial.number]
        if self._grid is not None:
            if "grid_id" not in trial.system_attrs and "fixed_params" not in trial.system_attrs:
                # a slot past the grid never trains (the budget is at most the grid): any valid id will do
                storage.set_trial_system_attr(trial_id_of(trial), "search_space", self._grid_space)
                storage.set_trial_system_attr(trial_id_of(trial), "grid_id", slot % self._grid_size)
            return
        self._inner = {trial_id_of(trial): make_sampler(self._cfg, seed=slot_seed(self._seed, slot))}
        self._inner[trial_id_of(trial)].before_trial(study, trial)

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self._for(trial).infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return self._for(trial).sample_relative(study, trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self._for(trial).sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        if self._grid is None:  # GridSampler's after_trial only stops study.optimize, which runs one trial
            self._for(trial).after_trial(study, trial, state, values)
