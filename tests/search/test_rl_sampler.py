"""The ``rl`` controller on synthetic problems with known optima: real Optuna, no mocks."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
from optuna.study import StudyDirection

from autoprune.search import PolicyGradientSampler, create_sampler, list_controllers, mnas_reward
from autoprune.search._optuna import study_system_attrs
from autoprune.search._rewards import _FeasibleHistory, tchebycheff_reward
from autoprune.search._rl import RL_STATE_KEY, RL_WEIGHTS_KEY

DIRECTIONS = ["maximize", "minimize", "minimize"]  # autoprune's (accuracy, latency, energy)
N_DECISIONS, N_CHOICES = 8, 4
TARGET = (3, 1, 0, 2, 3, 0, 1, 2)
SEEDS = range(6)


@pytest.fixture(autouse=True)
def _quiet() -> Iterator[None]:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


def decisions(trial: optuna.Trial, n: int = N_DECISIONS) -> list[int]:
    return [trial.suggest_categorical(f"d{i}", list(range(N_CHOICES))) for i in range(n)]


def run(
    sampler: optuna.samplers.BaseSampler,
    objective: Callable[[optuna.Trial], Any],
    n_trials: int,
    directions: list[str],
    n_jobs: int = 1,
    **kwargs: Any,
) -> optuna.Study:
    study = optuna.create_study(directions=directions, sampler=sampler, **kwargs)
    study.optimize(objective, n_trials=n_trials, n_jobs=n_jobs)
    return study


def feasible(trial: optuna.trial.FrozenTrial) -> bool:
    return all(v <= 0 for v in trial.constraints.values())


# ---- the reward --------------------------------------------------------------------------------


def test_reward_is_mnasnet_in_log_form_for_any_directions() -> None:
    up, down = StudyDirection.MAXIMIZE, StudyDirection.MINIMIZE
    # MnasNet: ACC * (LAT / T) ** w
    assert mnas_reward([0.75, 80.0], [up, down], [-0.07], [100.0]) == pytest.approx(
        math.log(0.75 * 0.8**-0.07)
    )
    # Three objectives, two minimised, each against its own reference.
    got = mnas_reward([0.5, 2.0, 9.0], [up, down, down], [-1.0, -0.5], [1.0, 3.0])
    assert got == pytest.approx(math.log(0.5) - math.log(2.0) - 0.5 * math.log(3.0))
    # A minimised objective first, and an untrained candidate's 0.0 accuracy stays finite.
    assert math.isfinite(mnas_reward([4.0, 0.0], [down, up], [-1.0], [4.0]))
    # A cost at zero earns what a cost ten times below its reference earns, no more.
    assert mnas_reward([0.0], [down], [-1.0], [1.0]) == pytest.approx(math.log(10))
    assert mnas_reward([1e-9], [down], [-0.5], [1.0]) == mnas_reward([0.1], [down], [-0.5], [1.0])
    with pytest.raises(ValueError, match="one weight and one reference"):
        mnas_reward([0.5, 2.0], [up, down], [], [])


def test_tchebycheff_reward_charges_the_worst_weighted_cost() -> None:
    up, down = StudyDirection.MAXIMIZE, StudyDirection.MINIMIZE
    ranges = [(1.0, 3.0), (10.0, 20.0)]  # best and worst seen: latency, energy
    # Latency at its worst, energy at its best: latency's share of its range counts.
    got = tchebycheff_reward([0.5, 3.0, 10.0], [up, down, down], [-0.5, -1.0], ranges)
    assert got == pytest.approx(math.log(0.5) - 0.5)
    # Both half way: the larger weight counts, not the sum (a weighted sum would charge 0.75).
    got = tchebycheff_reward([0.5, 2.0, 15.0], [up, down, down], [-0.5, -1.0], ranges)
    assert got == pytest.approx(math.log(0.5) - 0.5)
    # A weight of 0 lets its cost go; a zero span counts as 1.
    assert tchebycheff_reward([0.5, 3.0], [up, down], [0.0], [(1.0, 3.0)]) == math.log(0.5)
    assert tchebycheff_reward([4.0], [down], [-1.0], [(2.0, 2.0)]) == pytest.approx(-2.0)
    with pytest.raises(ValueError, match="one weight and one range"):
        tchebycheff_reward([0.5, 2.0], [up, down], [], [])


def test_costs_enter_the_reward_as_their_rank_among_the_feasible_ones_seen() -> None:
    up, down = StudyDirection.MAXIMIZE, StudyDirection.MINIMIZE
    finished = [
        optuna.trial.create_trial(values=[0.5, latency, 1.0], distributions={}, params={})
        for latency in (1.0, 2.0, 2.0, 100.0)
    ]
    for number, trial in enumerate(finished):
        trial.number = number
    history = _FeasibleHistory(finished, [up, down, down])
    # Below none: 0; a tie counts half; above the three cheaper ones, whatever the tail's size.
    assert history.ranks(3, [0.5, 1.0, 1.0])[0] == pytest.approx(0.5 / 4)
    assert history.ranks(3, [0.5, 2.0, 1.0])[0] == pytest.approx((1 + 0.5 * 2) / 4)
    assert history.ranks(3, [0.5, 100.0, 1.0]) == pytest.approx([3.5 / 4, 0.5])
    # Only the trials numbered up to the one rewarded count.
    assert history.ranks(1, [0.5, 2.0, 1.0])[0] == pytest.approx(0.75)


def test_registered_as_rl_and_validates_its_options() -> None:
    assert "rl" in list_controllers()
    assert isinstance(create_sampler("rl", seed=0, population_size=8), PolicyGradientSampler)
    with pytest.raises(ValueError, match=r"weight_range=\(0.0, 1.0\)"):
        PolicyGradientSampler(weight_range=(0.0, 1.0))
    with pytest.raises(ValueError, match="scalarisation must be one of"):
        PolicyGradientSampler(scalarisation="sum")


# ---- it learns ---------------------------------------------------------------------------------


def peaked(trial: optuna.Trial) -> float:
    """Accuracy-like objective, 1.0 only at TARGET, e^-0.3 lower per wrong decision."""
    misses = sum(a != t for a, t in zip(decisions(trial), TARGET, strict=True))
    return math.exp(-0.3 * misses)


def test_reaches_the_known_optimum_far_more_often_than_random() -> None:
    budget = 120  # of 4**8 = 65536 candidates: random finds TARGET with probability 0.2 %

    def successes(make: Callable[[int], optuna.samplers.BaseSampler]) -> int:
        studies = [run(make(seed), peaked, budget, ["maximize"]) for seed in SEEDS]
        return sum(any(t.values[0] == 1.0 for t in study.trials) for study in studies)

    rl = successes(lambda seed: PolicyGradientSampler(seed=seed))
    random = successes(lambda seed: optuna.samplers.RandomSampler(seed=seed))
    assert (rl, random) == (6, 0)


# ---- budgets -----------------------------------------------------------------------------------

LIMIT = 10  # sum of the choice indices; 32 % of the space is within it


def over_budget_is_more_accurate(trial: optuna.Trial) -> float:
    """Accuracy grows with every choice index, so the unconstrained optimum is over budget.

    Over budget, the accuracy is returned all the same (not the 0.0 of ``CandidateObjective``):
    only the constraint can steer the policy.
    """
    choice = decisions(trial)
    trial.set_constraint("size", sum(choice) - LIMIT)
    return math.exp(0.1 * (sum(choice) - 24))


def test_the_budget_penalty_steers_proposals_into_the_feasible_region() -> None:
    budget = 120
    for seed in range(3):
        rl = run(
            PolicyGradientSampler(seed=seed), over_budget_is_more_accurate, budget, ["maximize"]
        )
        random = run(
            optuna.samplers.RandomSampler(seed=seed),
            over_budget_is_more_accurate,
            budget,
            ["maximize"],
        )
        first = np.mean([feasible(t) for t in rl.trials[:20]])
        late = np.mean([feasible(t) for t in rl.trials[budget // 2 :]])
        late_random = np.mean([feasible(t) for t in random.trials[budget // 2 :]])
        assert late >= 0.75 and late >= first + 0.2 and late >= late_random + 0.3, (
            seed,
            first,
            late,
            late_random,
        )
        best = max(t.values[0] for t in rl.trials if feasible(t))
        assert best == pytest.approx(math.exp(-1.4))  # sum == LIMIT: the constrained optimum


# ---- a messy history ---------------------------------------------------------------------------


def test_survives_failed_pruned_nan_running_and_foreign_trials() -> None:
    sampler = PolicyGradientSampler(seed=0)
    study = optuna.create_study(directions=DIRECTIONS, sampler=sampler)
    study.add_trial(  # proposed by no policy: skipped
        optuna.trial.create_trial(
            params={"d0": 1},
            distributions={"d0": optuna.distributions.CategoricalDistribution([0, 1, 2, 3])},
            values=[0.5, 1.0, 1.0],
        )
    )
    running = study.ask()  # left running: neither learned nor skipped
    running.suggest_categorical("d0", [0, 1, 2, 3])

    def messy(trial: optuna.Trial) -> tuple[float, float, float]:
        choice = decisions(trial, 4)
        trial.suggest_float("lr", 1e-3, 1.0, log=True)  # not categorical: random fallback
        trial.set_constraint("latency", sum(choice) - 8)
        if trial.number % 5 == 1:
            raise RuntimeError("candidate does not build")
        if trial.number % 5 == 2:
            raise optuna.TrialPruned()
        if trial.number % 5 == 3:
            return math.nan, 1.0, 1.0
        return 0.5 + 0.1 * choice[0], 1.0 + sum(choice), 2.0 + sum(choice)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna warns about the NaN trials
        study.optimize(messy, n_trials=25, catch=(RuntimeError,))

    states = [t.state for t in study.trials]
    assert states.count(optuna.trial.TrialState.FAIL) == 10  # 5 exceptions, 5 NaN
    assert states.count(optuna.trial.TrialState.PRUNED) == 5
    state = sampler.load_state(study)
    pruned = {t.number for t in study.trials if t.state == optuna.trial.TrialState.PRUNED}
    failed = {t.number for t in study.trials if t.state == optuna.trial.TrialState.FAIL}
    last = study.trials[-1].number
    assert failed - {last} <= state.learned  # failures are learned from, as penalties
    assert {0} | pruned - {last} <= state.skipped
    assert running.number not in state.learned | state.skipped
    assert len(state.learned) + len(state.skipped) == len(study.trials) - 2  # running, last
    assert all(np.isfinite(b).all() for b in state.bias.values())
    assert sorted(state.bias) == ["d0", "d1", "d2", "d3"]  # "lr" is not learned


# ---- resume ------------------------------------------------------------------------------------


def journal(path: Path) -> optuna.storages.JournalStorage:
    return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))


def costly(trial: optuna.Trial) -> tuple[float, float, float]:
    choice = decisions(trial)
    trial.set_constraint("latency", sum(choice) - 14)
    return math.exp(0.05 * sum(choice) - 1.2), 1.0 + sum(choice), 1.0 + sum(c * c for c in choice)


def test_a_resumed_run_loads_the_saved_policy_and_ends_like_an_uninterrupted_one(
    tmp_path: Path,
) -> None:
    first, more = 15, 15
    storage = journal(tmp_path / "resumed.log")
    study = run(
        PolicyGradientSampler(seed=3), costly, first, DIRECTIONS, storage=storage, study_name="s"
    )
    saved = study_system_attrs(study)[RL_STATE_KEY]
    assert saved["learned"] == list(range(first - 1))

    resumed_sampler = PolicyGradientSampler(seed=3)
    resumed = optuna.load_study(
        study_name="s", storage=journal(tmp_path / "resumed.log"), sampler=resumed_sampler
    )
    assert resumed_sampler.load_state(resumed).to_json() == saved
    resumed.optimize(costly, n_trials=more)
    state = resumed_sampler.load_state(resumed)
    assert state.learned == set(range(first + more - 1))  # learning went on from trial 14
    assert state.to_json()["decisions"] != saved["decisions"]

    uninterrupted = run(
        PolicyGradientSampler(seed=3),
        costly,
        first + more,
        DIRECTIONS,
        storage=journal(tmp_path / "whole.log"),
    )
    assert [t.params for t in uninterrupted.trials] == [t.params for t in resumed.trials]
    assert PolicyGradientSampler(seed=3).load_state(uninterrupted).to_json() == state.to_json()


def test_workers_sharing_a_study_each_learn_from_all_finished_trials(tmp_path: Path) -> None:
    storage = journal(tmp_path / "shared.log")
    optuna.create_study(directions=DIRECTIONS, storage=storage, study_name="s")
    workers = [
        optuna.load_study(study_name="s", storage=storage, sampler=PolicyGradientSampler(seed=s))
        for s in (0, 1)
    ]
    for _ in range(6):
        for worker in workers:  # interleaved, as two processes would
            worker.optimize(costly, n_trials=1)
    state = PolicyGradientSampler(seed=0).load_state(workers[0])
    assert state.learned == set(range(11))

    threaded = PolicyGradientSampler(seed=0)  # threads of one process share the sampler
    study = run(threaded, costly, 12, DIRECTIONS, storage=storage, study_name="t", n_jobs=2)
    learned = threaded.load_state(study).learned
    assert len(learned) >= 10 and learned <= set(range(12))


# ---- the front ---------------------------------------------------------------------------------

GAIN = np.array([0.0, 0.15, 0.2, 0.23])  # log-accuracy per choice, concave: each step gains less


def front_problem(trial: optuna.Trial) -> tuple[float, float]:
    """Separable 2-objective front: log(accuracy) = sum GAIN[c], latency = 1 + sum c.

    Accuracy spans 25 % to 100 % and latency 1 to 19 ms, as a compression front might. An
    assignment is Pareto-optimal iff its choices differ by at most one (the concave gain
    favours spreading a latency budget evenly); the front has one point per sum, 0 to 18; a
    weight near 0 picks choice 3 everywhere, a weight of -1 a smaller one.
    """
    choice = np.asarray(decisions(trial, 6))
    return float(np.exp(GAIN[choice].sum() - 1.38)), float(1 + choice.sum())


def front_points(study: optuna.Study) -> tuple[int, set[int]]:
    """Pareto-optimal proposals in the second half, and the distinct front points among them."""
    late = [[t.params[f"d{i}"] for i in range(6)] for t in study.trials[len(study.trials) // 2 :]]
    optimal = [c for c in late if max(c) - min(c) <= 1]
    return len(optimal), {sum(c) for c in optimal}


def test_varied_weights_spread_the_proposals_over_the_front() -> None:
    budget, hits, hits_random = 160, 0, 0
    for seed in range(3):
        sampler = PolicyGradientSampler(seed=seed)
        study = run(sampler, front_problem, budget, ["maximize", "minimize"])
        weights = [t.system_attrs[RL_WEIGHTS_KEY][0] for t in study.trials]
        assert min(weights) < -0.9 and max(weights) > -0.1  # drawn anew per trial, in [-1, 0]

        n_optimal, points = front_points(study)
        assert len(points) >= 3, (seed, points)  # several front points, not one
        hits += n_optimal
        hits_random += front_points(
            run(
                optuna.samplers.RandomSampler(seed=seed),
                front_problem,
                budget,
                ["maximize", "minimize"],
            )
        )[0]

        # The policy conditions on the weight: latency-averse weights pick smaller choices.
        def mode_sum(omega: float) -> int:
            probs = sampler.probabilities(study, [omega])  # noqa: B023
            return sum(int(np.argmax(p)) for p in probs.values())

        assert mode_sum(-1.0) + 3 <= mode_sum(0.0), (seed, mode_sum(-1.0), mode_sum(0.0))
    assert hits >= 2 * hits_random, (hits, hits_random)
