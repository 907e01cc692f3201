"""Repair: over-budget proposals shrink, widest first, until they meet the exact budgets."""

from __future__ import annotations

import pytest

from autoprune.config import parse_budget
from autoprune.search._repair import exact_costs, repair
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
