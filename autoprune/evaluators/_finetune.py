"""The fine-tuning baseline of Liu et al. (ICLR 2019): inherit the trained base's weights.

Each coupled channel group keeps the channels the ``importance`` criterion ranks highest in the
trained base (default: the L1 norm of Li et al. 2017, through Torch-Pruning's group importance;
also L2, BN scale, first-order Taylor, APoZ and a random control); the inherited network is then
fine-tuned. With ``model.weights`` the base is your trained network (:class:`TrainedBase`), and
no base is trained.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from autoprune.config import TrainingConfig, require
from autoprune.errors import ConfigError
from autoprune.evaluators._evaluate import sample_batches
from autoprune.evaluators._evaluator import Evaluator, register_evaluator
from autoprune.evaluators._records import EvalResult, Fidelity
from autoprune.evaluators._train import EpochHook
from autoprune.spaces import (
    DATA_IMPORTANCES,
    IMPORTANCES,
    Candidate,
    SoftPruning,
    inherit_weights,
)

__all__ = ["FineTune", "check_importance", "inherit_ranked"]

#: How logs and reports name each importance criterion.
LABELS = {
    "l1": "L1-norm",
    "l2": "L2-norm",
    "bn_scale": "BN-scale",
    "taylor": "Taylor",
    "apoz": "APoZ",
    "random": "random",
}


def check_importance(importance: str, samples: int, section: str) -> None:
    """Raise :class:`ConfigError` unless ``importance`` is a criterion and ``samples`` >= 1
    (``section``: the settings' key, e.g. ``"evaluator.finetune"``)."""
    choices = ", ".join(IMPORTANCES)
    require(importance in IMPORTANCES, f"{section}.importance", importance, f"one of {choices}")
    require(samples >= 1, f"{section}.importance_samples", samples, "an int >= 1")


def ranking_batches(
    evaluator: Evaluator, candidate: Candidate, seed: int
) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
    """The training batches ``evaluator``'s ``importance`` ranks on (``taylor`` and ``apoz``:
    ``importance_samples`` images drawn with ``seed``, at the training resolution), else
    ``None``."""
    settings = evaluator.settings
    if settings.importance not in DATA_IMPORTANCES:
        return None
    hw = evaluator.fidelity.train_hw(candidate.input_shape[1:])
    return sample_batches(evaluator.data(), settings.importance_samples, hw, seed=seed)


def inherit_ranked(
    evaluator: Evaluator, candidate: Candidate, *, seed: int, values: nn.Module | None = None
) -> nn.Module:
    """``candidate`` cut out of ``evaluator``'s trained base by its settings' ``importance``,
    taking ``values``' weights when given (:func:`inherit_weights`)."""
    trained, _ = evaluator.base.get()
    return inherit_weights(
        candidate,
        trained,
        importance=evaluator.settings.importance,
        seed=seed,
        batches=ranking_batches(evaluator, candidate, seed),
        values=values,
    )


@register_evaluator("finetune")
class FineTune(Evaluator):
    """The trained base's most important channels (L1 norm by default), fine-tuned.

    With ``model.weights``, the most important channels of your weights."""

    needs_base = True

    @dataclass(frozen=True)
    class Settings:
        """``epochs`` of fine-tuning (``None``: the run's training epochs) at peak learning
        rate ``lr``, of the channels ranked highest by ``importance`` (``IMPORTANCES``); the
        data-driven ones (``taylor``, ``apoz``) rank on ``importance_samples`` training images
        drawn with the trial's seed. ``soft``: soft filter pruning (He et al. 2018): fine-tune
        at the base's width for all epochs but the last, zeroing the channels ranked out after
        each, then cut them and fine-tune the cut network for the last epoch
        (:class:`~autoprune.spaces.SoftPruning`); needs 2 epochs or more."""

        epochs: int | None = None
        lr: float = 0.01
        importance: str = "l1"
        importance_samples: int = 256
        soft: bool = False

        def __post_init__(self) -> None:
            require(
                self.epochs is None or self.epochs >= 1,
                "evaluator.finetune.epochs",
                self.epochs,
                "an int >= 1, or null for training.epochs",
            )
            require(self.lr > 0, "evaluator.finetune.lr", self.lr, "a positive number")
            check_importance(self.importance, self.importance_samples, "evaluator.finetune")

    @classmethod
    def check_run(cls, settings: Any, *, training: TrainingConfig, weights: str | None) -> None:
        epochs = settings.epochs or training.epochs
        if settings.soft and epochs < 2:
            raise ConfigError(
                f"evaluator.finetune.soft trains all epochs but the last soft-pruned and the "
                f"cut network the last, so it needs 2 or more epochs, but gets {epochs:g}; set "
                f"evaluator.finetune.epochs to 2 or more"
            )

    def describe(self) -> str:
        epochs = self.settings.epochs or self.fidelity.epochs
        how = "soft-pruned to" if self.settings.soft else "channels of"
        return (
            f"finetune ({LABELS[self.settings.importance]} {how} {self.base.source}, "
            f"{epochs} epochs at lr {self.settings.lr:g})"
        )

    def evaluate(
        self, candidate: Candidate, *, seed: int, on_epoch: EpochHook | None = None
    ) -> tuple[nn.Module, EvalResult]:
        fidelity = dataclasses.replace(
            self.fidelity, epochs=self.settings.epochs or self.fidelity.epochs
        )
        if self.settings.soft:
            return self._soft(candidate, seed=seed, fidelity=fidelity, on_epoch=on_epoch)
        model = inherit_ranked(self, candidate, seed=seed)
        result = self._train(
            model,
            candidate,
            seed=seed,
            fidelity=fidelity,
            on_epoch=on_epoch,
            lr=self.settings.lr,
        )
        return model, result

    def _soft(
        self, candidate: Candidate, *, seed: int, fidelity: Fidelity, on_epoch: EpochHook | None
    ) -> tuple[nn.Module, EvalResult]:
        """Soft filter pruning with fine-tuning (He et al. 2018): every epoch but the last
        trains the base's width, zeroing the channels ranked out after each; then they are cut
        and the cut network trains the last epoch. ``on_epoch`` sees the epochs of both."""
        trained, _ = self.base.get()
        soft = SoftPruning(
            candidate,
            trained,
            importance=self.settings.importance,
            seed=seed,
            batches=ranking_batches(self, candidate, seed),
        )
        soft_part = dataclasses.replace(fidelity, epochs=fidelity.epochs - 1)

        def after_epoch(epoch: int, _planned: int | float, accuracy: float) -> None:
            soft.zero()
            if on_epoch is not None:
                on_epoch(epoch, fidelity.epochs, accuracy)

        lr = self.settings.lr
        first = self._train(
            soft.model, candidate, seed=seed, fidelity=soft_part, on_epoch=after_epoch, lr=lr
        )
        if on_epoch is not None:
            on_epoch(math.ceil(soft_part.epochs), fidelity.epochs, first.accuracy)
        model = soft.cut()
        last = self._train(
            model,
            candidate,
            seed=seed,
            fidelity=dataclasses.replace(fidelity, epochs=1),
            on_epoch=None,
            lr=lr,
        )
        seconds = first.train_seconds + last.train_seconds
        images = first.images_per_second * first.train_seconds
        images += last.images_per_second * last.train_seconds
        return model, dataclasses.replace(
            last,
            fidelity=fidelity,
            epochs=fidelity.epochs,
            train_seconds=seconds,
            images_per_second=images / seconds if seconds > 0 else 0.0,
        )
