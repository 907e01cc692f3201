"""Records of the evaluators: the training fidelity and the result of one evaluation."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

from autoprune.errors import ConfigError

__all__ = ["EvalResult", "Fidelity", "SplitName"]

SplitName = Literal["train", "val", "test"]
_SPLITS: tuple[str, ...] = ("train", "val", "test")


def _check_keys(kind: str, given: dict[str, Any], cls: type) -> None:
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(given) - set(names))
    if unknown:
        raise ConfigError(
            f"unknown {kind} field(s) {', '.join(map(repr, unknown))}; valid fields: "
            f"{', '.join(names)}; remove or rename them"
        )


def _amount(samples: int | None, epochs: float) -> str:
    """``'20000 samples x 2 epochs'``, ``'all samples x 1 epoch'``, ``'20000 samples x 1.43
    epochs'``: the training amount."""
    images = "all samples" if samples is None else f"{samples} samples"
    return f"{images} x {epochs:g} epoch{'' if epochs == 1 else 's'}"


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True, kw_only=True)
class Fidelity:
    """How cheaply a candidate is trained: sample count, epochs and training resolution.

    Low fidelities (few samples, few epochs, reduced resolution: the reduced settings of EcoNAS,
    Zhou et al., CVPR 2020) rank candidates cheaply; every accuracy carries the fidelity it was
    obtained at, and nothing low-fidelity is reported as final.

    Attributes:
        samples: Training images used per epoch (a deterministic subset chosen by the seed);
            ``None`` means the whole training split.
        epochs: Passes over those images (>= 1). A fractional part trains that share of the
            batches of one more pass (as Hugging Face's ``Trainer`` reads a fractional
            ``num_train_epochs``): ``1.5`` is one pass and half of a second. Scratch-B's
            compute-matched schedules are fractional.
        resolution_scale: Training and evaluation resolution relative to the candidate's deploy
            resolution, in (0, 1]; 1.0 trains at the deploy resolution.
        batch_size: Images per SGD step (>= 1).

    Example:
        >>> f = Fidelity(samples=20000, epochs=2)
        >>> f.describe((28, 28))
        '20000 samples x 2 epochs @ 28x28'
        >>> Fidelity(samples=None, epochs=3, resolution_scale=0.5).describe((28, 28))
        'all samples x 3 epochs @ 14x14'
        >>> Fidelity(samples=20000, epochs=1.43).label
        '20000 samples x 1.43 epochs @ 1x res'
    """

    samples: int | None
    epochs: int | float
    resolution_scale: float = 1.0
    batch_size: int = 128

    def __post_init__(self) -> None:
        if self.samples is not None and (not _is_int(self.samples) or self.samples < 1):
            raise ConfigError(
                f"fidelity.samples must be a positive integer or null (all), but got "
                f"{self.samples!r}; use e.g. samples: 20000"
            )
        epochs = self.epochs
        if (
            isinstance(epochs, bool)
            or not isinstance(epochs, int | float)
            or not math.isfinite(epochs)
            or epochs < 1
        ):
            raise ConfigError(
                f"fidelity.epochs must be a number >= 1, but got {epochs!r}; use e.g. epochs: 2"
            )
        if isinstance(epochs, float) and epochs.is_integer():
            object.__setattr__(self, "epochs", int(epochs))
        scale = self.resolution_scale
        if (
            isinstance(scale, bool)
            or not isinstance(scale, int | float)
            or not math.isfinite(scale)
            or not 0.0 < scale <= 1.0
        ):
            raise ConfigError(
                f"fidelity.resolution_scale must be a number in (0, 1] (1.0 = deploy "
                f"resolution), but got {scale!r}; use e.g. resolution_scale: 0.5"
            )
        object.__setattr__(self, "resolution_scale", float(scale))
        if not _is_int(self.batch_size) or self.batch_size < 1:
            raise ConfigError(
                f"fidelity.batch_size must be an integer >= 1, but got {self.batch_size!r}; "
                f"use e.g. batch_size: 128"
            )

    def train_hw(self, input_hw: tuple[int, int]) -> tuple[int, int]:
        """Training resolution ``(height, width)`` in pixels for a deploy resolution.

        Each side is ``round(side * resolution_scale)``, at least 1 pixel.

        Example:
            >>> Fidelity(samples=None, epochs=1, resolution_scale=0.75).train_hw((28, 28))
            (21, 21)
        """
        h, w = input_hw
        return (
            max(1, round(h * self.resolution_scale)),
            max(1, round(w * self.resolution_scale)),
        )

    @property
    def label(self) -> str:
        """Short label without pixels, e.g. ``'20000 samples x 2 epochs @ 0.5x res'``."""
        return f"{_amount(self.samples, self.epochs)} @ {self.resolution_scale:g}x res"

    def describe(self, input_hw: tuple[int, int]) -> str:
        """Label with the training resolution for a deploy resolution ``input_hw`` (pixels).

        Example:
            >>> Fidelity(samples=10000, epochs=2).describe((28, 28))
            '10000 samples x 2 epochs @ 28x28'
        """
        h, w = self.train_hw(input_hw)
        return f"{_amount(self.samples, self.epochs)} @ {h}x{w}"

    def to_dict(self) -> dict[str, Any]:
        """JSON/YAML-ready dict; :meth:`from_dict` inverts it."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Fidelity:
        """Build from a dict such as ``{"samples": 20000, "epochs": 2}``; validates every field."""
        _check_keys("fidelity", data, cls)
        return cls(**data)


@dataclass(frozen=True, kw_only=True)
class EvalResult:
    """Accuracy of one candidate trained from scratch, with the fidelity it was obtained at.

    Attributes:
        accuracy: Top-1 accuracy on ``split``, a fraction in [0, 1].
        split: The split the accuracy was measured on (``"val"`` during search).
        fidelity: The training fidelity.
        input_hw: Resolution ``(height, width)`` in pixels that the model was trained and
            evaluated at (the deploy resolution scaled by ``fidelity.resolution_scale``).
        train_seconds: Wall-clock seconds spent in the training loop (evaluation excluded).
        eval_seconds: Wall-clock seconds spent measuring ``accuracy`` (and the accuracies after
            earlier epochs); 0 where the result was not measured by a training run.
        images_per_second: Training throughput, images (forward + backward) per second.
        epochs: Epochs trained (fractional when the last pass was partial).
        samples: Training images actually used per epoch (``fidelity.samples`` resolved against
            the size of the training split).
        seed: Seed of the subset choice, the shuffling and any randomness inside the model.
        train_loss: Mean training loss over the last epoch (nats; cross-entropy, or the
            distillation loss when distilled).
        evaluator: The evaluator that produced the result (``"scratch-e"``, ``"scratch-b"``,
            ``"finetune"``, ``"distill"`` or ``"proxy"``).
        metric: What ``accuracy`` holds: ``"accuracy"`` (top-1, a fraction) for every
            evaluator that trains; the proxy's name (``"log_synflow"``, ``"naswot"``) for the
            zero-cost proxy evaluator, whose score is not a fraction.
        intermediate: Validation accuracy after each epoch before the last, when it was
            measured (multi-objective early stopping reads it); empty otherwise.

    Example:
        >>> r = EvalResult(accuracy=0.871, split="val", fidelity=Fidelity(samples=20000, epochs=2),
        ...                input_hw=(28, 28), train_seconds=80.0, images_per_second=500.0,
        ...                epochs=2, samples=20000, seed=0, train_loss=0.36)
        >>> EvalResult.from_dict(r.to_dict()) == r
        True
    """

    accuracy: float
    split: SplitName
    fidelity: Fidelity
    input_hw: tuple[int, int]
    train_seconds: float
    images_per_second: float
    epochs: int | float
    samples: int
    seed: int
    train_loss: float
    evaluator: str = "scratch-e"
    metric: str = "accuracy"
    intermediate: tuple[float, ...] = ()
    eval_seconds: float = 0.0

    def __post_init__(self) -> None:
        assert self.split in _SPLITS, self.split
        object.__setattr__(self, "input_hw", (int(self.input_hw[0]), int(self.input_hw[1])))
        object.__setattr__(self, "intermediate", tuple(float(a) for a in self.intermediate))

    @property
    def label(self) -> str:
        """Human-readable summary, e.g. ``'val acc 87.10% (20000 samples x 2 epochs @ 28x28)'``."""
        h, w = self.input_hw
        if self.metric != "accuracy":
            return f"{self.metric} {self.accuracy:.4g} (at initialisation @ {h}x{w})"
        how = "" if self.evaluator == "scratch-e" else f", {self.evaluator}"
        return (
            f"{self.split} acc {100 * self.accuracy:.2f}% "
            f"({_amount(self.samples, self.epochs)} @ {h}x{w}{how})"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON/YAML-ready dict (tuples become lists); :meth:`from_dict` inverts it."""
        out = dataclasses.asdict(self)
        out["fidelity"] = self.fidelity.to_dict()
        out["input_hw"] = list(self.input_hw)
        out["intermediate"] = list(self.intermediate)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvalResult:
        """Inverse of :meth:`to_dict`."""
        _check_keys("eval result", data, cls)
        fields = dict(data)
        fields["fidelity"] = Fidelity.from_dict(fields["fidelity"])
        fields["input_hw"] = tuple(fields["input_hw"])
        fields["intermediate"] = tuple(fields.get("intermediate", ()))
        return cls(**fields)
