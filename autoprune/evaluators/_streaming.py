"""Streamed splits: images read item by item from a :class:`torch.utils.data.Dataset`.

A :class:`StreamedSplit` holds no pixels: the trainer asks it for batches of indices, and a
:class:`~torch.utils.data.DataLoader` with ``num_workers`` processes reads, collates and
returns them (``uint8``, or ``float`` in [0, 1]); conversion to float, normalisation and
resizing happen per batch in the trainer, as for images held in memory. An item that cannot be
read becomes a one-line :class:`~autoprune.errors.DataError` in the training process, not a
worker's traceback. Subsets (the validation carve-out, ``training.samples``) are index arrays
over the same Dataset; nothing is materialised.

The normalisation statistics of a streamed training split come from a seeded sample of
:data:`STATS_SAMPLES` images (:func:`sampled_stats`), not a pass over the whole set.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from autoprune.errors import AutopruneError, ConfigError, DataError

__all__ = [
    "STATS_SAMPLES",
    "StreamedSplit",
    "default_num_workers",
    "sampled_stats",
    "to_unit",
]

_logger = logging.getLogger("autoprune.evaluators.datasets")

#: Training images the normalisation statistics of a streamed split are computed from (all of
#: them when the split is smaller): a seeded sample, read once and cached where the data set
#: has an identity (``imagefolder``); its mean differs from the whole set's by the spread of
#: per-image means over about 45 (the square root of 2,048).
STATS_SAMPLES = 2048
_STATS_BATCH = 64
_CONTRACT = "(image tensor C x H x W, uint8 or float in [0, 1]; int label)"


def default_num_workers() -> int:
    """Reading processes when ``data.num_workers`` is ``null``: ``min(4, CPUs)``, e.g. 2."""
    return min(4, os.cpu_count() or 1)


def check_num_workers(value: object) -> int:
    """``value`` (an int >= 0, or ``None`` for :func:`default_num_workers`) as an int."""
    workers = default_num_workers() if value is None else value
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ConfigError(
            f"data.num_workers must be an int >= 0 (0 decodes in this process) or null for "
            f"{default_num_workers()}, but got {value!r}"
        )
    return workers


class _Subset(Subset):
    """Items ``indices`` (an ``int64`` numpy array) of ``dataset``; a subset of a subset is one
    index array over the original Dataset (no chain of wrappers, no Python list of ints)."""

    def __init__(self, dataset: Dataset, indices: np.ndarray) -> None:
        if isinstance(dataset, _Subset):
            dataset, indices = dataset.dataset, dataset.indices[indices]
        super().__init__(dataset, indices)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        return self.dataset[int(self.indices[index])]

    def __getitems__(self, indices: list[int]) -> list[Any]:
        return [self[i] for i in indices]

    def __len__(self) -> int:
        return len(self.indices)


class _Guarded(Dataset):
    """``dataset[i]`` as ``(image, label, "")``, or ``(None, None, message)`` when reading it
    failed: the message reaches the training process intact, as one line."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[Any, Any, str]:
        try:
            item = self.dataset[index]
            image, label = item
        except AutopruneError as exc:
            return None, None, str(exc)
        except Exception as exc:
            reason = " ".join(f"{type(exc).__name__}: {exc}".split())
            inner, number = self.dataset, index
            if isinstance(inner, _Subset):  # name the item as its own Dataset numbers it
                inner, number = inner.dataset, int(inner.indices[index])
            message = f"reading item {number} of the {type(inner).__name__} failed ({reason})"
            return None, None, f"{message}; its Dataset must return {_CONTRACT}"
        return image, label, ""


def _malformed(images: list[Any]) -> str:
    """Why ``images`` cannot be stacked into one batch; ``""`` when they can."""
    first = images[0]
    for image in images:
        if not isinstance(image, torch.Tensor) or image.dim() != 3:
            kind = type(image).__name__
            shape = f" of shape {tuple(image.shape)}" if isinstance(image, torch.Tensor) else ""
            return (
                f"a streamed item's image is a {kind}{shape}, not a tensor C x H x W; convert "
                f"it in the Dataset (e.g. torchvision.transforms.PILToTensor())"
            )
        same_kind = (image.dtype == torch.uint8) == (first.dtype == torch.uint8)
        if image.shape != first.shape or not same_kind:
            return (
                f"streamed images differ: {tuple(first.shape)} {first.dtype} and "
                f"{tuple(image.shape)} {image.dtype}; every image must be C x H x W at one "
                f"size and dtype (resize and crop in the Dataset, e.g. "
                f"torchvision.transforms.Resize and CenterCrop)"
            )
    return ""


def _collate(items: list[tuple[Any, Any, str]]) -> tuple[Any, Any, str]:
    """Stack a batch of guarded items; a failure or a malformed item is returned as a message."""
    for _, _, error in items:
        if error:
            return None, None, error
    images = [image for image, _, _ in items]
    error = _malformed(images)
    if error:
        return None, None, error
    try:
        labels = torch.tensor([int(label) for _, label, _ in items], dtype=torch.int64)
    except (TypeError, ValueError, RuntimeError) as exc:
        return None, None, f"a streamed item's label is not an int ({exc}); labels are 0..N-1"
    if images[0].dtype != torch.uint8:
        return torch.stack([image.to(torch.float32) for image in images]), labels, ""
    return torch.stack(images), labels, ""


