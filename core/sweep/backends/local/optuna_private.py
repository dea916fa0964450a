"""The three Optuna internals the local backend relies on, and nothing else of Optuna's private API.

The sweep must read and write trials through the storage object Optuna wrapped the study in (``_CachedStorage``),
as Optuna's samplers do, or a worker's cached view goes stale; Optuna has no public accessor for it or for the
ids it is keyed by. ``tests/test_optuna_private.py`` names the attribute a release removed, and ``setup.cfg``
caps Optuna below the next untested major version.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna
    from optuna.storages import BaseStorage
    from optuna.trial import FrozenTrial

__all__ = ["PRIVATE_ATTRIBUTES", "all_trials", "storage_of", "trial_id_of"]

# (what holds it, attribute): checked by tests/test_optuna_private.py on the installed Optuna
PRIVATE_ATTRIBUTES = (("optuna.Study", "_storage"), ("optuna.Study", "_study_id"),
                      ("optuna.trial.FrozenTrial", "_trial_id"), ("optuna.Trial", "_trial_id"))


def storage_of(study: optuna.Study) -> BaseStorage:
    """The storage object Optuna itself reads and writes this study through."""
    return study._storage


def trial_id_of(trial: FrozenTrial | optuna.Trial | Any) -> int:
    """The storage's id of ``trial`` (what every storage call takes; ``trial.number`` is per study)."""
    return trial._trial_id


def all_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Every trial of the study from its storage, unfiltered and not copied (read only)."""
    return list(study._storage.get_all_trials(study._study_id, deepcopy=False))
