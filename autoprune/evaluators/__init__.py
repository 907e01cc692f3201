"""Evaluators: data sets, training at a fidelity, and a candidate's accuracy.

A candidate's accuracy comes from its run's :class:`Evaluator` (``scratch-e``, ``scratch-b``,
``finetune``, ``distill`` or ``proxy``: the comparison of Liu et al., ICLR 2019), training at a
:class:`Fidelity` (samples, epochs, resolution) and measuring on the validation split carved
from the training set; the test split is kept for final figures.

Example:
    >>> from autoprune.evaluators import Fidelity, load_dataset, train_model
    >>> data = load_dataset("fashion-mnist", val_samples=5000, seed=0)  # doctest: +SKIP
    >>> result = train_model(model, data, fidelity=Fidelity(samples=20000, epochs=2),
    ...                             input_shape=(1, 28, 28), seed=0)  # doctest: +SKIP
    >>> result.label  # doctest: +SKIP
    'val acc 87.10% (20000 samples x 2 epochs @ 28x28)'
"""

from __future__ import annotations

from autoprune.evaluators._datasets import (
    DatasetSplits,
    RawDataset,
    Split,
    list_datasets,
    load_dataset,
    read_idx,
    register_dataset,
)
from autoprune.evaluators._evaluators import (
    EVALUATORS,
    PROXIES,
    Evaluator,
    TrainedBase,
    create_evaluator,
    fidelity_of,
    unpruned,
)
from autoprune.evaluators._proxies import log_synflow, naswot
from autoprune.evaluators._records import EvalResult, Fidelity
from autoprune.evaluators._train import (
    Distillation,
    EpochHook,
    TrainingDiverged,
    evaluate_accuracy,
    train_model,
)

__all__ = [
    "EVALUATORS",
    "PROXIES",
    "DatasetSplits",
    "Distillation",
    "EpochHook",
    "EvalResult",
    "Evaluator",
    "Fidelity",
    "RawDataset",
    "Split",
    "TrainedBase",
    "TrainingDiverged",
    "create_evaluator",
    "evaluate_accuracy",
    "fidelity_of",
    "unpruned",
    "list_datasets",
    "load_dataset",
    "log_synflow",
    "naswot",
    "read_idx",
    "register_dataset",
    "train_model",
]
