"""Knowledge distillation (Hinton et al. 2015): a fresh network taught by the trained base, or
by your weights with ``model.weights`` (:class:`TrainedBase`; no base is trained then)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from autoprune.config import require
from autoprune.evaluators._evaluator import Evaluator, register_evaluator
from autoprune.evaluators._records import EvalResult
from autoprune.evaluators._train import Distillation, EpochHook
from autoprune.spaces import Candidate, build_model

__all__ = ["Distill"]


@register_evaluator("distill")
class Distill(Evaluator):
    """From a fresh initialisation, with the trained base (or your model.weights) as teacher."""

    needs_base = True

    @dataclass(frozen=True)
    class Settings:
        """``temperature`` softens the teacher's outputs; ``weight`` is the soft-target term's
        share of the loss, in [0, 1]."""

        temperature: float = 4.0
        weight: float = 0.9

        def __post_init__(self) -> None:
            require(
                self.temperature > 0,
                "evaluator.distill.temperature",
                self.temperature,
                "a positive number",
            )
            require(
                0 <= self.weight <= 1, "evaluator.distill.weight", self.weight, "a number in [0, 1]"
            )

    def describe(self) -> str:
        s = self.settings
        return (
            f"distill ({self.base.source} as teacher, T={s.temperature:g}, "
            f"soft weight {s.weight:g})"
        )

    def evaluate(
        self, candidate: Candidate, *, seed: int, on_epoch: EpochHook | None = None
    ) -> tuple[nn.Module, EvalResult]:
        teacher, _ = self.base.get()
        distillation = Distillation(
            teacher=teacher, temperature=self.settings.temperature, weight=self.settings.weight
        )
        model = build_model(candidate, seed=seed)
        result = self._train(
            model,
            candidate,
            seed=seed,
            fidelity=self.fidelity,
            on_epoch=on_epoch,
            distillation=distillation,
        )
        return model, result
