"""A user's own ``torch.utils.data.Dataset`` objects turned into streamed splits.

What :meth:`DatasetSplits.from_datasets <autoprune.evaluators.DatasetSplits.from_datasets>`
does: the image shape and dtype come from each Dataset's first item; the class count from
``num_classes``, ``class_names``, or labels read without touching the images, from the
attributes torch's and torchvision's data sets carry (``targets``, ``labels``, the second
tensor of a ``TensorDataset``, through ``Subset`` and ``ConcatDataset``). A Dataset without
such labels needs ``num_classes``: reading every item to find the largest label would decode a
whole ImageNet.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import ConcatDataset, Dataset, Subset, TensorDataset

from autoprune.errors import ConfigError
from autoprune.evaluators._streaming import (
    STATS_SAMPLES,
    StreamedSplit,
    check_stats,
    sampled_stats,
)

__all__ = ["streamed_fields"]

_logger = logging.getLogger("autoprune.evaluators.datasets")
_CONTRACT = "(image tensor C x H x W, uint8 or float in [0, 1]; int label)"
# Float pixels a little outside [0, 1] are rounding; far outside, an already normalised image.
_SLACK = 1e-3


def _first(dataset: Any, role: str) -> tuple[tuple[int, int, int], bool]:
    """The image shape ``(C, H, W)`` of ``dataset[0]`` and whether it is ``uint8``."""
    if not (hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__")):
        raise ConfigError(
            f"{role} must be a map-style torch.utils.data.Dataset (with __getitem__ and "
            f"__len__), but got a {type(dataset).__name__}; wrap it in a Dataset"
        )
    if len(dataset) < 1:
        raise ConfigError(f"the {role} Dataset is empty; pass one with images")
    try:
        item = dataset[0]
    except Exception as exc:
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())
        raise ConfigError(
            f"{role}[0] cannot be read ({reason}); its Dataset must return {_CONTRACT}"
        ) from None
    if not (isinstance(item, tuple | list) and len(item) == 2):
        raise ConfigError(
            f"{role}[0] is a {type(item).__name__}, not a pair; its Dataset must return {_CONTRACT}"
        )
    image, label = item
    if not isinstance(image, torch.Tensor) or image.dim() != 3:
        what = f"tensor of shape {tuple(image.shape)}" if isinstance(image, torch.Tensor) else ""
        raise ConfigError(
            f"{role}[0]'s image is a {what or type(image).__name__}, not a tensor C x H x W; "
            f"convert it in the Dataset (e.g. torchvision.transforms.PILToTensor())"
        )
    if image.dtype != torch.uint8 and not image.is_floating_point():
        raise ConfigError(
            f"{role}[0]'s image is {image.dtype}; use uint8 (0..255) or float in [0, 1] "
            f"(e.g. torchvision.transforms.ToTensor())"
        )
    if image.is_floating_point() and image.numel():
        low, high = float(image.min()), float(image.max())
        if low < -_SLACK or high > 1 + _SLACK:
            raise ConfigError(
                f"{role}[0]'s image holds values in [{low:.3g}, {high:.3g}], not [0, 1]; "
                f"autoprune normalises with the training split's mean and std itself: drop "
                f"transforms.Normalize from the Dataset's transform"
            )
    if isinstance(label, torch.Tensor) and label.numel() != 1 or isinstance(label, float | str):
        raise ConfigError(f"{role}[0]'s label is {label!r}, not an int; labels are 0..N-1")
    c, h, w = (int(s) for s in image.shape)
    return (c, h, w), image.dtype == torch.uint8


def _as_labels(values: Any, n: int) -> torch.Tensor | None:
    """``values`` as a 1-D ``int64`` tensor of length ``n``, or ``None`` when it is not one."""
    try:
        labels = torch.as_tensor(np.asarray(values))
    except (TypeError, ValueError, RuntimeError):
        return None
    if labels.dim() != 1 or len(labels) != n or labels.is_floating_point() or labels.is_complex():
        return None
    return labels.to(torch.int64)


def cheap_labels(dataset: Any) -> torch.Tensor | None:
    """Every label of ``dataset``, read from its attributes, not its items; ``None`` when it
    has none of ``targets``, ``labels``, a ``TensorDataset``'s second tensor, or a ``Subset`` /
    ``ConcatDataset`` of those.

    Example:
        >>> cheap_labels(TensorDataset(torch.zeros(3, 1, 2, 2), torch.tensor([2, 0, 1])))
        tensor([2, 0, 1])
    """
    n = len(dataset)
    if isinstance(dataset, Subset):
        inner = cheap_labels(dataset.dataset)
        if inner is None:
            return None
        return inner[torch.as_tensor(np.asarray(dataset.indices, dtype=np.int64))]
    if isinstance(dataset, ConcatDataset):
        parts = [cheap_labels(d) for d in dataset.datasets]
        return None if any(p is None for p in parts) else torch.cat(parts)  # type: ignore[arg-type]
    if isinstance(dataset, TensorDataset):
        return _as_labels(dataset.tensors[1], n) if len(dataset.tensors) > 1 else None
    for name in ("targets", "labels"):
        values = getattr(dataset, name, None)
        if values is not None and not callable(values):
            labels = _as_labels(values, n)
            if labels is not None:
                return labels
    return None


def _class_names(dataset: Any) -> tuple[str, ...]:
    """``dataset.classes`` (torchvision's class names), through subsets; ``()`` without."""
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    classes = getattr(dataset, "classes", None)
    if isinstance(classes, Sequence) and classes and all(isinstance(c, str) for c in classes):
        return tuple(classes)
    return ()


def _classes(
    splits: dict[str, Any], num_classes: int | None, class_names: Sequence[str]
) -> tuple[int, tuple[str, ...]]:
    names = tuple(str(c) for c in class_names) or _class_names(splits["train"])
    labels = {role: cheap_labels(d) for role, d in splits.items()}
    known = [y for y in labels.values() if y is not None and len(y)]
    if num_classes is None:
        if class_names:
            num_classes = len(names)
        elif labels["train"] is not None:
            num_classes = max(int(y.max()) for y in known) + 1
            num_classes = max(num_classes, len(names))
        else:
            raise ConfigError(
                f"cannot tell the number of classes of the train Dataset (a "
                f"{type(splits['train']).__name__}) without reading every item: it has no "
                f"targets or labels attribute; pass num_classes=N"
            )
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ConfigError(f"num_classes must be an int >= 2, but got {num_classes!r}")
    if names and len(names) != num_classes:
        raise ConfigError(
            f"class_names has {len(names)} names but there are {num_classes} classes; pass "
            f"one name per class, or none"
        )
    for role, y in labels.items():
        if y is not None and len(y) and (int(y.min()) < 0 or int(y.max()) >= num_classes):
            raise ConfigError(
                f"the {role} Dataset has labels in [{int(y.min())}, {int(y.max())}], outside "
                f"0..{num_classes - 1}; pass num_classes={max(int(y.max()) + 1, 2)} or fix them"
            )
    return num_classes, names


def streamed_fields(
    train: Dataset,
    val: Dataset | None,
    test: Dataset | None,
    *,
    num_classes: int | None,
    class_names: Sequence[str],
    val_samples: int | None,
    seed: int,
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
    num_workers: int | None,
    stats_samples: int = STATS_SAMPLES,
) -> dict[str, Any]:
    """The fields of a streamed ``DatasetSplits`` (all but ``name`` and ``seed``)."""
    shape, is_uint8 = _first(train, "train")
    given = {"train": train, "val": val, "test": test}
    for role in ("val", "test"):
        if given[role] is not None:
            other, other_uint8 = _first(given[role], role)
            if other != shape or other_uint8 != is_uint8:
                kind = "uint8" if is_uint8 else "float"
                raise ConfigError(
                    f"{role}[0] is {other} {'uint8' if other_uint8 else 'float'} but train[0] "
                    f"is {shape} {kind}; every split's images must have one shape and dtype"
                )
    number, names = _classes(
        {k: v for k, v in given.items() if v is not None}, num_classes, class_names
    )
    whole = StreamedSplit(train, num_workers=num_workers)
    if val is None:
        n = len(whole)
        carve = max(1, min(5000, n // 10)) if val_samples is None else val_samples
        if isinstance(carve, bool) or not isinstance(carve, int) or not 1 <= carve < n:
            raise ConfigError(
                f"val_samples must be an integer in [1, {n - 1}] ({n} training images), but "
                f"got {val_samples!r}; pass e.g. val_samples={max(1, min(5000, n // 10))}"
            )
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        val_split, train_split = whole.subset(perm[:carve]), whole.subset(perm[carve:])
    else:
        val_split, train_split = StreamedSplit(val, num_workers=num_workers), whole
    if test is None:
        _logger.warning(
            "no test Dataset: the test split is the validation split, so final figures are not "
            "held out; pass test= for unbiased ones"
        )
        test_split = val_split
    else:
        test_split = StreamedSplit(test, num_workers=num_workers)
    if (mean is None) != (std is None):
        raise ConfigError("pass mean and std together, or neither to have them computed")
    if mean is None or std is None:
        stats = sampled_stats(train_split, seed=seed, samples=stats_samples)
    else:
        stats = check_stats(mean, std, shape[0])
    return {
        "train": train_split,
        "val": val_split,
        "test": test_split,
        "num_classes": number,
        "input_shape": shape,
        "mean": stats[0],
        "std": stats[1],
        "class_names": names,
    }
