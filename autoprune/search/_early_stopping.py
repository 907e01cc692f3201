"""Early stopping that works with several objectives: stop a candidate dominated at its cost.

Optuna's pruners compare one intermediate value per step and refuse multi-objective studies.
A candidate's costs (latency, energy) are known exactly before it trains and only its accuracy
grows with training, so the rule is exact about the costs:

    After epoch ``e`` of ``E``, stop the candidate if a trial that already reached epoch ``e``
    of a schedule of at least ``E`` epochs is at least as cheap on every cost objective **and**
    was at least ``margin`` more accurate at that epoch.

Only schedules at least as long count: the learning rate anneals over the whole schedule, so at
epoch ``e`` a longer schedule has annealed less, and a peer ahead on it is ahead for real.
(Under Scratch-B every cheaper peer has a schedule at least as long.) Nothing is stopped until
``min_trials`` trials have reached that epoch.

A stopped trial is recorded as ``PRUNED`` with its last accuracy, the epoch it stopped at and
the trial that dominated it (user attributes ``accuracy``, ``stopped_early``).

Example:
    >>> stopper = DominanceStopper(margin=0.02, min_trials=1)
    >>> peers = [Peer(number=0, accuracy=0.80, costs={"latency_ms": 1.0, "energy_mj": 2.0})]
    >>> stopper.dominating(peers, accuracy=0.70, costs={"latency_ms": 1.5, "energy_mj": 2.0})
    0
    >>> stopper.dominating(peers, accuracy=0.79, costs={"latency_ms": 1.5, "energy_mj": 2.0})
    >>> stopper.dominating(peers, accuracy=0.70, costs={"latency_ms": 0.5, "energy_mj": 2.0})
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import optuna

from autoprune.search import _schema as attrs

__all__ = [
    "COST_OBJECTIVES",
    "DominanceStopper",
    "EarlyStopped",
    "Peer",
    "peers_at",
]

#: The cost objectives a dominating trial must be at least as good on.
COST_OBJECTIVES = ("latency_ms", "energy_mj")


class EarlyStopped(Exception):
    """Training was stopped after ``epoch`` of ``epochs``: trial ``by`` dominates it there."""

    def __init__(self, *, epoch: int, epochs: int | float, accuracy: float, by: int) -> None:
        self.epoch = epoch
        self.epochs = epochs
        self.accuracy = accuracy
        self.by = by
        super().__init__(
            f"stopped after epoch {epoch} of {epochs} at {100 * accuracy:.2f} % validation "
            f"accuracy: trial {by} was at least as cheap and more accurate at that epoch"
        )


@dataclass(frozen=True)
class Peer:
    """A trial's accuracy at one epoch of a schedule, with its costs."""

    number: int
    accuracy: float
    costs: Mapping[str, float]


def peers_at(study: optuna.Study, *, epoch: int, epochs: int | float, exclude: int) -> list[Peer]:
    """The finished (complete or pruned) trials of ``study`` that reached ``epoch`` of a
    schedule of at least ``epochs`` epochs, with their accuracy there; trial ``exclude`` left
    out."""
    peers = []
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    for trial in study.get_trials(deepcopy=False, states=states):
        curve = attrs.CURVE.get(trial)
        costs = attrs.COSTS.get(trial)
        if trial.number == exclude or not curve or not costs or curve.get("epochs", 0) < epochs:
            continue
        accuracies = curve.get("accuracy") or []
        if len(accuracies) >= epoch:
            peers.append(Peer(trial.number, float(accuracies[epoch - 1]), costs))
    return peers


@dataclass(frozen=True)
class DominanceStopper:
    """The stopping rule of this module.

    Attributes:
        margin: Accuracy (a fraction) by which a cheaper trial must lead at the same epoch.
        min_trials: Trials that must have reached the epoch before anything is stopped there.
    """

    margin: float = 0.02
    min_trials: int = 3

    def dominating(
        self, peers: Sequence[Peer], *, accuracy: float, costs: Mapping[str, float]
    ) -> int | None:
        """The number of the first peer that dominates ``(accuracy, costs)``, or ``None``."""
        if len(peers) < self.min_trials:
            return None
        for peer in peers:
            cheaper = all(float(peer.costs[k]) <= float(costs[k]) for k in COST_OBJECTIVES)
            if cheaper and peer.accuracy >= accuracy + self.margin:
                return peer.number
        return None
