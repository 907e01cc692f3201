"""Evaluators: how a candidate's accuracy is obtained, following Liu et al. (ICLR 2019).

*Rethinking the Value of Network Pruning* compares, for the same pruned architecture, a network
trained from scratch with one fine-tuned from the trained base's weights. Every evaluator here
returns the candidate's trained network and an :class:`EvalResult` on the validation split:

=============  ==========================================================================
``scratch-e``  Fresh initialisation, the run's training fidelity (the base model's epochs).
``scratch-b``  Fresh initialisation, the base model's training *compute*: epochs scaled by
               base MACs / candidate MACs, at most ``scratch_b_cap`` times (the paper's
               Scratch-B; it doubles the epochs of models that save more than 2x FLOPs),
               fractional (part of a last epoch) where the ratio is.
``finetune``   The trained base's weights, channels kept by their L1 norm (Li et al. 2017,
               through Torch-Pruning's group importance), fine-tuned for ``finetune_epochs`` at
               a peak learning rate of ``finetune_lr``.
``distill``    Fresh initialisation trained against the trained base as teacher (Hinton et al.
               2015, softened targets at ``distill_temperature``).
``proxy``      No training: a zero-cost proxy of the untrained network (synflow or NASWOT).
=============  ==========================================================================

The base model, when an evaluator needs one, is trained once per run at the run's fidelity and
cached on disk (:class:`TrainedBase`).
"""

from __future__ import annotations

import abc
import dataclasses
import functools
import json
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import torch
from filelock import FileLock
from torch import nn

from autoprune.config import EvaluatorConfig, TrainingConfig
from autoprune.errors import ConfigError, UnknownNameError
from autoprune.evaluators._datasets import DatasetSplits
from autoprune.evaluators._proxies import log_synflow, naswot
from autoprune.evaluators._records import EvalResult, Fidelity
from autoprune.evaluators._train import Distillation, EpochHook, _prepare, train_model
from autoprune.spaces import Candidate, CostReport, build_model, count_costs, inherit_weights

__all__ = [
    "EVALUATORS",
    "PROXIES",
    "Evaluator",
    "TrainedBase",
    "create_evaluator",
    "fidelity_of",
    "unpruned",
    "macs_of",
]

_logger = logging.getLogger("autoprune.evaluators")

#: Zero-cost proxies the ``proxy`` evaluator can score with.
PROXIES = ("log_synflow", "naswot")

#: Images in the NASWOT batch (Mellor et al. use 128; the score's scale depends on it).
_NASWOT_BATCH = 64


def macs_of(candidate: Candidate) -> int:
    """Multiply-accumulates of one inference of ``candidate`` (counted on the meta device)."""
    return count_costs(build_model(candidate, device="meta"), candidate.input_shape).macs


def fidelity_of(training: TrainingConfig) -> Fidelity:
    """The training fidelity a run's ``training`` section asks for."""
    return Fidelity(
        samples=training.samples,
        epochs=training.epochs,
        resolution_scale=training.resolution_scale,
        batch_size=training.batch_size,
    )


def unpruned(candidate: Candidate) -> Candidate:
    """The unpruned base model of ``candidate``'s space: every channel and block, in float, at
    ``candidate``'s input shape. What a teacher or the fine-tune baseline starts from."""
    return Candidate(
        model=candidate.model,
        num_classes=candidate.num_classes,
        in_channels=candidate.in_channels,
        input_shape=candidate.input_shape,
    )


