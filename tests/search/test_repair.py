"""Repair: over-budget proposals shrink, widest first, until they meet the exact budgets."""

from __future__ import annotations

import optuna
import pytest

from autoprune.config import parse_budget
from autoprune.search import create_sampler
from autoprune.search._repair import (
    RepairingSampler,
    exact_costs,
    repair,
    repairing,
)
from autoprune.search._schema import REPAIR_STEPS
from autoprune.spaces import SearchSpace


@pytest.fixture(scope="module")
def space() -> SearchSpace:
    return SearchSpace(
        model="resnet20",
        num_classes=10,
        in_channels=1,
        input_shape=(1, 28, 28),
        width_ratios=(0.25, 0.5, 1.0),
        depth=True,
        resolution_scales=(0.5, 1.0),
        weight_bits=(8, 32),
        activation_bits=(32,),
        channel_multiple=8,
    )


def _widest(space: SearchSpace) -> dict:
    return {d.name: max(d.choices) for d in space.decisions}


def test_a_fitting_proposal_and_a_latency_budget_leave_it_alone(space: SearchSpace) -> None:
    smallest = {d.name: min(d.choices) for d in space.decisions}
    assert repair(space, smallest, [parse_budget("20mflops")]) == (smallest, 0)
    widest = _widest(space)
    assert repair(space, widest, [parse_budget("0.01ms")]) == (widest, 0)  # not exact: no repair


@pytest.mark.parametrize("spec", ["20mflops", "5mflops", "100kparams", "200kb"])
def test_repaired_proposal_fits_and_only_shrinks(space: SearchSpace, spec: str) -> None:
    budget = parse_budget(spec)
    widest = _widest(space)
    assert budget.violation(exact_costs(space.candidate(widest))[budget.metric]) > 0
    fitted, steps = repair(space, widest, [budget])
    assert steps > 0
    assert budget.violation(exact_costs(space.candidate(fitted))[budget.metric]) <= 0
    assert all(fitted[name] <= widest[name] for name in widest)
    assert {n for n in widest if fitted[n] != widest[n]} <= {
        d.name for d in space.decisions if not d.name.startswith(("wbits/", "abits/"))
    }


def test_widths_shrink_before_resolution_and_depth(space: SearchSpace) -> None:
    fitted, _ = repair(space, _widest(space), [parse_budget("20mflops")])
    assert fitted["resolution"] == 1.0 and all(
        fitted[d.name] == max(d.choices) for d in space.decisions if d.name.startswith("depth/")
    ), "a mild budget is met by widths alone"
    fitted, _ = repair(space, _widest(space), [parse_budget("0.5mflops")])
    widths = [d for d in space.decisions if d.name.startswith("width/")]
    assert all(fitted[d.name] == min(d.choices) for d in widths)
    assert fitted["resolution"] == 0.5


def test_a_floor_over_budget_comes_back_unchanged(space: SearchSpace) -> None:
    widest = _widest(space)
    assert repair(space, widest, [parse_budget("1kparams")]) == (widest, 0)


@pytest.mark.parametrize("controller", ["nsga2", "tpe", "random"])
def test_sampler_repair_makes_the_trained_candidate_the_trials_params(
    space: SearchSpace, controller: str
) -> None:
    budget = parse_budget("5mflops")
    sampler = repairing(create_sampler(controller, seed=0, population_size=4), space, [budget])
    assert isinstance(sampler, RepairingSampler)
    study = optuna.create_study(directions=["minimize"], sampler=sampler)
    widest = _widest(space)
    study.enqueue_trial(widest)  # fixed params: Optuna's, never repaired by the sampler
    seen_steps = []

    def objective(trial: optuna.Trial) -> float:
        params = {d.name: trial.suggest_categorical(d.name, d.choices) for d in space.decisions}
        seen_steps.append(trial.user_attrs.get(REPAIR_STEPS.key))  # visible in the objective
        return float(exact_costs(space.candidate(params))["macs"])

    study.optimize(objective, n_trials=8)
    base, *proposed = study.trials
    assert base.params == widest and REPAIR_STEPS.key not in base.user_attrs
    assert seen_steps[0] is None and seen_steps[1:] == [
        t.user_attrs[REPAIR_STEPS.key] for t in proposed
    ]
    assert all(t.values[0] <= budget.limit for t in proposed), "every proposal fits as recorded"
    assert any(t.user_attrs[REPAIR_STEPS.key] > 0 for t in proposed), "some needed shrinking"


def test_rl_and_runs_without_an_exact_budget_are_not_wrapped(space: SearchSpace) -> None:
    rl = create_sampler("rl", seed=0, population_size=4)
    assert repairing(rl, space, [parse_budget("10mflops")]) is rl  # repaired in the objective
    nsga2 = create_sampler("nsga2", seed=0, population_size=4)
    assert repairing(nsga2, space, [parse_budget("1ms")]) is nsga2
