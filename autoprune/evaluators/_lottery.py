"""Lottery tickets (Frankle & Carbin, ICLR 2019), structured: the channels the trained base
ranks highest, rewound to the weights they had before training, then trained.

Liu et al. (ICLR 2019, Sec. 6) compare such tickets with a random initialisation on structured
pruning; ``rewind_epoch`` > 0 starts from an early epoch of the base's training instead (Frankle
et al. 2019, "Stabilizing the Lottery Ticket Hypothesis"), kept while the base trains.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from torch import nn

from autoprune.config import TrainingConfig, require
from autoprune.errors import ConfigError
from autoprune.evaluators._evaluator import Evaluator, register_evaluator
from autoprune.evaluators._finetune import LABELS, check_importance, inherit_ranked
from autoprune.evaluators._records import EvalResult
from autoprune.evaluators._train import EpochHook
from autoprune.spaces import Candidate

__all__ = ["Lottery"]


@register_evaluator("lottery")
class Lottery(Evaluator):
    """The trained base's most important channels, rewound to their initial weights, trained."""

    needs_base = True

    @dataclass(frozen=True)
    class Settings:
        """``rewind_epoch``: 0 starts from the base's initialisation, N from its weights after
        N epochs of training (fewer than the run's ``training.epochs``); ``importance`` ranks
        the channels on the trained base as ``finetune``'s does, ``importance_samples`` the
        training images of ``taylor`` and ``apoz``."""

        rewind_epoch: int = 0
        importance: str = "l1"
        importance_samples: int = 256

        def __post_init__(self) -> None:
            require(
                self.rewind_epoch >= 0,
                "evaluator.lottery.rewind_epoch",
                self.rewind_epoch,
                "an int >= 0",
            )
            check_importance(self.importance, self.importance_samples, "evaluator.lottery")

    @classmethod
    def check_run(cls, settings: Any, *, training: TrainingConfig, weights: str | None) -> None:
        if weights is not None:
            raise ConfigError(
                f"evaluator lottery rewinds the base to the weights it had before training, "
                f"which model.weights ({weights}) does not record; drop model.weights to train "
                f"the base here, or use evaluator finetune to start from your weights"
            )
        last = math.ceil(training.epochs) - 1  # the base's weights after its last full epoch
        if settings.rewind_epoch > last:
            raise ConfigError(
                f"evaluator.lottery.rewind_epoch is {settings.rewind_epoch}, but the base trains "
                f"for {training.epochs:g} epochs; rewind to 0..{last}, or train longer"
            )

    @classmethod
    def base_snapshots(cls, settings: Any) -> tuple[int, ...]:
        return (settings.rewind_epoch,) if settings.rewind_epoch > 0 else ()

    def describe(self) -> str:
        start = (
            "initialisation"
            if self.settings.rewind_epoch == 0
            else f"epoch {self.settings.rewind_epoch}"
        )
        return (
            f"lottery ({LABELS[self.settings.importance]} channels of the trained base, rewound "
            f"to its {start}, trained {self.fidelity.epochs:g} epochs)"
        )

    def evaluate(
        self, candidate: Candidate, *, seed: int, on_epoch: EpochHook | None = None
    ) -> tuple[nn.Module, EvalResult]:
        rewound = self.base.weights_at(self.settings.rewind_epoch)
        model = inherit_ranked(self, candidate, seed=seed, values=rewound)
        result = self._train(model, candidate, seed=seed, fidelity=self.fidelity, on_epoch=on_epoch)
        return model, result
