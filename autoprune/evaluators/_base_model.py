"""The unpruned base model of a run, trained once: what fine-tuning and distillation start from.

Also the small helpers every evaluator shares: the training fidelity a ``training`` section
asks for, a candidate's MACs, and the unpruned network of a candidate's space.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from pathlib import Path

import torch
from filelock import FileLock
from torch import nn

from autoprune.config import TrainingConfig
from autoprune.errors import ConfigError
from autoprune.evaluators._datasets import DatasetSplits
from autoprune.evaluators._records import EvalResult, Fidelity
from autoprune.evaluators._train import train_model
from autoprune.spaces import Candidate, CostReport, build_model, count_costs

__all__ = ["TrainedBase", "fidelity_of", "macs_of", "unpruned"]

_logger = logging.getLogger("autoprune.evaluators")


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
