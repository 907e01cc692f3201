"""Dataset registry and the train / val / test split of a registered data set.

Images are kept as ``uint8`` tensors ``N x C x H x W``; the trainer converts each batch to float
and normalises it with the training split's per-channel mean and standard deviation stored on
:class:`DatasetSplits`. The data sets register themselves from their own modules:
``fashion-mnist`` (``_fashion_mnist.py``), ``mnist`` (``_mnist.py``), ``cifar10`` and
``cifar100`` (``_cifar.py``), ``imagefolder`` (``_imagefolder.py``) and ``synthetic``
(``_synthetic.py``); the file readers are in ``_readers.py``.
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from autoprune.errors import ConfigError, UnknownNameError
from autoprune.evaluators._readers import read_idx, read_pickle

__all__ = [
    "LOADER_OPTIONS",
    "DatasetSplits",
    "RawDataset",
    "Split",
    "cache_home",
    "data_home",
    "list_datasets",
    "load_dataset",
    "read_idx",  # defined in _readers, still importable from here
    "read_pickle",
    "register_dataset",
]

_logger = logging.getLogger("autoprune.evaluators.datasets")


@dataclass(frozen=True, eq=False)
class Split:
    """One split of a data set: ``uint8`` images ``N x C x H x W`` and ``int64`` labels ``N``.

    Example:
        >>> s = Split(images=torch.zeros(4, 1, 28, 28, dtype=torch.uint8),
        ...           labels=torch.tensor([0, 1, 2, 3]))
        >>> len(s)
        4
    """

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        assert self.images.dim() == 4, tuple(self.images.shape)
        assert self.images.dtype == torch.uint8, self.images.dtype
        assert self.labels.dtype == torch.int64, self.labels.dtype
        assert self.labels.shape == (self.images.shape[0],), (
            tuple(self.labels.shape),
            tuple(self.images.shape),
        )

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def subset(self, indices: torch.Tensor) -> Split:
        """The images at ``indices`` (a 1-D ``int64`` tensor), as a new split."""
        return Split(images=self.images[indices], labels=self.labels[indices])


@dataclass(frozen=True, eq=False)
class RawDataset:
    """What a registered dataset loader returns: the training and test images as published.

    :func:`load_dataset` carves the validation split out of ``train`` and computes the
    normalisation statistics.
    """

    train: Split
    test: Split
    num_classes: int
    class_names: tuple[str, ...] = field(default=())


@dataclass(frozen=True, eq=False)
class DatasetSplits:
    """A data set split three ways, with its normalisation statistics.

    Attributes:
        name: Registry name, e.g. ``"fashion-mnist"``.
        train: Training images (the published training set minus ``val``).
        val: Validation images carved from the published training set by a seeded permutation;
            the search ranks candidates on it.
        test: The published test set, untouched; kept for final figures only.
        num_classes: Number of classes; labels are ``0 .. num_classes - 1``.
        input_shape: Stored image shape ``(C, H, W)`` in pixels.
        mean: Per-channel mean of ``train`` with pixels scaled to [0, 1].
        std: Per-channel standard deviation of ``train`` with pixels scaled to [0, 1].
        class_names: Human-readable class names (may be empty).
        seed: Seed of the validation permutation.

    Example:
        >>> from autoprune.evaluators import load_dataset
        >>> d = load_dataset("synthetic", val_samples=500, seed=0)
        >>> len(d.train), len(d.val), len(d.test), d.input_shape
        (1500, 500, 500, (1, 28, 28))
    """

    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int
    input_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: tuple[str, ...] = ()
    seed: int = 0

    def split(self, name: str) -> Split:
        """The split called ``name`` (``"train"``, ``"val"`` or ``"test"``)."""
        if name not in ("train", "val", "test"):
            raise ConfigError(f"unknown split {name!r}; valid splits: train, val, test")
        return getattr(self, name)


DatasetLoader = Callable[..., RawDataset]

#: Keyword-only options :func:`load_dataset` passes to a loader that declares them:
#: ``download`` (fetch missing files from the network), ``input_shape`` (``(C, H, W)`` to decode
#: to, for loaders whose images have no fixed size), ``num_workers`` (decoding processes) and
#: ``cache_dir`` (where decoded images are kept between loads).
LOADER_OPTIONS = ("download", "input_shape", "num_workers", "cache_dir")


@dataclass(frozen=True)
class _Entry:
    loader: DatasetLoader
    options: frozenset[str]


_REGISTRY: dict[str, _Entry] = {}


def register_dataset(name: str) -> Callable[[DatasetLoader], DatasetLoader]:
    """Register a loader ``fn(root: Path | None, *, <options>) -> RawDataset`` under ``name``.

    ``root`` is the folder the user configured (``data.root``), or ``None`` for the loader's
    default. A loader may declare any of :data:`LOADER_OPTIONS` as keyword-only parameters;
    :func:`load_dataset` passes it those and no others. A loader that does not declare
    ``download`` cannot download, and asking it to is a :class:`ConfigError`. The name is the
    one used in Python, YAML and on the command line.

    Example:
        >>> @register_dataset("tiny-zeros")
        ... def _tiny(root):
        ...     z = Split(images=torch.zeros(8, 1, 4, 4, dtype=torch.uint8),
        ...               labels=torch.arange(8) % 2)
        ...     return RawDataset(train=z, test=z, num_classes=2)
        >>> "tiny-zeros" in list_datasets()
        True
    """

    def decorator(fn: DatasetLoader) -> DatasetLoader:
        if name in _REGISTRY and _REGISTRY[name].loader is not fn:
            raise ValueError(f"dataset {name!r} is already registered")
        params = inspect.signature(fn).parameters
        options = frozenset(
            o
            for o in LOADER_OPTIONS
            if o in params and params[o].kind is inspect.Parameter.KEYWORD_ONLY
        )
        _REGISTRY[name] = _Entry(loader=fn, options=options)
        return fn

    return decorator


def list_datasets() -> list[str]:
    """Names of the registered data sets, sorted.

    Example:
        >>> list_datasets()  # doctest: +SKIP
        ['cifar10', 'cifar100', 'fashion-mnist', 'imagefolder', 'mnist', 'synthetic']
    """
    return sorted(_REGISTRY)


def load_dataset(
    name: str,
    *,
    root: str | Path | None = None,
    val_samples: int = 5000,
    seed: int = 0,
    download: bool = False,
    input_shape: tuple[int, int, int] | None = None,
    num_workers: int | None = None,
    cache_dir: str | Path | None = None,
) -> DatasetSplits:
    """Load data set ``name`` and split it into train / val / test.

    The validation split is ``val_samples`` images taken from the published training set by a
    permutation seeded with ``seed``; the rest, in the order of that permutation, is the
    training split. The test split is the published test set, untouched. Normalisation
    statistics come from the training split.

    Args:
        name: A name from :func:`list_datasets`.
        root: Folder holding the files (``None``: the data set's default location).
        val_samples: Images carved out of the training set for validation (>= 1).
        seed: Seed of the validation permutation.
        download: Let the loader fetch missing files from the network (``cifar10`` and
            ``cifar100`` can); never without it.
        input_shape: ``(C, H, W)`` in pixels to decode images to, for data sets whose images
            have no fixed size (``imagefolder``); the others keep their published shape.
        num_workers: Processes that decode images (``imagefolder``); ``None``: ``min(4, CPUs)``.
        cache_dir: Where decoded images are cached (``imagefolder``); ``None``:
            ``~/.cache/autoprune/imagefolder`` (under ``$XDG_CACHE_HOME`` when set).

    Raises:
        UnknownNameError: ``name`` is not registered.
        DataError: The files are missing or malformed.
        ConfigError: ``val_samples`` is out of range, or ``download`` is asked of a data set
            that cannot download.

    Example:
        >>> d = load_dataset("fashion-mnist", val_samples=5000, seed=0)  # doctest: +SKIP
        >>> len(d.train), len(d.val), len(d.test)  # doctest: +SKIP
        (55000, 5000, 10000)
    """
    if name not in _REGISTRY:
        raise UnknownNameError("dataset", name, list(_REGISTRY))
    entry = _REGISTRY[name]
    if download and "download" not in entry.options:
        can = [n for n, e in sorted(_REGISTRY.items()) if "download" in e.options]
        raise ConfigError(
            f"data set {name!r} cannot be downloaded, but data.download is true; set "
            f"data.download: false (data sets that download: {', '.join(can) or 'none'})"
        )
    offered: dict[str, object] = {
        "download": download,
        "input_shape": input_shape,
        "num_workers": num_workers,
        "cache_dir": None if cache_dir is None else Path(cache_dir),
    }
    options = {k: v for k, v in offered.items() if k in entry.options}
    raw = entry.loader(None if root is None else Path(root), **options)
    n = len(raw.train)
    if (
        isinstance(val_samples, bool)
        or not isinstance(val_samples, int)
        or not 1 <= val_samples < n
    ):
        raise ConfigError(
            f"data.val_samples must be an integer in [1, {n - 1}] for {name!r} ({n} training "
            f"images), but got {val_samples!r}; use e.g. val_samples: {min(5000, n // 10)}"
        )
    generator = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=generator)
    val = raw.train.subset(perm[:val_samples])
    train = raw.train.subset(perm[val_samples:])
    mean, std = _channel_stats(train.images)
    c, h, w = (int(s) for s in raw.train.images.shape[1:])
    splits = DatasetSplits(
        name=name,
        train=train,
        val=val,
        test=raw.test,
        num_classes=raw.num_classes,
        input_shape=(c, h, w),
        mean=mean,
        std=std,
        class_names=raw.class_names,
        seed=seed,
    )
    _logger.debug(
        "loaded %s: train %d, val %d, test %d, shape %s, mean %s, std %s",
        name,
        len(train),
        len(val),
        len(raw.test),
        splits.input_shape,
        mean,
        std,
    )
    return splits


def _xdg_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")


def data_home() -> Path:
    """Default folder of downloadable data sets: ``~/.cache/autoprune/data``.

    Under ``$XDG_CACHE_HOME`` when that is set; ``cifar10`` looks for
    ``<data_home>/cifar-10-batches-py`` there when ``data.root`` is ``null``.
    """
    return _xdg_cache() / "autoprune" / "data"


def cache_home() -> Path:
    """Default folder of decoded-image caches: ``~/.cache/autoprune/imagefolder``.

    Under ``$XDG_CACHE_HOME`` when that is set; safe to delete (a cache is rebuilt on demand).
    """
    return _xdg_cache() / "autoprune" / "imagefolder"


def _channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of ``uint8`` images, with pixels scaled to [0, 1]."""
    c = images.shape[1]
    x = images.transpose(0, 1).reshape(c, -1).to(torch.float64) / 255.0
    mean = x.mean(dim=1)
    std = x.std(dim=1).clamp_min(1e-6)  # a constant channel must not divide by zero
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)
