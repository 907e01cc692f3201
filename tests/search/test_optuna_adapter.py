"""The private parts of Optuna and Ray that autoprune relies on: each is checked here, so that
a change in the pinned library fails loudly in one place."""

from __future__ import annotations

import optuna
import pytest
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState

from autoprune.search import _optuna

SPACE = {"w": CategoricalDistribution((1, 2))}


@pytest.fixture
def study() -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(storage="sqlite:///:memory:", directions=["maximize"])


def test_study_system_attributes_are_written_and_read_through_the_storage(
    study: optuna.Study,
) -> None:
    assert _optuna.storage_of(study) is study._storage
    _optuna.set_study_system_attr(study, "autoprune.test", {"v": 1})
    assert _optuna.study_system_attrs(study)["autoprune.test"] == {"v": 1}
    copy = optuna.storages.InMemoryStorage()
    optuna.copy_study(  # what Optuna itself reads back: its copy takes them along
        from_study_name=study.study_name, from_storage=_optuna.storage_of(study), to_storage=copy
    )
    copied = optuna.load_study(study_name=study.study_name, storage=copy)
    assert _optuna.study_system_attrs(copied)["autoprune.test"] == {"v": 1}
    assert _optuna.study_key(study) == (id(study._storage), study._study_id)


def test_a_running_trial_gets_attributes_and_fails_through_the_storage(
    study: optuna.Study,
) -> None:
    study.ask(SPACE)
    (frozen,) = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    _optuna.set_trial_user_attr(study, frozen, "repair_steps", 3)
    _optuna.set_trial_system_attr(study, frozen, "autoprune.rl:weights", [0.5])
    assert frozen.user_attrs["repair_steps"] == 3  # the running trial's own view, too
    _optuna.fail_trial(study, frozen)
    (stored,) = study.get_trials()
    assert stored.state == TrialState.FAIL
    assert stored.user_attrs == {"repair_steps": 3}
    assert stored.system_attrs["autoprune.rl:weights"] == [0.5]


def test_ray_optuna_search_keeps_the_attributes_study_search_uses(study: optuna.Study) -> None:
    from ray.tune.search.optuna import OptunaSearch

    searcher = OptunaSearch(
        space=SPACE,
        metric=["v"],
        mode=["max"],
        storage=_optuna.storage_of(study),
        study_name=study.study_name,
    )
    assert isinstance(searcher._ot_study, optuna.Study)
    assert searcher._ot_study.study_name == study.study_name
    assert isinstance(searcher._ot_trials, dict) and not searcher._ot_trials
    assert searcher._space == SPACE
    assert isinstance(searcher._completed_trials, set)


def test_an_objectives_trial_gets_the_constraints_list_through_the_storage(
    study: optuna.Study,
) -> None:
    trial = study.ask(SPACE)  # an optuna.Trial, as an objective gets it
    _optuna.set_trial_system_attr(study, trial, "constraints", [0.5, -1.0])
    assert trial.constraints == {"0": 0.5, "1": -1.0}  # Optuna 5 reads Optuna 4's list
    study.tell(trial, [1.0])
    (stored,) = study.get_trials()
    assert stored.system_attrs["constraints"] == [0.5, -1.0]
    assert stored.constraints == {"0": 0.5, "1": -1.0}