@dataclass(frozen=True, eq=False)
class StreamedSplit:
    """One split read item by item from ``dataset``, which yields ``(image, label)``.

    ``image`` is a tensor ``C x H x W`` (``uint8``, or float in [0, 1]), the same size for
    every item; ``label`` an int in ``0 .. num_classes - 1``. ``num_workers`` reading
    processes (``None``: :func:`default_num_workers`; 0 reads in the training process).

    Example:
        >>> from torch.utils.data import TensorDataset
        >>> s = StreamedSplit(TensorDataset(torch.zeros(6, 1, 4, 4, dtype=torch.uint8),
        ...                                 torch.arange(6)), num_workers=0)
        >>> images, labels = s.take(torch.tensor([4, 1]))
        >>> tuple(images.shape), labels.tolist(), len(s.subset(torch.tensor([0, 2])))
        ((2, 1, 4, 4), [4, 1], 2)
    """

    dataset: Dataset
    num_workers: int | None = None

    def __post_init__(self) -> None:
        if not (hasattr(self.dataset, "__getitem__") and hasattr(self.dataset, "__len__")):
            raise ConfigError(
                f"a streamed split needs a map-style Dataset (with __getitem__ and __len__), "
                f"but got a {type(self.dataset).__name__}; wrap it in a torch.utils.data.Dataset"
            )
        check_num_workers(self.num_workers)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def subset(self, indices: torch.Tensor) -> StreamedSplit:
        """The items at ``indices`` (a 1-D ``int64`` tensor), as a new split; reads nothing."""
        picked = np.asarray(indices.cpu().numpy(), dtype=np.int64)
        return StreamedSplit(_Subset(self.dataset, picked), num_workers=self.num_workers)

    def take(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The images and labels at ``indices``, read in this process (a few, e.g. a batch)."""
        guarded = _Guarded(self.dataset)
        images, labels, error = _collate([guarded[int(i)] for i in indices])
        if error:
            raise DataError(error)
        return images, labels

    def batches(
        self, index_batches: Iterable[Sequence[int] | torch.Tensor], *, pin_memory: bool = False
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """``(images, labels)`` of each batch of indices, in order, read by the workers."""
        plan = [
            b.tolist() if isinstance(b, torch.Tensor) else [int(i) for i in b]
            for b in index_batches
        ]
        workers = check_num_workers(self.num_workers)
        loader = DataLoader(
            _Guarded(self.dataset),
            batch_sampler=plan,
            num_workers=workers,
            collate_fn=_collate,
            pin_memory=pin_memory,
            prefetch_factor=2 if workers else None,
        )
        iterator = iter(loader)
        try:
            for images, labels, error in iterator:
                if error:
                    raise DataError(error)
                yield images, labels
        finally:
            del iterator  # stops the worker processes now, also when the consumer stops early


class _Batches(Protocol):
    def __len__(self) -> int: ...

    def batches(
        self, index_batches: Iterable[Sequence[int] | torch.Tensor], *, pin_memory: bool = False
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """A batch as ``float32`` in [0, 1]: ``uint8`` divided by 255, float as it is."""
    if images.dtype == torch.uint8:
        return images.to(torch.float32) / 255.0
    return images.to(torch.float32)


def sampled_stats(
    split: _Batches, *, seed: int, samples: int = STATS_SAMPLES
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of ``samples`` images of ``split`` (pixels in
    [0, 1]), drawn by a permutation seeded with ``seed`` (all images when the split is smaller).

    Works on any split with ``batches`` (held in memory or streamed) and gives the same figures
    for the same images either way.

    Example:
        >>> from torch.utils.data import TensorDataset
        >>> images = torch.tensor([0, 255], dtype=torch.uint8).view(2, 1, 1, 1).expand(2, 1, 2, 2)
        >>> split = StreamedSplit(TensorDataset(images, torch.arange(2)), num_workers=0)
        >>> sampled_stats(split, seed=0)  # mean 0.5; std of [0, 0, 0, 0, 1, 1, 1, 1]
        ((0.5,), (0.5345224838248488,))
    """
    n = len(split)
    chosen = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:samples]
    chosen = chosen.sort().values  # file order: friendlier to disks than a random order
    total = squares = None
    count = 0
    for images, _ in split.batches(chosen.split(_STATS_BATCH)):
        x = to_unit(images).transpose(0, 1).reshape(images.shape[1], -1).to(torch.float64)
        total = x.sum(dim=1) if total is None else total + x.sum(dim=1)
        squares = (x * x).sum(dim=1) if squares is None else squares + (x * x).sum(dim=1)
        count += x.shape[1]
    assert total is not None and squares is not None and count > 1, (n, samples)
    mean = total / count
    variance = ((squares - total * mean) / (count - 1)).clamp_min(0.0)
    std = variance.sqrt().clamp_min(1e-6)  # a constant channel must not divide by zero
    _logger.debug("statistics of %d of %d images: mean %s, std %s", len(chosen), n, mean, std)
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def check_stats(
    mean: Sequence[float], std: Sequence[float], channels: int
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``mean`` and ``std`` as tuples of ``channels`` floats, std positive."""
    mean_t, std_t = tuple(float(v) for v in mean), tuple(float(v) for v in std)
    if (
        len(mean_t) != channels
        or len(std_t) != channels
        or not all(math.isfinite(v) for v in mean_t)
        or not all(math.isfinite(v) and v > 0 for v in std_t)
    ):
        raise ConfigError(
            f"mean and std must be {channels} finite numbers each (one per channel, std > 0, "
            f"pixels in [0, 1]), but got mean={list(mean_t)}, std={list(std_t)}; pass e.g. "
            f"mean={[0.5] * channels}, std={[0.25] * channels}, or neither to have them computed"
        )
    return mean_t, std_t
