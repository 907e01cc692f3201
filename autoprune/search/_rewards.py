"""Rewards of the ``rl`` controller: a finished trial's objective values as one scalar.

The maximised objectives (accuracy) enter as MnasNet's ``log ACC``, floored at ``eps = 1e-6``
(the 0.0 accuracy of an untrained candidate scores ``log(1e-6)``). The minimised ones (costs),
weighted by the trial's ``omega`` (one weight ``<= 0`` per cost), enter by a weighted
Tchebycheff norm (:func:`tchebycheff_reward`; the ``rl`` controller's default, on the costs'
ranks) or by MnasNet's product ``ACC * (LAT / T) ** w`` in log form (:func:`mnas_reward`)::

    R = sum_max log(max(v_j, eps)) - max_min |omega_i| * q_i(v_i)
    R = sum_max log(max(v_j, eps)) + sum_min omega_i * log(clip(v_i / ref_i, 1 / 10, 10))

``q_i(v)`` is the share of the feasible complete trials numbered up to the trial itself whose
objective ``i`` is below ``v`` (ties count half), ``ref_i`` the median of objective ``i`` over
the same trials (:class:`_FeasibleHistory`): deterministic functions of the history. Why
Tchebycheff, and why ranks: ``docs/controllers.md``.

Example:
    >>> max_, min_ = StudyDirection.MAXIMIZE, StudyDirection.MINIMIZE
    >>> round(tchebycheff_reward([0.5, 0.25], [max_, min_], [-1.0], [(0.0, 1.0)]), 4)
    -0.9431
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

__all__ = ["SCALARISATIONS", "mnas_reward", "tchebycheff_reward"]

#: Floor of every value and reference before the log (an untrained candidate's 0.0 accuracy).
_EPS = 1e-6
#: A minimised objective's ratio to its reference is clipped to [1 / this, this] in the reward.
_RATIO_CLIP = 10.0


def _accuracy_term(
    values: Sequence[float],
    directions: Sequence[StudyDirection],
    weights: Sequence[float],
    per_cost: Sequence[Any],
    what: str,
) -> tuple[float, list[float]]:
    """``sum log(max(v, eps))`` over the maximised values, and the minimised values in order;
    raises unless ``weights`` and ``per_cost`` (named ``what``) hold one entry per minimised."""
    minimised = [v for v, d in zip(values, directions, strict=True) if d == StudyDirection.MINIMIZE]
    if not len(weights) == len(per_cost) == len(minimised):
        raise ValueError(
            f"one weight and one {what} per minimised objective must be given, but got "
            f"{len(minimised)} minimised objectives, weights={weights}, {what}s={per_cost}"
        )
    reward = sum(
        math.log(max(v, _EPS))
        for v, d in zip(values, directions, strict=True)
        if d == StudyDirection.MAXIMIZE
    )
    return reward, minimised


def mnas_reward(
    values: Sequence[float],
    directions: Sequence[StudyDirection],
    weights: Sequence[float],
    references: Sequence[float],
) -> float:
    """MnasNet-style scalar reward of one trial's objective values.

    ``sum log(v)`` over the maximised objectives plus ``sum w_i log(v_i / ref_i)`` over the
    minimised ones; ``weights`` and ``references`` hold one entry per minimised objective, in
    the order of ``directions``. Maximised values are floored at ``1e-6`` before the log; the
    ratios ``v_i / ref_i`` are clipped to ``[0.1, 10]``.

    Example (MnasNet: accuracy 0.75, latency 80 ms against a 100 ms target, w = -0.07):
        >>> max_, min_ = StudyDirection.MAXIMIZE, StudyDirection.MINIMIZE
        >>> round(mnas_reward([0.75, 80.0], [max_, min_], [-0.07], [100.0]), 4)
        -0.2721
        >>> round(math.log(0.75 * (80.0 / 100.0) ** -0.07), 4)
        -0.2721
    """
    reward, minimised = _accuracy_term(values, directions, weights, references, "reference")
    for value, weight, reference in zip(minimised, weights, references, strict=True):
        ratio = max(value, 0.0) / max(reference, _EPS)
        reward += weight * math.log(min(max(ratio, 1 / _RATIO_CLIP), _RATIO_CLIP))
    return reward


def tchebycheff_reward(
    values: Sequence[float],
    directions: Sequence[StudyDirection],
    weights: Sequence[float],
    ranges: Sequence[tuple[float, float]],
) -> float:
    """Scalar reward that combines the minimised objectives by a weighted Tchebycheff norm.

    ``sum log(v)`` over the maximised objectives (MnasNet's accuracy term) minus
    ``max_i |w_i| * (v_i - lo_i) / (hi_i - lo_i)`` over the minimised ones, ``(lo_i, hi_i)``
    being the best and worst value seen (``ranges``; a zero span counts as 1). A weight near 0
    lets that cost go; ``-1`` charges its whole normalised range. Unlike a weighted sum
    (MnasNet's product form is one in log space, and reaches only the log-convex parts of a
    front), the weighted maximum reaches every point of a front, concave parts included
    (Miettinen 1999, *Nonlinear Multiobjective Optimization*, thm. 3.4.5).

    Example (two costs, one at its best and one at its worst; the worse one counts):
        >>> min_ = StudyDirection.MINIMIZE
        >>> tchebycheff_reward([1.0, 3.0], [min_, min_], [-0.5, -0.5], [(1.0, 3.0), (1.0, 3.0)])
        -0.5
    """
    reward, minimised = _accuracy_term(values, directions, weights, ranges, "range")
    if not minimised:
        return reward
    worst = max(
        abs(weight) * (value - lo) / (hi - lo if hi > lo else 1.0)
        for value, weight, (lo, hi) in zip(minimised, weights, ranges, strict=True)
    )
    return reward - worst


#: Scalarisations of the minimised objectives that the ``rl`` controller can use.
SCALARISATIONS = ("tchebycheff", "weighted-log")


class _FeasibleHistory:
    """Minimised objective values of the feasible, complete, finite trials, for references."""

    def __init__(self, trials: Sequence[FrozenTrial], directions: Sequence[StudyDirection]) -> None:
        columns = [i for i, d in enumerate(directions) if d == StudyDirection.MINIMIZE]
        self._columns = columns
        rows = [
            (t.number, [t.values[i] for i in columns])
            for t in trials
            if t.state == TrialState.COMPLETE
            and t.values is not None
            and all(math.isfinite(v) for v in t.values)
            and all(c <= 0 for c in t.constraints.values())
        ]
        rows.sort(key=lambda row: row[0])
        self._numbers = np.asarray([n for n, _ in rows], dtype=int)
        self._values = np.asarray([v for _, v in rows], dtype=float).reshape(
            len(rows), len(columns)
        )

    def references(self, number: int) -> list[float]:
        """Median of each minimised objective over the feasible trials numbered ``<= number``."""
        upto = int(np.searchsorted(self._numbers, number, side="right"))
        if upto == 0:  # cannot happen for a feasible trial, which counts itself
            return [1.0] * self._values.shape[1]
        return np.median(self._values[:upto], axis=0).tolist()

    def ranks(self, number: int, values: Sequence[float]) -> list[float]:
        """Rank in ``[0, 1]`` of each minimised objective of ``values`` (all objectives, in
        study order) among the feasible trials numbered ``<= number``: the share below it,
        ties counting half."""
        upto = int(np.searchsorted(self._numbers, number, side="right"))
        mine = np.asarray([values[i] for i in self._columns], dtype=float)
        if upto == 0:  # cannot happen for a feasible trial, which counts itself
            return [0.5] * len(mine)
        seen = self._values[:upto]
        shares = (seen < mine).mean(axis=0) + 0.5 * (seen == mine).mean(axis=0)
        return shares.tolist()
