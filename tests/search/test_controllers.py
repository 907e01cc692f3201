"""Every registered controller: same storage, resume, budgets as constraints, a rough history."""

from __future__ import annotations

import math
import pickle
import warnings
from pathlib import Path

import cloudpickle
import optuna
import pytest

from autoprune.errors import UnknownNameError
from autoprune.search import create_sampler, describe_controller, list_controllers
from autoprune.search._objective import set_constraints
from autoprune.search._rundir import RunDir

CHOICES = (0.25, 0.5, 0.75, 1.0)
DECISIONS = ("stage1", "stage2", "stage3", "resolution")


def _objective(trial: optuna.Trial) -> tuple[float, float, float]:
    """A small compression-like problem: accuracy grows with width, costs with its square.

    Every seventh trial fails, is pruned, or returns NaN, in turn; one budget holds when the
    mean width is at most 0.7.
    """
    widths = [trial.suggest_categorical(name, CHOICES) for name in DECISIONS]
    mean = sum(widths) / len(widths)
    set_constraints(trial, {"macs<=0.7": mean - 0.7})  # as autoprune's objective does
    kind = trial.number % 7
    if kind == 3:
        raise RuntimeError("TVM build failed")
    if kind == 5:
        raise optuna.TrialPruned()
    if kind == 6:
        return math.nan, math.nan, math.nan
    cost = sum(w * w for w in widths)
    return 1 - 0.5 * (1 - mean) ** 2, cost, 0.5 * cost + widths[-1]


def _study(storage: optuna.storages.BaseStorage, name: str) -> optuna.Study:
    return optuna.create_study(
        study_name="controllers",
        storage=storage,
        sampler=create_sampler(name, seed=0, population_size=4),
        directions=["maximize", "minimize", "minimize"],
        load_if_exists=True,
    )


@pytest.mark.parametrize("name", list_controllers())
def test_controller_resumes_from_storage_and_survives_a_rough_history(
    name: str, tmp_path: Path
) -> None:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    path = str(tmp_path / "journal.log")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # experimental samplers and independent sampling
        storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(path))
        _study(storage, name).optimize(_objective, n_trials=14, catch=(RuntimeError,))
        # A new process: a new storage handle and a new sampler read the same history.
        storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(path))
        resumed = _study(storage, name)
        resumed.optimize(_objective, n_trials=7, catch=(RuntimeError,))

    trials = resumed.get_trials(deepcopy=False)
    assert len(trials) == 21
    states = {t.state for t in trials}
    assert {
        optuna.trial.TrialState.COMPLETE,
        optuna.trial.TrialState.FAIL,
        optuna.trial.TrialState.PRUNED,
    } <= states
    for trial in trials:
        assert set(trial.params) == set(DECISIONS)
        assert all(value in CHOICES for value in trial.params.values())
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    for trial in complete:  # one budget, as Optuna 4's list: what Optuna 5 reads as "0"
        mean = sum(trial.params[name] for name in DECISIONS) / len(DECISIONS)
        assert trial.system_attrs["constraints"] == [pytest.approx(mean - 0.7)]
        assert trial.constraints == {"0": pytest.approx(mean - 0.7)}
        assert not any(key.startswith("constraints:") for key in trial.system_attrs)
    assert all(math.isfinite(v) for t in complete for v in t.values)


def test_unknown_controller_lists_the_known_ones() -> None:
    with pytest.raises(UnknownNameError, match="nsga2"):
        create_sampler("bayes", seed=0, population_size=4)
    assert all(describe_controller(name) for name in list_controllers())


def _by_params(trial: optuna.Trial) -> tuple[float, float, float]:
    """:func:`_objective` without its failures: values from the parameters alone."""
    widths = [trial.suggest_categorical(name, CHOICES) for name in DECISIONS]
    mean = sum(widths) / len(widths)
    set_constraints(trial, {"macs<=0.7": mean - 0.7})
    cost = sum(w * w for w in widths)
    return 1 - 0.5 * (1 - mean) ** 2, cost, 0.5 * cost + widths[-1]


@pytest.mark.parametrize("name", list_controllers())
def test_a_resumed_run_proposes_what_the_uninterrupted_run_proposes(
    name: str, tmp_path: Path
) -> None:
    """A seeded sampler's random stream starts over in a new process, and a killed trial comes
    back as an enqueued re-run (which NSGA-II gives no generation of its own): the proposals
    must not change."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)

    def study_at(path: Path) -> optuna.Study:  # a new process: a new storage and sampler
        backend = optuna.storages.journal.JournalFileBackend(str(path))
        return _study(optuna.storages.JournalStorage(backend), name)

    def finished(study: optuna.Study) -> list[dict]:
        return [t.params for t in study.get_trials(deepcopy=False) if t.values is not None]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # experimental samplers and independent sampling
        uninterrupted = study_at(tmp_path / "one.log")
        uninterrupted.optimize(_by_params, n_trials=12)
        resumed = study_at(tmp_path / "resumed.log")
        resumed.optimize(_by_params, n_trials=5)
        killed = resumed.ask()  # proposed, then the process dies mid-trial
        for decision in DECISIONS:
            killed.suggest_categorical(decision, CHOICES)
        resumed = study_at(tmp_path / "resumed.log")
        assert RunDir.requeue_interrupted(resumed) == 1
        resumed.optimize(_by_params, n_trials=4)
        resumed = study_at(tmp_path / "resumed.log")
        resumed.optimize(_by_params, n_trials=12 - len(finished(resumed)))
    assert finished(resumed) == finished(uninterrupted)
    assert len({tuple(sorted(p.items())) for p in finished(uninterrupted)}) > 3  # it explores


@pytest.mark.parametrize("name", list_controllers())
def test_a_sampler_survives_pickling_as_ray_tune_pickles_its_searcher(name: str) -> None:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    proposals = []
    for sampler in (
        create_sampler(name, seed=0, population_size=4),
        pickle.loads(cloudpickle.dumps(create_sampler(name, seed=0, population_size=4))),
    ):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # experimental samplers
            study = optuna.create_study(sampler=sampler, directions=["maximize"] + ["minimize"] * 2)
            study.optimize(_by_params, n_trials=6)
        proposals.append([t.params for t in study.trials])
    assert proposals[0] == proposals[1]
