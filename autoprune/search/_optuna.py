"""The one place autoprune reaches past Optuna's public API.

Optuna 5 has no public way to set a study's system attributes, to write a trial's attributes
from inside a sampler (the sampler sees a ``FrozenTrial``), to write a trial's constraints in
Optuna 4's list form (``Trial.set_constraint`` writes only named ones), or to fail a trial that
a killed process left ``RUNNING``. Each of those goes through the study's storage, which is
private (``Study._storage``, ``Study._study_id``, ``FrozenTrial._trial_id``,
``Trial._trial_id``). Every such access is a function here, and
``tests/search/test_optuna_adapter.py`` fails loudly when the pinned Optuna changes one of them.
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

__all__ = [
    "fail_trial",
    "set_study_system_attr",
    "set_trial_system_attr",
    "set_trial_user_attr",
    "storage_of",
    "study_key",
    "study_system_attrs",
]


def storage_of(study: optuna.Study) -> optuna.storages.BaseStorage:
    """The storage object ``study`` reads and writes (shared with Ray's ``OptunaSearch``)."""
    return study._storage


def study_key(study: optuna.Study) -> tuple[int, int]:
    """Identity of a study in this process: its storage object and study id."""
    return id(study._storage), study._study_id


def study_system_attrs(study: optuna.Study) -> dict[str, Any]:
    """The study's system attributes, read from its storage (no cached copy)."""
    return study._storage.get_study_system_attrs(study._study_id)


def set_study_system_attr(study: optuna.Study, key: str, value: Any) -> None:
    """Write one study system attribute (the storage call Optuna's ``copy_study`` makes)."""
    study._storage.set_study_system_attr(study._study_id, key, value)


def set_trial_system_attr(
    study: optuna.Study, trial: FrozenTrial | optuna.Trial, key: str, value: Any
) -> None:
    """Write one system attribute of ``trial``, a running trial of ``study``: the ``FrozenTrial``
    a sampler sees or the ``optuna.Trial`` an objective gets (its cached copy is not updated;
    read the attribute back from the storage)."""
    study._storage.set_trial_system_attr(trial._trial_id, key, value)


def set_trial_user_attr(study: optuna.Study, trial: FrozenTrial, key: str, value: Any) -> None:
    """Write one user attribute of a running ``trial``, in the storage and in ``trial`` itself,
    as ``Trial.set_user_attr`` does, so that the objective of that trial sees it."""
    study._storage.set_trial_user_attr(trial._trial_id, key, value)
    trial.user_attrs[key] = value


def fail_trial(study: optuna.Study, trial: FrozenTrial) -> None:
    """Set a ``RUNNING`` trial (one a killed process left behind) to ``FAIL``."""
    study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
