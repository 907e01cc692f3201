"""Retrain chosen trials at full fidelity, so that their exported accuracy is final.

A search trains every candidate at a low fidelity (a subset of the data, few epochs, perhaps a
reduced resolution): enough to rank candidates (``benchmarks/rethinking.py`` measures how well),
not to quote their accuracy. :class:`Retrainer` trains a chosen architecture again from a fresh
initialisation, at its deploy input shape, on the whole training split by default, and measures
it on the validation and the test split. The default method is Scratch-B (the base model's
training compute), the most accurate of Liu et al.'s methods in ``benchmarks/rethinking.py``.

Each retrained trial is kept in ``RUN_DIR/retrain/<settings>/trial-NNNN/`` (``model.pt`` and
``retrain.json``, the latter written last): an interrupted retrain keeps every trial that
finished, and the same command continues with the rest.

Example:
    >>> settings = RetrainSettings(epochs=1, samples=64)  # a run's default: all samples
    >>> run = RunDir("runs/demo")  # a finished search
    >>> retrainer = Retrainer(run, settings)
    >>> model, retrained = retrainer.retrain(run.records()[0])  # the unpruned base
    >>> retrained.label  # Scratch-B: the base's compute, so the base's own epochs
    ... # doctest: +ELLIPSIS
    'scratch-b at 64 samples x 1 epoch @ 16x16, seed ...: val ... %, test ... %'
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autoprune.config import EvaluatorConfig
from autoprune.errors import ConfigError, RunDirError
from autoprune.evaluators import (
    evaluate_accuracy,
    evaluator_class,
    fidelity_of,
    list_evaluators,
)
from autoprune.search import RunDir, TrialRecord, assemble, candidate_seed
from autoprune.spaces import Candidate, build_model

__all__ = ["RetrainSettings", "Retrained", "Retrainer", "retrain_evaluators"]

_logger = logging.getLogger("autoprune.retrain")


def retrain_evaluators() -> list[str]:
    """The registered evaluators that train, and so can retrain (a proxy only scores)."""
    return [name for name in list_evaluators() if evaluator_class(name).trains]


@dataclass(frozen=True)
class RetrainSettings:
    """How chosen trials are retrained.

    Attributes:
        evaluator: One of :func:`retrain_evaluators`; its settings (Scratch-B's cap, the
            distillation temperature) are the run's when the run searched with it, else its
            defaults.
        samples: Training images per epoch; ``None`` for the whole training split.
        epochs: Passes over them (Scratch-B scales them as in the search); ``None`` for the
            run's ``training.epochs``.
        seed: Training seed; ``None`` for the one the search gave the architecture.
    """

    evaluator: str = "scratch-b"
    samples: int | None = None
    epochs: int | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.evaluator not in retrain_evaluators():
            raise ConfigError(
                f"cannot retrain with evaluator {self.evaluator!r}; valid: "
                f"{', '.join(retrain_evaluators())} (a proxy scores without training)"
            )
        if self.samples is not None and self.samples < 1:
            raise ConfigError(f"retrain samples must be >= 1, but got {self.samples}; or omit it")
        if self.epochs is not None and self.epochs < 1:
            raise ConfigError(f"retrain epochs must be >= 1, but got {self.epochs}")

    def slug(self, run_epochs: int) -> str:
        """Folder name of these settings, e.g. ``'scratch-b-all-x3-seed-search'``."""
        samples = "all" if self.samples is None else str(self.samples)
        epochs = run_epochs if self.epochs is None else self.epochs
        seed = "search" if self.seed is None else str(self.seed)
        return f"{self.evaluator}-{samples}-x{epochs}-seed-{seed}"


@dataclass(frozen=True)
class Retrained:
    """One trial retrained: its accuracies, how they were obtained, and where it is kept.

    Attributes:
        trial: The trial's number in its run.
        candidate_hash: The architecture's hash (a guard against a stale folder).
        evaluator: The method it was retrained with.
        fidelity: Samples, epochs and training resolution, e.g. ``'all samples x 3 epochs @
            28x28'`` (Scratch-B's scaled epochs included).
        seed: The training seed.
        val_accuracy: Top-1 on the validation split, in [0, 1].
        test_accuracy: Top-1 on the test split, in [0, 1].
        seconds: Wall-clock seconds of training and both evaluations.
    """

    trial: int
    candidate_hash: str
    evaluator: str
    fidelity: str
    seed: int
    val_accuracy: float
    test_accuracy: float
    seconds: float

    @property
    def label(self) -> str:
        return (
            f"{self.evaluator} at {self.fidelity}, seed {self.seed}: "
            f"val {100 * self.val_accuracy:.2f} %, test {100 * self.test_accuracy:.2f} %"
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Retrained:
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls)})


class Retrainer:
    """Retrains trials of one run with one :class:`RetrainSettings`.

    The run's data set, split seed, optimiser and evaluator settings are read from its
    ``config.yaml``; the training fidelity is replaced by the settings' at resolution scale 1
    (the deploy shape). The data set is loaded on the first trial that is not kept yet.
    """

    def __init__(self, run: RunDir, settings: RetrainSettings, *, progress: bool = False):
        config = run.config()
        training = dataclasses.replace(
            config.training,
            samples=settings.samples,
            epochs=config.training.epochs if settings.epochs is None else settings.epochs,
            resolution_scale=1.0,
        )
        evaluator = config.evaluator
        if evaluator.name != settings.evaluator:
            evaluator = EvaluatorConfig(name=settings.evaluator)
        self.run = run
        self.settings = settings
        self.config = config
        self.training = training
        self.folder = run.retrain_dir(settings.slug(config.training.epochs))
        self.parts = assemble(
            dataclasses.replace(config, training=training, evaluator=evaluator), progress=progress
        )
        self.base = self.parts.trained_base(self.folder / "base", seed=settings.seed)
        self.evaluator = self.parts.evaluator(self.base)

    def kept(self, record: TrialRecord) -> Retrained | None:
        """The trial's retrained result if these settings retrained it before, else ``None``."""
        path = self._trial_folder(record) / "retrain.json"
        if not path.is_file():
            return None
        kept = Retrained.from_dict(json.loads(path.read_text()))
        if kept.candidate_hash != record.candidate_hash:
            raise RunDirError(
                f"{path} was retrained for architecture {kept.candidate_hash}, not trial "
                f"{record.number}'s {record.candidate_hash}; delete {path.parent} to retrain it"
            )
        return kept

    def retrain(self, record: TrialRecord) -> tuple[nn.Module, Retrained]:
        """Retrain one trial's architecture (or load the kept result); its network (evaluation
        mode, CPU) and result."""
        if record.candidate is None or record.candidate_hash is None or not record.feasible:
            raise RunDirError(
                f"trial {record.number} of {str(self.run.path)!r} has no feasible architecture "
                f"to retrain (state {record.state}, feasible {record.feasible}); pick one "
                f"listed by `autoprune report {self.run.path}`"
            )
        candidate = Candidate.from_dict(record.candidate)
        folder = self._trial_folder(record)
        kept = self.kept(record)
        if kept is not None:
            model = build_model(candidate, seed=0)
            model.load_state_dict(torch.load(folder / "model.pt", weights_only=True))
            _logger.info("trial %d: retrained before: %s", record.number, kept.label)
            return model.eval(), kept
        started = time.perf_counter()
        seed = self._seed(candidate)
        _logger.info(
            "trial %d: retraining %s with %s at %s",
            record.number,
            candidate.hash,
            self.evaluator.describe(),
            fidelity_of(self.training).describe(candidate.input_shape[1:]),
        )
        if self.base.is_base(candidate):  # as in the search: the base is trained once
            model, result = self.base.get()
            seed = self.base.seed
        else:
            model, result = self.evaluator.evaluate(candidate, seed=seed)
        model = model.cpu().eval()
        test = evaluate_accuracy(
            model,
            self.parts.load_data(),
            split="test",
            input_shape=candidate.input_shape,
            resolution_scale=1.0,
        )
        retrained = Retrained(
            trial=record.number,
            candidate_hash=candidate.hash,
            evaluator=self.settings.evaluator,
            fidelity=result.fidelity.describe(candidate.input_shape[1:]),
            seed=seed,
            val_accuracy=result.accuracy,
            test_accuracy=test,
            seconds=round(time.perf_counter() - started, 1),
        )
        folder.mkdir(parents=True, exist_ok=True)
        for name, write in (
            ("model.pt", lambda p: torch.save(model.state_dict(), p)),
            ("retrain.json", lambda p: p.write_text(json.dumps(retrained.to_dict(), indent=1))),
        ):
            tmp = folder / f"{name}.tmp"
            write(tmp)
            tmp.replace(folder / name)  # retrain.json last: it marks the trial as kept
        _logger.info("trial %d: %s in %.0f s", record.number, retrained.label, retrained.seconds)
        return model, retrained

    def _seed(self, candidate: Candidate) -> int:
        if self.settings.seed is not None:
            return self.settings.seed
        return candidate_seed(candidate, self.config.search.seed)

    def _trial_folder(self, record: TrialRecord) -> Path:
        return self.folder / f"trial-{record.number:04d}"
