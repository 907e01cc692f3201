"""Repair: an over-budget proposal is shrunk until it fits, before anything is trained.

Budgets on exact costs (``macs``, ``params``, ``size_bytes``) are known from the architecture
alone, so a controller need not spend a trial to learn that a proposal breaks one. As AMC
(He et al. 2018) clips each action so that the pruned model meets its FLOPs target, a proposal
over such a budget is shrunk step by step, each step the smallest change that lowers the cost:

1. the width decision whose kept fraction (chosen channels / the decision's largest choice) is
   the largest drops to its next smaller choice (ties: the earlier decision), until every width
   is at its smallest;
2. then the input resolution, one choice at a time;
3. then depth: the stage with the most kept blocks loses one.

Bit-widths are left alone (they change size, never MACs). The proposal as sampled stays the
trial's parameters (the controller learns what its proposals lead to); the repaired candidate is
what gets trained, and the trial records how many steps it took. Latency and energy budgets are
not repaired: they stay constraints, since their figures may be measured.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from autoprune.config import Budget
from autoprune.spaces import Candidate, SearchSpace, build_model, count_costs

__all__ = ["EXACT_METRICS", "exact_costs", "repair"]

#: Budget metrics that the architecture alone determines.
EXACT_METRICS = ("macs", "params", "size_bytes")


def exact_costs(candidate: Candidate) -> dict[str, int]:
    """MACs, parameters and size (bytes, at the candidate's bit-widths), counted on the meta
    device (shapes only: milliseconds)."""
    costs = count_costs(build_model(candidate, device="meta"), candidate.input_shape)
    return {"macs": costs.macs, "params": costs.params, "size_bytes": costs.size_bytes}


def _fits(candidate: Candidate, budgets: Sequence[Budget]) -> bool:
    costs = exact_costs(candidate)
    return all(b.violation(float(costs[b.metric])) <= 0 for b in budgets)


def _next_step(space: SearchSpace, params: Mapping[str, Any]) -> dict[str, Any] | None:
    """``params`` with the one decision that the order in the module docstring shrinks next;
    ``None`` when nothing can shrink further."""
    decisions = {d.name: d.choices for d in space.decisions}

    def smaller(name: str) -> Any:
        choices = sorted(decisions[name])
        return choices[choices.index(params[name]) - 1]

    def can_shrink(name: str) -> bool:
        return name in decisions and params[name] != min(decisions[name])

    widths = [n for n in decisions if n.startswith("width/") and can_shrink(n)]
    if widths:
        name = max(widths, key=lambda n: (params[n] / max(decisions[n]), -widths.index(n)))
        return {**params, name: smaller(name)}
    if can_shrink("resolution"):
        return {**params, "resolution": smaller("resolution")}
    depths = [n for n in decisions if n.startswith("depth/") and can_shrink(n)]
    if depths:
        name = max(depths, key=lambda n: (params[n], -depths.index(n)))
        return {**params, name: smaller(name)}
    return None


def repair(
    space: SearchSpace, params: Mapping[str, Any], budgets: Sequence[Budget]
) -> tuple[dict[str, Any], int]:
    """Shrink ``params`` until the candidate meets every exact budget.

    Returns:
        ``(params, steps)``: the parameters to train and how many one-choice steps were taken
        (0: the proposal already fit, or no budget is exact). When even the smallest shrink
        cannot fit (the space's floor is over budget), the proposal comes back unchanged with
        ``steps == 0`` and stays infeasible.

    Example:
        >>> from autoprune.config import parse_budget
        >>> space = SearchSpace(model="resnet20", num_classes=10, in_channels=1,
        ...                     input_shape=(1, 28, 28), width_ratios=(0.5, 1.0), depth=False,
        ...                     resolution_scales=(1.0,), weight_bits=(32,),
        ...                     activation_bits=(32,), channel_multiple=8)
        >>> widest = {d.name: max(d.choices) for d in space.decisions}
        >>> fitted, steps = repair(space, widest, [parse_budget("20mflops")])
        >>> steps > 0, exact_costs(space.candidate(fitted))["macs"] <= 20e6
        (True, True)
    """
    exact = [b for b in budgets if b.metric in EXACT_METRICS]
    current = dict(params)
    if not exact or _fits(space.candidate(current), exact):
        return current, 0
    steps = 0
    while (shrunk := _next_step(space, current)) is not None:
        current, steps = shrunk, steps + 1
        if _fits(space.candidate(current), exact):
            return current, steps
    return dict(params), 0
