"""The unpruned base model of a run, trained once or read from your weights: what fine-tuning and
distillation start from.

Also the small helpers every evaluator shares: the training fidelity a ``training`` section
asks for, a candidate's MACs, and the unpruned network of a candidate's space.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock
from torch import nn

from autoprune.config import TrainingConfig
from autoprune.errors import ConfigError
from autoprune.evaluators._datasets import DatasetSplits
from autoprune.evaluators._records import EvalResult, Fidelity
from autoprune.evaluators._train import evaluate_accuracy, train_model
from autoprune.evaluators._weights import CHECKPOINT_KEYS, load_weights, weights_digest
from autoprune.spaces import Candidate, CostReport, build_model, cost_report

__all__ = ["CHECKPOINT_KEYS", "YOUR_WEIGHTS", "TrainedBase", "fidelity_of", "macs_of", "unpruned"]

_logger = logging.getLogger("autoprune.evaluators")

#: ``TrainedBase.get``'s label of a base read from your weights (``EvalResult.evaluator``).
YOUR_WEIGHTS = "your weights"


def macs_of(candidate: Candidate) -> int:
    """Multiply-accumulates of one inference of ``candidate`` (counted on the meta device)."""
    return cost_report(candidate).macs


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
    """The unpruned base model: trained once per run from scratch at the run's fidelity, or, with
    ``weights`` (``model.weights``), read from your file and evaluated, never trained.

    ``base`` is any candidate of the run's space at the resolution to train at (its widths,
    depths and bit-widths are ignored: see :func:`unpruned`). Cached in ``folder``
    (``model.pt`` of a trained base, and ``eval.json``); several processes of one run sharing
    ``folder`` (Ray workers of one node) train or evaluate it once between them under a file
    lock. ``snapshots`` are epochs after which its training's weights are kept too
    (``epoch{N}.pt``), for an evaluator that rewinds to them (:meth:`weights_at`).

    Your weights: a ``state_dict`` saved with ``torch.save(model.state_dict(), PATH)``, or a
    checkpoint dict holding one under a key of :data:`CHECKPOINT_KEYS`; a ``module.``
    (``DataParallel``) or ``_orig_mod.`` (``torch.compile``) prefix is stripped, and any other
    prefix that every key shares when the rest are the network's keys. The file is
    read with ``torch.load(weights_only=True)`` and loaded with ``strict=True`` into
    ``build_model(unpruned(base))``. Its accuracy is measured at the deploy input shape on the
    validation and the test split, with the images normalised by the training split's
    statistics as every candidate's are; ``eval.json`` records them with the file's SHA-256
    (``weights_sha256``: the one the run was configured with), and a file whose content changed
    is refused in one line. :meth:`reference` reads that record back for the report.

    Example:
        >>> from autoprune.config import TrainingConfig
        >>> from autoprune.evaluators import load_dataset
        >>> from autoprune.spaces import Candidate, build_model
        >>> resnet = Candidate(model="resnet20", num_classes=10, in_channels=1,
        ...                    input_shape=(1, 16, 16))
        >>> torch.save(build_model(resnet).state_dict(), "resnet20.pt")  # "your" weights
        >>> data = load_dataset("synthetic", val_samples=100, seed=0)
        >>> base = TrainedBase(resnet, data=lambda: data, training=TrainingConfig(), seed=0,
        ...                    folder=Path("runs/r/base"), weights="resnet20.pt")
        >>> model, result = base.get()  # loaded and evaluated: no training
        >>> result.evaluator, result.epochs
        ('your weights', 0)
        >>> reference = TrainedBase.reference(Path("runs/r/base"))
        >>> reference["input_shape"], 0 <= reference["test_accuracy"] <= 1
        ('1x16x16', True)
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
        weights: str | os.PathLike[str] | None = None,
        weights_sha256: str | None = None,
        snapshots: Sequence[int] = (),
    ) -> None:
        self.candidate = unpruned(base)
        self.snapshots = tuple(sorted(set(snapshots)))
        self._data = data
        self.training = training
        self.fidelity = fidelity_of(training)
        self.seed = seed
        self.folder = folder
        self.progress = progress
        self.weights = None if weights is None else Path(weights)
        self.weights_sha256 = weights_sha256
        self._model: nn.Module | None = None
        self._result: EvalResult | None = None
        self._rewound: dict[int, nn.Module] = {}

    @staticmethod
    def weights_digest(path: str | os.PathLike[str]) -> str:
        """SHA-256 (hex) of a weights file. Raises :class:`ConfigError` when it is missing."""
        return weights_digest(path)

    @staticmethod
    def check_weights(base: Candidate, path: str | os.PathLike[str]) -> str:
        """Load the weights in ``path`` into the unpruned network of ``base``'s space as
        :meth:`get` will; the file's SHA-256.

        Raises:
            ConfigError: the file is missing, not a PyTorch file, refused by
                ``weights_only=True``, holds no ``state_dict``, or does not fit the network
                (missing or unexpected keys, another shape, non-finite values).
        """
        return load_weights(unpruned(base), Path(path))[1]

    @staticmethod
    def reference(folder: Path) -> dict[str, Any] | None:
        """What ``folder`` records of a base read from your weights: ``weights`` (the path),
        ``weights_sha256``, ``val_accuracy``, ``test_accuracy`` (fractions), ``macs``,
        ``params``, ``input_shape`` (``"1x28x28"``); ``None`` without one."""
        record = folder / "eval.json"
        if not record.is_file():
            return None
        return json.loads(record.read_text()).get("reference")

    @property
    def source(self) -> str:
        """Where the base's weights come from, for logs: ``'your weights (PATH)'`` or
        ``'the trained base'``."""
        return "the trained base" if self.weights is None else f"{YOUR_WEIGHTS} ({self.weights})"

    @functools.cached_property
    def costs(self) -> CostReport:
        """Exact costs of one inference of the base model (counted once)."""
        return cost_report(self.candidate)

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
        if candidate.ranks or any(
            bits < 32 for _, bits in (*candidate.weight_bits, *candidate.activation_bits)
        ):
            return False
        costs = cost_report(candidate)
        return (costs.macs, costs.params) == (self.costs.macs, self.costs.params)

    def get(self) -> tuple[nn.Module, EvalResult]:
        """The base network (evaluation mode, CPU) and its validation result: trained (or
        loaded from ``folder``), or your weights and their accuracy."""
        if self._model is None or self._result is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            with FileLock(self.folder / ".lock"):
                if self.weights is not None:
                    self._model, self._result = self._from_weights(self.weights)
                else:
                    self._model, self._result = self._load() or self._train()
        return self._model, self._result

    def weights_at(self, epoch: int) -> nn.Module:
        """The base network as its training had it after ``epoch`` epochs (CPU, evaluation
        mode): 0 is its seeded initialisation, as :meth:`get` trains it from; a later epoch
        must be one of ``snapshots``, saved while the base trained (``epoch{N}.pt``). Kept per
        epoch: callers read it, never change it.

        Raises:
            ConfigError: the base is your weights (their training is not known), or ``folder``
                holds a base trained without that epoch's weights.
        """
        if self.weights is not None:
            raise ConfigError(
                f"the base is {self.source}, whose initial weights are not known; drop "
                f"model.weights to train the base here, or use evaluator finetune"
            )
        if epoch not in self._rewound:  # built and read once per process, not per trial
            self._rewound[epoch] = self._weights_at(epoch)
        return self._rewound[epoch]

    def _weights_at(self, epoch: int) -> nn.Module:
        model = build_model(self.candidate, seed=self.seed)
        if epoch == 0:
            return model.eval()
        self.get()  # trains the base and saves its snapshots, once
        path = self.folder / f"epoch{epoch}.pt"
        if not path.is_file():
            raise ConfigError(
                f"{self.folder} holds a base trained without its weights after epoch {epoch}; "
                f"delete {self.folder} to train the base again, keeping them"
            )
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return model.eval()

    def _saved(self, digest: str | None) -> dict[str, Any] | None:
        """``eval.json`` if ``folder`` holds one; :class:`ConfigError` if it is another base's
        (``digest``: your weights' SHA-256, ``None`` for a base trained here)."""
        record = self.folder / "eval.json"
        if not record.is_file():
            return None
        saved = json.loads(record.read_text())
        if digest is None:
            same = saved.get("seed") == self.seed and saved.get("weights_sha256") is None
        else:
            same = saved.get("weights_sha256") == digest
        if saved.get("candidate_hash") != self.candidate.hash or not same:
            there = f"candidate {saved.get('candidate_hash')}, " + (
                f"seed {saved.get('seed')}"
                if saved.get("weights_sha256") is None
                else f"weights {saved.get('weights')} with SHA-256 {saved['weights_sha256'][:12]}"
            )
            redo = "train" if digest is None else "evaluate"
            raise ConfigError(
                f"{self.folder} holds a base model trained for another configuration ({there}); "
                f"use a new run directory, or delete {self.folder} to {redo} the base again"
            )
        return saved

    def _load(self) -> tuple[nn.Module, EvalResult] | None:
        weights = self.folder / "model.pt"
        saved = self._saved(None)
        if saved is None or not weights.is_file():
            return None
        model = build_model(self.candidate, seed=0)
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        _logger.info("base model loaded from %s", self.folder)
        return model.eval(), EvalResult.from_dict(saved["eval"])

    def _train(self) -> tuple[nn.Module, EvalResult]:
        _logger.info(
            "training the base model once (%s); kept in %s", self.fidelity.label, self.folder
        )
        model = build_model(self.candidate, seed=self.seed)

        def snapshot(epoch: int, _planned: int | float, _accuracy: float) -> None:
            if epoch in self.snapshots:
                state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
                tmp = self.folder / f"epoch{epoch}.pt.tmp"
                torch.save(state, tmp)
                tmp.replace(self.folder / f"epoch{epoch}.pt")

        result = train_model(
            model,
            self._data(),
            fidelity=self.fidelity,
            input_shape=self.candidate.input_shape,
            seed=self.seed,
            lr=self.training.lr,
            momentum=self.training.momentum,
            weight_decay=self.training.weight_decay,
            on_epoch=snapshot if self.snapshots else None,
            progress=self.progress,
            device=self.training.device,
            precision=self.training.precision,
        )
        model.cpu()
        tmp = self.folder / "model.pt.tmp"
        torch.save(model.state_dict(), tmp)
        tmp.replace(self.folder / "model.pt")
        record = {"candidate_hash": self.candidate.hash, "seed": self.seed}
        self._write(record, result)
        return model.eval(), result

    def _from_weights(self, path: Path) -> tuple[nn.Module, EvalResult]:
        """Your weights, loaded; their accuracy measured once and kept in ``eval.json``."""
        model, digest = load_weights(self.candidate, path)
        if self.weights_sha256 is not None and digest != self.weights_sha256:
            raise ConfigError(
                f"model.weights {str(path)!r} changed since the run began (SHA-256 "
                f"{digest[:12]}, not {self.weights_sha256[:12]}); restore the file, or pass "
                f"a new run directory to start from it as it is"
            )
        model.eval()
        saved = self._saved(digest)
        if saved is not None:
            _logger.info("base model: %s (accuracy kept in %s)", self.source, self.folder)
            return model, EvalResult.from_dict(saved["eval"])
        _logger.info("base model: %s; measuring its accuracy (no training)", self.source)
        data, shape = self._data(), self.candidate.input_shape
        device = "cuda" if torch.cuda.is_available() else "cpu"
        accuracy = {
            split: evaluate_accuracy(model, data, split=split, input_shape=shape, device=device)
            for split in ("val", "test")
        }
        model.cpu()
        result = EvalResult(
            accuracy=accuracy["val"],
            split="val",
            fidelity=self.fidelity,
            input_hw=shape[1:],
            train_seconds=0.0,
            images_per_second=0.0,
            epochs=0,
            samples=0,
            seed=self.seed,
            train_loss=math.nan,
            evaluator=YOUR_WEIGHTS,
        )
        reference = {
            "label": f"unpruned, {self.source}",
            "weights": str(path),
            "weights_sha256": digest,
            "val_accuracy": accuracy["val"],
            "test_accuracy": accuracy["test"],
            "macs": self.costs.macs,
            "params": self.costs.params,
            "input_shape": "x".join(map(str, shape)),
        }
        record = {"candidate_hash": self.candidate.hash, "weights": str(path)}
        self._write({**record, "weights_sha256": digest, "reference": reference}, result)
        _logger.info(
            "base model: %s: val %.2f %%, test %.2f %%",
            self.source,
            100 * accuracy["val"],
            100 * accuracy["test"],
        )
        return model, result

    def _write(self, record: dict[str, Any], result: EvalResult) -> None:
        tmp = self.folder / "eval.json.tmp"
        tmp.write_text(json.dumps({**record, "eval": result.to_dict()}, indent=1))
        tmp.replace(self.folder / "eval.json")
