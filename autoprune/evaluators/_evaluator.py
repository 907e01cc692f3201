"""The evaluator interface and its registry: how a candidate's accuracy is obtained.

An evaluator turns a candidate into its trained network and an :class:`EvalResult` on the
validation split. A new one is one class in one file::

    @register_evaluator("my-eval")
    class MyEval(Evaluator):
        \"\"\"One line for ``autoprune search --help``.\"\"\"

        @dataclass(frozen=True)
        class Settings:  # its keys of the config's ``evaluator`` section
            epochs: int = 1

        def evaluate(self, candidate, *, seed, on_epoch=None):
            ...  # -> (network, EvalResult)

Call order: :func:`evaluator_settings` checks a config's ``evaluator`` section against the
class's ``Settings`` (before a run directory exists); :func:`create_evaluator` builds the
evaluator once per process; the search calls :meth:`Evaluator.evaluate` once per trained
trial, passing ``on_epoch`` for early stopping.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from torch import nn

from autoprune.config import EvaluatorConfig, TrainingConfig, parse_settings
from autoprune.errors import UnknownNameError
from autoprune.evaluators._base_model import TrainedBase, fidelity_of
from autoprune.evaluators._datasets import DatasetSplits
from autoprune.evaluators._records import EvalResult, Fidelity
from autoprune.evaluators._train import Distillation, EpochHook, train_model
from autoprune.spaces import Candidate

__all__ = [
    "Evaluator",
    "create_evaluator",
    "describe_evaluator",
    "evaluator_class",
    "evaluator_settings",
    "list_evaluators",
    "register_evaluator",
]

E = TypeVar("E", bound="type[Evaluator]")


@dataclass(frozen=True)
class NoSettings:
    """Settings of an evaluator that has none."""


class Evaluator(abc.ABC):
    """Turns a candidate into its trained network and validation result.

    Class attributes: :attr:`name` (set by :func:`register_evaluator`), :attr:`Settings` (a
    frozen dataclass of its options), :attr:`needs_base` (it starts from the trained base
    model), :attr:`trains` (``False``: :attr:`EvalResult.accuracy` holds a score named by
    :attr:`EvalResult.metric`, not a trained accuracy).
    """

    name: ClassVar[str]
    Settings: ClassVar[type] = NoSettings
    needs_base: ClassVar[bool] = False
    trains: ClassVar[bool] = True

    def __init__(
        self,
        settings: Any,
        *,
        data: Callable[[], DatasetSplits],
        training: TrainingConfig,
        base: TrainedBase,
        progress: bool = False,
    ) -> None:
        self.settings = settings
        self.data = data
        self.training = training
        self.fidelity = fidelity_of(training)
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

    @classmethod
    def check_run(cls, settings: Any, *, training: TrainingConfig, weights: str | None) -> None:
        """Raise :class:`ConfigError` when ``settings`` cannot work with the run's ``training``
        or its ``model.weights`` (checked before anything is written); by default nothing."""
        return None

    @classmethod
    def base_snapshots(cls, settings: Any) -> tuple[int, ...]:
        """Epochs after which the trained base's weights are kept for this evaluator
        (:meth:`TrainedBase.weights_at`); by default none."""
        return ()

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
        """:func:`train_model` with the run's optimiser settings."""
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
            device=self.training.device,
            precision=self.training.precision,
        )


_EVALUATORS: dict[str, type[Evaluator]] = {}


def register_evaluator(name: str) -> Callable[[E], E]:
    """Register an :class:`Evaluator` subclass under ``name`` (the string used in YAML and
    ``--evaluator``) and set its :attr:`~Evaluator.name`."""

    def decorator(cls: E) -> E:
        known = _EVALUATORS.get(name)
        assert known is None or known.__qualname__ == cls.__qualname__, (
            f"evaluator {name!r} registered twice"
        )
        cls.name = name
        _EVALUATORS[name] = cls
        return cls

    return decorator


def list_evaluators() -> list[str]:
    """Names of the registered evaluators, sorted."""
    return sorted(_EVALUATORS)


def evaluator_class(name: str) -> type[Evaluator]:
    """The evaluator class registered as ``name``; an unknown name lists the valid ones."""
    if name not in _EVALUATORS:
        raise UnknownNameError("evaluator", name, list_evaluators())
    return _EVALUATORS[name]


def describe_evaluator(name: str) -> str:
    """First line of the evaluator's docstring (for ``autoprune search --help``)."""
    return (evaluator_class(name).__doc__ or name).strip().splitlines()[0]


def evaluator_settings(config: EvaluatorConfig, name: str | None = None) -> Any:
    """The ``Settings`` of evaluator ``name`` (default: the one ``config`` names), built from
    its section of ``config`` and completed with defaults. Every section given is checked
    first, so a typo in another evaluator's settings is reported too.

    Raises:
        UnknownNameError: an evaluator (the name, or a settings section) is not registered.
        ConfigError: a setting is unknown to its evaluator, of the wrong type or out of range.

    Example:
        >>> config = EvaluatorConfig(name="distill", settings={"distill": {"temperature": 2}})
        >>> evaluator_settings(config)
        Distill.Settings(temperature=2.0, weight=0.9)
    """
    name = config.name if name is None else name
    evaluator_class(name)
    for owner in config.settings:
        _parse(owner, config)
    return _parse(name, config)


def _parse(name: str, config: EvaluatorConfig) -> Any:
    cls = evaluator_class(name)
    return parse_settings(cls.Settings, config.settings.get(name), f"evaluator.{name}")


def create_evaluator(
    config: EvaluatorConfig,
    *,
    data: Callable[[], DatasetSplits],
    training: TrainingConfig,
    base: TrainedBase,
    progress: bool = False,
) -> Evaluator:
    """The evaluator ``config`` names, with its settings.

    ``data`` loads the run's data set on first use; ``base`` is the run's unpruned base model
    (trained on first use, by evaluators that need it).

    Raises:
        UnknownNameError: the name is not registered.
        ConfigError: an option is invalid for it.
    """
    settings = evaluator_settings(config)
    return evaluator_class(config.name)(
        settings, data=data, training=training, base=base, progress=progress
    )