class TrainedBase:
    """The unpruned base model, trained once per run from scratch at the run's fidelity.

    ``base`` is any candidate of the run's space at the resolution to train at (its widths,
    depths and bit-widths are ignored: see :func:`unpruned`). Cached in ``folder`` (``model.pt``
    and ``eval.json``); several processes of one run (Ray
    workers on a shared file system) train it once between them under a file lock.
    """

    def __init__(
        self,
        base: Candidate,
        *,
        data: Callable[[], DatasetSplits],
        training: TrainingConfig,
        seed: int,
        folder: Path,
        progress: bool = False,
    ) -> None:
        self.candidate = unpruned(base)
        self._data = data
        self.training = training
        self.fidelity = fidelity_of(training)
        self.seed = seed
        self.folder = folder
        self.progress = progress
        self._model: nn.Module | None = None
        self._result: EvalResult | None = None

    @functools.cached_property
    def costs(self) -> CostReport:
        """Exact costs of one inference of the base model (counted once)."""
        return count_costs(build_model(self.candidate, device="meta"), self.candidate.input_shape)

    @property
    def macs(self) -> int:
        """Multiply-accumulates of one inference of the base model."""
        return self.costs.macs

    def is_base(self, candidate: Candidate) -> bool:
        """Whether ``candidate`` is this base model (the same network at the same input)."""
        if (
            candidate.input_shape != self.candidate.input_shape
            or candidate.model != self.candidate.model
        ):
            return False
        if any(bits < 32 for _, bits in (*candidate.weight_bits, *candidate.activation_bits)):
            return False
        costs = count_costs(build_model(candidate, device="meta"), candidate.input_shape)
        return (costs.macs, costs.params) == (self.costs.macs, self.costs.params)

    def get(self) -> tuple[nn.Module, EvalResult]:
        """The trained base network (evaluation mode, CPU) and its validation result."""
        if self._model is None or self._result is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            with FileLock(self.folder / ".lock"):
                self._model, self._result = self._load() or self._train()
        return self._model, self._result

    def _load(self) -> tuple[nn.Module, EvalResult] | None:
        weights, record = self.folder / "model.pt", self.folder / "eval.json"
        if not (weights.is_file() and record.is_file()):
            return None
        saved = json.loads(record.read_text())
        if saved.get("candidate_hash") != self.candidate.hash or saved.get("seed") != self.seed:
            raise ConfigError(
                f"{self.folder} holds a base model trained for another configuration "
                f"(candidate {saved.get('candidate_hash')}, seed {saved.get('seed')}); use a "
                f"new run directory, or delete {self.folder} to train the base again"
            )
        model = build_model(self.candidate, seed=0)
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        _logger.info("base model loaded from %s", self.folder)
        return model.eval(), EvalResult.from_dict(saved["eval"])

    def _train(self) -> tuple[nn.Module, EvalResult]:
        _logger.info(
            "training the base model once (%s); kept in %s", self.fidelity.label, self.folder
        )
        model = build_model(self.candidate, seed=self.seed)
        result = train_model(
            model,
            self._data(),
            fidelity=self.fidelity,
            input_shape=self.candidate.input_shape,
            seed=self.seed,
            lr=self.training.lr,
            momentum=self.training.momentum,
            weight_decay=self.training.weight_decay,
            progress=self.progress,
        )
        model.cpu()
        tmp = self.folder / "model.pt.tmp"
        torch.save(model.state_dict(), tmp)
        tmp.replace(self.folder / "model.pt")
        record = {"candidate_hash": self.candidate.hash, "seed": self.seed}
        (self.folder / "eval.json").write_text(
            json.dumps({**record, "eval": result.to_dict()}, indent=1)
        )
        return model.eval(), result


class Evaluator(abc.ABC):
    """Turns a candidate into its trained network and validation result.

    Subclasses set :attr:`name` and implement :meth:`evaluate`; :func:`create_evaluator` builds
    them from a run's settings.
    """

    name: ClassVar[str]
    #: Whether the evaluator needs the trained base model (fine-tuning, distillation).
    needs_base: ClassVar[bool] = False

    def __init__(
        self,
        *,
        data: Callable[[], DatasetSplits],
        training: TrainingConfig,
        settings: EvaluatorConfig,
        base: TrainedBase,
        progress: bool = False,
    ) -> None:
        self.data = data
        self.training = training
        self.fidelity = fidelity_of(training)
        self.settings = settings
        self.base = base
        self.progress = progress

    @abc.abstractmethod
    def evaluate(
        self, candidate: Candidate, *, seed: int, on_epoch: EpochHook | None = None
    ) -> tuple[nn.Module, EvalResult]:
        """Train (or score) ``candidate`` with ``seed``; its network and validation result.

        ``on_epoch`` is passed to :func:`train_model` (early stopping); evaluators that do not
        train ignore it.
        """

    def describe(self) -> str:
        """One line for logs and reports, e.g. ``'scratch-e'``."""
        return self.name

    def _train(
        self,
        model: nn.Module,
        candidate: Candidate,
        *,
        seed: int,
        fidelity: Fidelity,
        on_epoch: EpochHook | None,
        lr: float | None = None,
        distillation: Distillation | None = None,
    ) -> EvalResult:
        return train_model(
            model,
            self.data(),
            fidelity=fidelity,
            input_shape=candidate.input_shape,
            seed=seed,
            lr=self.training.lr if lr is None else lr,
            momentum=self.training.momentum,
            weight_decay=self.training.weight_decay,
            distillation=distillation,
            on_epoch=on_epoch,
            evaluator=self.name,
            progress=self.progress,
        )


class ScratchE(Evaluator):
    """Train from a fresh initialisation for the run's epochs (Scratch-E)."""

    name = "scratch-e"

    def evaluate(
        self, candidate: Candidate, *, seed: int, on_epoch: EpochHook | None = None
    ) -> tuple[nn.Module, EvalResult]:
        model = build_model(candidate, seed=seed)
        return model, self._train(
            model, candidate, seed=seed, fidelity=self.fidelity, on_epoch=on_epoch
        )


class ScratchB(Evaluator):
    """Train from a fresh initialisation for the base model's compute (Scratch-B)."""

    name = "scratch-b"

    def describe(self) -> str:
        return f"scratch-b (epochs x base/candidate MACs, at most {self.settings.scratch_b_cap:g}x)"

    def epochs(self, candidate: Candidate) -> int | float:
        """The run's epochs times ``min(cap, base MACs / candidate MACs)``, to two decimals,
        and never fewer than the run's epochs.

        Fractional, so that the training compute follows the MACs smoothly: whole epochs
        would give a candidate with 1.49x fewer MACs than the base one epoch of a 1-epoch run
        and one with 1.5x fewer two, a step in accuracy that a search would read as the
        architecture's (see :class:`~autoprune.evaluators.Fidelity` for partial epochs).
        """
        factor = min(self.settings.scratch_b_cap, self.base.macs / max(macs_of(candidate), 1))
        return max(self.fidelity.epochs, round(self.fidelity.epochs * factor, 2))

    def evaluate(
        self, candidate: Candidate, *, seed: int, on_epoch: EpochHook | None = None
    ) -> tuple[nn.Module, EvalResult]:
        fidelity = dataclasses.replace(self.fidelity, epochs=self.epochs(candidate))
        model = build_model(candidate, seed=seed)
        return model, self._train(model, candidate, seed=seed, fidelity=fidelity, on_epoch=on_epoch)


