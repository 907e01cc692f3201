"""Training from scratch (Liu et al., ICLR 2019): the pruned architecture with a fresh start.

``scratch-e`` trains for the run's epochs; ``scratch-b`` for the base model's training compute,
the run's epochs times base MACs / candidate MACs, at most ``cap`` times (the paper's Scratch-B
doubles the epochs of models that save more than 2x FLOPs), fractional where the ratio is.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from torch import nn

from autoprune.config import require
from autoprune.evaluators._base_model import macs_of
from autoprune.evaluators._evaluator import Evaluator, register_evaluator
from autoprune.evaluators._records import EvalResult
from autoprune.evaluators._train import EpochHook
from autoprune.spaces import Candidate, build_model

__all__ = ["ScratchB", "ScratchE"]


@register_evaluator("scratch-e")
class ScratchE(Evaluator):
    """From a fresh initialisation, for the run's training epochs (Scratch-E)."""

    def evaluate(
        self, candidate: Candidate, *, seed: int, on_epoch: EpochHook | None = None
    ) -> tuple[nn.Module, EvalResult]:
        model = build_model(candidate, seed=seed)
        return model, self._train(
            model, candidate, seed=seed, fidelity=self.fidelity, on_epoch=on_epoch
        )


@register_evaluator("scratch-b")
class ScratchB(Evaluator):
    """From a fresh initialisation, for the base model's training compute (Scratch-B)."""

    @dataclass(frozen=True)
    class Settings:
        """``cap``: at most this many times the run's epochs."""

        cap: float = 2.0

        def __post_init__(self) -> None:
            require(self.cap >= 1, "evaluator.scratch-b.cap", self.cap, "a number >= 1")

    def describe(self) -> str:
        return f"scratch-b (epochs x base/candidate MACs, at most {self.settings.cap:g}x)"

    def epochs(self, candidate: Candidate) -> int | float:
        """The run's epochs times ``min(cap, base MACs / candidate MACs)``, to two decimals,
        and never fewer than the run's epochs.

        Fractional, so that the training compute follows the MACs smoothly: whole epochs
        would train a candidate with 1.49x fewer MACs than the base for one epoch of a 1-epoch
        run and one with 1.5x fewer for two, a step in accuracy that a search would read as
        the architecture's (see :class:`~autoprune.evaluators.Fidelity` for partial epochs).
        """
        factor = min(self.settings.cap, self.base.macs / max(macs_of(candidate), 1))
        return max(self.fidelity.epochs, round(self.fidelity.epochs * factor, 2))

    def evaluate(
        self, candidate: Candidate, *, seed: int, on_epoch: EpochHook | None = None
    ) -> tuple[nn.Module, EvalResult]:
        fidelity = dataclasses.replace(self.fidelity, epochs=self.epochs(candidate))
        model = build_model(candidate, seed=seed)
        return model, self._train(model, candidate, seed=seed, fidelity=fidelity, on_epoch=on_epoch)
