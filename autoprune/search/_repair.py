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

Bit-widths are left alone (they change size, never MACs). Latency and energy budgets are not
repaired: they stay constraints, since their figures may be measured.

Where the repair happens depends on the controller (:func:`repairing`):

- **In the sampler** (Lamarckian, the default): :class:`RepairingSampler` repairs the whole
  proposal before it becomes the trial's parameters, so the study's history holds the
  candidates that were trained. An evolutionary controller breeds from them, a model-based one
  learns what a trained architecture scores.
- **In the objective** (Baldwinian): a controller that must learn from the very actions it
  sampled (``rl``'s policy gradient, whose sampler sets ``learns_from_own_proposals``) keeps its
  proposal as the trial's parameters, and the objective trains the repaired candidate.

Either way the trial's user attribute ``repair_steps`` counts the steps taken, so the share of
proposals that fit as proposed is reported the same way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState

from autoprune.config import Budget
from autoprune.search import _schema as attrs
from autoprune.search._optuna import set_trial_user_attr
from autoprune.spaces import Candidate, SearchSpace, cost_report

__all__ = [
    "EXACT_METRICS",
    "RepairingSampler",
    "exact_costs",
    "repair",
    "repairing",
]

#: Budget metrics that the architecture alone determines.
EXACT_METRICS = ("macs", "params", "size_bytes")


def exact_costs(candidate: Candidate) -> dict[str, int]:
    """MACs, parameters and size (bytes, at the candidate's bit-widths), counted on the meta
    device (shapes only: no weight is allocated)."""
    costs = cost_report(candidate)
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


class RepairingSampler(optuna.samplers.BaseSampler):
    """A sampler whose proposals are repaired before they become the trial's parameters.

    Lamarckian repair (see the module): the inner sampler proposes every decision at once (its
    own relative proposal, the rest from its ``sample_independent``), :func:`repair` shrinks
    the proposal to fit the exact budgets, and the *repaired* values are what the trial
    records. The steps taken go to the trial's user attribute ``repair_steps``.

    A trial with fixed parameters (the enqueued base model, a re-queued interrupted trial) is
    left to Optuna's fixed-parameter path and never repaired here.

    Args:
        inner: The controller's sampler.
        space: The search space; every decision is a categorical parameter of that name.
        budgets: The run's budgets; only those on exact metrics are repaired.
    """

    def __init__(
        self,
        inner: optuna.samplers.BaseSampler,
        space: SearchSpace,
        budgets: Sequence[Budget],
    ) -> None:
        self.inner = inner
        self._space = space
        self._budgets = tuple(budgets)
        self._distributions = {d.name: CategoricalDistribution(d.choices) for d in space.decisions}

    def infer_relative_search_space(
        self, study: Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return dict(self._distributions)

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        if not search_space or trial.system_attrs.get("fixed_params"):
            return {}
        inner_space = self.inner.infer_relative_search_space(study, trial)
        proposal = dict(self.inner.sample_relative(study, trial, inner_space))
        for name, distribution in search_space.items():
            if name not in proposal:
                proposal[name] = self.inner.sample_independent(study, trial, name, distribution)
        fitted, steps = repair(self._space, proposal, self._budgets)
        set_trial_user_attr(study, trial, attrs.REPAIR_STEPS.key, steps)  # the objective reads it
        return fitted

    def sample_independent(
        self,
        study: Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        return self.inner.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        self.inner.before_trial(study, trial)

    def after_trial(
        self,
        study: Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        self.inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.inner.reseed_rng()


def repairing(
    sampler: optuna.samplers.BaseSampler, space: SearchSpace, budgets: Sequence[Budget]
) -> optuna.samplers.BaseSampler:
    """``sampler`` wrapped in a :class:`RepairingSampler` when some budget is exact and the
    sampler does not learn from its own proposals; ``sampler`` itself otherwise."""
    exact = [b for b in budgets if b.metric in EXACT_METRICS]
    if not exact or getattr(sampler, "learns_from_own_proposals", False):
        return sampler
    return RepairingSampler(sampler, space, exact)
