"""The Optuna internals the sweep relies on
(core/sweep/backends/local/optuna_private.py) exist in the installed Optuna and
mean what we use them for; a release that drops or changes one fails here, naming it.

Oracle: Optuna's public storage API (``get_study_id_from_name``, ``get_trial_id_from_study_id_trial_number``,
``get_all_trials``) on the storage the study was created with.
"""

from __future__ import annotations

import operator

import optuna
import pytest

from core.sweep.backends.local.optuna_private import PRIVATE_ATTRIBUTES, all_trials, storage_of, trial_id_of


@pytest.fixture()
def study():
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(storage=storage, study_name="private")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    return study, storage


def test_every_private_attribute_still_exists(study):
    study, _ = study
    trial = study.get_trials()[0]
    live = study.ask()
    holders = {"optuna.Study": study, "optuna.trial.FrozenTrial": trial, "optuna.Trial": live}
    for holder, attribute in PRIVATE_ATTRIBUTES:
        assert hasattr(holders[holder], attribute), (
            f"optuna {optuna.__version__} has no {holder}.{attribute}: "
            "core/sweep/backends/local/optuna_private.py must change")


def test_the_private_accessors_agree_with_optunas_public_storage_api(study):
    study, storage = study
    assert storage_of(study) is storage, "the storage the study was created with (in memory: not wrapped)"
    study_id = storage.get_study_id_from_name("private")
    for trial in study.get_trials():
        assert trial_id_of(trial) == storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
    assert sorted(map(operator.attrgetter("number"), all_trials(study))) == [0, 1, 2]
    assert [t.params for t in all_trials(study)] == [t.params for t in storage.get_all_trials(study_id)]