class FineTune(Evaluator):
    """Inherit the trained base's L1-largest channels, then fine-tune (the paper's baseline)."""

    name = "finetune"
    needs_base = True

    def describe(self) -> str:
        epochs = self.settings.finetune_epochs or self.fidelity.epochs
        return (
            f"finetune (L1-norm channels of the trained base, {epochs} epochs at lr "
            f"{self.settings.finetune_lr:g})"
        )

    def evaluate(
        self, candidate: Candidate, *, seed: int, on_epoch: EpochHook | None = None
    ) -> tuple[nn.Module, EvalResult]:
        trained, _ = self.base.get()
        model = inherit_weights(candidate, trained, importance="l1")
        epochs = self.settings.finetune_epochs or self.fidelity.epochs
        fidelity = dataclasses.replace(self.fidelity, epochs=epochs)
        result = self._train(
            model,
            candidate,
            seed=seed,
            fidelity=fidelity,
            on_epoch=on_epoch,
            lr=self.settings.finetune_lr,
        )
        return model, result


class Distill(Evaluator):
    """Train from a fresh initialisation with the trained base as teacher."""

    name = "distill"
    needs_base = True

    def describe(self) -> str:
        s = self.settings
        return (
            f"distill (trained base as teacher, T={s.distill_temperature:g}, soft weight "
            f"{s.distill_weight:g})"
        )

    def evaluate(
        self, candidate: Candidate, *, seed: int, on_epoch: EpochHook | None = None
    ) -> tuple[nn.Module, EvalResult]:
        teacher, _ = self.base.get()
        distillation = Distillation(
            teacher=teacher,
            temperature=self.settings.distill_temperature,
            weight=self.settings.distill_weight,
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


class Proxy(Evaluator):
    """Score the untrained network with a zero-cost proxy; no training (seconds per candidate)."""

    name = "proxy"

    def describe(self) -> str:
        return f"proxy ({self.settings.proxy} at initialisation, no training)"

    def evaluate(
        self, candidate: Candidate, *, seed: int, on_epoch: EpochHook | None = None
    ) -> tuple[nn.Module, EvalResult]:
        model = build_model(candidate, seed=seed)
        hw = self.fidelity.train_hw(candidate.input_shape[1:])
        shape = (candidate.input_shape[0], *hw)
        if self.settings.proxy == "log_synflow":
            score = log_synflow(model, shape)
        else:
            score = naswot(model, self._batch(hw, seed))
        if not math.isfinite(score):
            score = -1e9  # every path dead / identical activation patterns: ranks last
        return model, EvalResult(
            accuracy=score,
            split="val",
            fidelity=self.fidelity,
            input_hw=hw,
            train_seconds=0.0,
            images_per_second=0.0,
            epochs=0,
            samples=0,
            seed=seed,
            train_loss=math.nan,
            evaluator=self.name,
            metric=self.settings.proxy,
        )

    def _batch(self, hw: tuple[int, int], seed: int) -> torch.Tensor:
        data = self.data()
        generator = torch.Generator().manual_seed(seed)
        idx = torch.randperm(len(data.train), generator=generator)[:_NASWOT_BATCH]
        mean = torch.tensor(data.mean).view(1, -1, 1, 1)
        std = torch.tensor(data.std).view(1, -1, 1, 1)
        return _prepare(data.train.images[idx], mean, std, hw)


_EVALUATORS: dict[str, type[Evaluator]] = {
    cls.name: cls for cls in (ScratchE, ScratchB, FineTune, Distill, Proxy)
}
#: Names of the evaluators, in the order the paper discusses them.
EVALUATORS: tuple[str, ...] = tuple(_EVALUATORS)


def create_evaluator(
    settings: EvaluatorConfig,
    *,
    data: Callable[[], DatasetSplits],
    training: TrainingConfig,
    base: TrainedBase,
    progress: bool = False,
) -> Evaluator:
    """The evaluator named by ``settings.name``.

    Raises:
        UnknownNameError: ``settings.name`` or ``settings.proxy`` is not known.
    """
    if settings.name not in _EVALUATORS:
        raise UnknownNameError("evaluator", settings.name, list(_EVALUATORS))
    if settings.proxy not in PROXIES:
        raise ConfigError(
            f"unknown evaluator.proxy {settings.proxy!r}; valid proxies: {', '.join(PROXIES)}"
        )
    return _EVALUATORS[settings.name](
        data=data,
        training=training,
        settings=settings,
        base=base,
        progress=progress,
    )
