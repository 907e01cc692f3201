"""The fine-tuning baseline of Liu et al. (ICLR 2019): inherit the trained base's weights.

Each coupled channel group keeps the channels of largest L1 norm in the trained base (Li et al.
2017, through Torch-Pruning's group importance); the inherited network is then fine-tuned. With
``model.weights`` the base is your trained network (:class:`TrainedBase`), and no base is
trained.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from torch import nn

from autoprune.config import require
from autoprune.evaluators._evaluator import Evaluator, register_evaluator
from autoprune.evaluators._records import EvalResult
from autoprune.evaluators._train import EpochHook
from autoprune.spaces import Candidate, inherit_weights

__all__ = ["FineTune"]


@register_evaluator("finetune")
class FineTune(Evaluator):
    """The trained base's L1-largest channels, fine-tuned (the paper's baseline).

    With ``model.weights``, the L1-largest channels of your weights."""

    needs_base = True

    @dataclass(frozen=True)
    class Settings:
        """``epochs`` of fine-tuning (``None``: the run's training epochs) at peak learning
        rate ``lr``."""

        epochs: int | None = None
        lr: float = 0.01

        def __post_init__(self) -> None:
            require(
                self.epochs is None or self.epochs >= 1,
                "evaluator.finetune.epochs",
                self.epochs,
                "an int >= 1, or null for training.epochs",
            )
            require(self.lr > 0, "evaluator.finetune.lr", self.lr, "a positive number")

    def describe(self) -> str:
        epochs = self.settings.epochs or self.fidelity.epochs
        return (
            f"finetune (L1-norm channels of {self.base.source}, {epochs} epochs at lr "
            f"{self.settings.lr:g})"
        )

    def evaluate(
        self, candidate: Candidate, *, seed: int, on_epoch: EpochHook | None = None
    ) -> tuple[nn.Module, EvalResult]:
        trained, _ = self.base.get()
        model = inherit_weights(candidate, trained, importance="l1")
        fidelity = dataclasses.replace(
            self.fidelity, epochs=self.settings.epochs or self.fidelity.epochs
        )
        result = self._train(
            model,
            candidate,
            seed=seed,
            fidelity=fidelity,
            on_epoch=on_epoch,
            lr=self.settings.lr,
        )
        return model, result
