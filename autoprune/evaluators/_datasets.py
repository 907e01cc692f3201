"""Dataset registry and the train / val / test split of a registered data set.

A split is held in memory as ``uint8`` tensors ``N x C x H x W`` (:class:`Split`), or streamed
from a ``torch.utils.data.Dataset`` (:class:`StreamedSplit`, ``_streaming.py``: images on disk,
read per batch); the trainer converts each batch to float and normalises it with the training
split's per-channel mean and standard deviation stored on :class:`DatasetSplits`. The data sets
register themselves from their own modules: ``fashion-mnist`` (``_fashion_mnist.py``),
``mnist`` (``_mnist.py``), ``cifar10`` and ``cifar100`` (``_cifar.py``), ``imagefolder``
(``_imagefolder.py``) and ``synthetic`` (``_synthetic.py``); the file readers are in
``_readers.py``. A user's own Datasets become splits through
:meth:`DatasetSplits.from_datasets` (``_userdata.py``).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import Dataset

from autoprune.errors import ConfigError, UnknownNameError
from autoprune.evaluators._readers import read_idx, read_pickle
from autoprune.evaluators._streaming import STATS_SAMPLES, StreamedSplit, sampled_stats

__all__ = [
    "CACHE_MODES",
    "LOADER_OPTIONS",
    "DatasetSplits",
    "RawDataset",
    "Split",
    "StreamedSplit",
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

    def take(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The images and labels at ``indices`` (as :meth:`StreamedSplit.take`)."""
        return self.images[indices], self.labels[indices]

    def batches(
        self, index_batches: Iterable[Sequence[int] | torch.Tensor], *, pin_memory: bool = False
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """``(images, labels)`` of each batch of indices (as :meth:`StreamedSplit.batches`)."""
        for idx in index_batches:
            yield self.take(torch.as_tensor(idx, dtype=torch.int64))


#: How ``imagefolder`` holds its images (``data.cache``): ``memory`` decodes every image once
#: into memory (cached on disk), ``stream`` reads them per batch, ``auto`` picks ``memory`` when
#: the decoded images take at most a quarter of the available memory.
CACHE_MODES = ("auto", "memory", "stream")


@dataclass(frozen=True, eq=False)
class RawDataset:
    """What a registered dataset loader returns: the training and test images as published.

    :func:`load_dataset` carves the validation split out of ``train`` and computes the
    normalisation statistics. ``stats_key`` is set by loaders that read images one by one
    (``imagefolder``): a digest of the files, under which the statistics of a seeded sample
    (:func:`~autoprune.evaluators._streaming.sampled_stats`) are cached; the same figures
    whether the images are held in memory or streamed. ``None`` with in-memory splits: exact
    statistics over the whole training split.
    """

    train: Split | StreamedSplit
    test: Split | StreamedSplit
    num_classes: int
    class_names: tuple[str, ...] = field(default=())
    stats_key: str | None = None


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
    train: Split | StreamedSplit
    val: Split | StreamedSplit
    test: Split | StreamedSplit
    num_classes: int
    input_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: tuple[str, ...] = ()
    seed: int = 0

    def split(self, name: str) -> Split | StreamedSplit:
        """The split called ``name`` (``"train"``, ``"val"`` or ``"test"``)."""
        if name not in ("train", "val", "test"):
            raise ConfigError(f"unknown split {name!r}; valid splits: train, val, test")
        return getattr(self, name)

    @property
    def streamed(self) -> bool:
        """Whether the training images are read per batch rather than held in memory."""
        return isinstance(self.train, StreamedSplit)

    @classmethod
    def from_datasets(
        cls,
        train: Dataset,
        val: Dataset | None = None,
        test: Dataset | None = None,
        *,
        num_classes: int | None = None,
        class_names: Sequence[str] = (),
        name: str = "custom",
        val_samples: int | None = None,
        seed: int = 0,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        num_workers: int | None = None,
    ) -> DatasetSplits:
        """Streamed splits from your own map-style Datasets yielding ``(image, label)``.

        ``image``: a tensor ``C x H x W``, ``uint8`` or float in [0, 1] (not normalised), one
        size for all items of all splits; ``label``: an int in ``0 .. num_classes - 1``. The
        input shape comes from ``train[0]``. The class count is ``num_classes``, else
        ``len(class_names)``, else the largest label + 1 read from the Datasets' ``targets`` or
        ``labels`` attribute (torchvision's data sets, ``TensorDataset``, ``Subset``); a Dataset
        with none of them needs ``num_classes`` (reading every item would decode every image).
        Class names default to ``train.classes`` where it exists.

        Args:
            train: Training images.
            val: Validation images, which the search ranks candidates on; ``None`` carves
                ``val_samples`` (default ``min(5000, len(train) // 10)``) out of ``train`` by
                a permutation seeded with ``seed``.
            test: Held-out images for final figures; ``None`` uses ``val`` (with a warning).
            name: Recorded in the run and its exports.
            mean, std: Per-channel normalisation (pixels in [0, 1]); ``None``: computed from a
                seeded sample of 2,048 training images (all when fewer).
            num_workers: DataLoader processes reading the items (``None``: ``min(4, CPUs)``).

        Raises:
            ConfigError: A Dataset is empty or its first item breaks the contract, the splits
                disagree in shape, or the class count cannot be told; one line with the fix.

        Example:
            >>> from torch.utils.data import TensorDataset
            >>> images = torch.randint(0, 256, (40, 3, 8, 8), dtype=torch.uint8)
            >>> d = DatasetSplits.from_datasets(
            ...     TensorDataset(images, torch.arange(40) % 4), val_samples=8, num_workers=0)
            >>> d.input_shape, d.num_classes, len(d.train), len(d.val), d.streamed
            ((3, 8, 8), 4, 32, 8, True)
        """
        from autoprune.evaluators._userdata import streamed_fields

        fields = streamed_fields(
            train,
            val,
            test,
            num_classes=num_classes,
            class_names=class_names,
            val_samples=val_samples,
            seed=seed,
            mean=mean,
            std=std,
            num_workers=num_workers,
        )
        return cls(name=name, seed=seed, **fields)


DatasetLoader = Callable[..., RawDataset]

#: Keyword-only options :func:`load_dataset` passes to a loader that declares them:
#: ``download`` (fetch missing files from the network), ``input_shape`` (``(C, H, W)`` to decode
#: to, for loaders whose images have no fixed size), ``num_workers`` (decoding processes),
#: ``cache_dir`` (where decoded images are kept between loads) and ``cache`` (one of
#: :data:`CACHE_MODES`: images held in memory or streamed).
LOADER_OPTIONS = ("download", "input_shape", "num_workers", "cache_dir", "cache")


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
        >>> list_datasets()
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
    cache: str = "auto",
) -> DatasetSplits:
    """Load data set ``name`` and split it into train / val / test.

    The validation split is ``val_samples`` images taken from the published training set by a
    permutation seeded with ``seed``; the rest, in the order of that permutation, is the
    training split. The test split is the published test set, untouched. Normalisation
    statistics come from the training split: over all of it for data sets held in memory
    (``fashion-mnist``, ``mnist``, ``cifar*``, ``synthetic``); for ``imagefolder`` and streamed
    splits, over a seeded sample of 2,048 training images, cached under ``cache_dir``.

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
        cache_dir: Where decoded images and statistics are cached (``imagefolder``); ``None``:
            ``~/.cache/autoprune/imagefolder`` (under ``$XDG_CACHE_HOME`` when set).
        cache: One of :data:`CACHE_MODES`: hold the decoded images in memory, stream them per
            batch, or ``auto`` (``imagefolder``; the other data sets are held in memory).

    Raises:
        UnknownNameError: ``name`` is not registered.
        DataError: The files are missing or malformed.
        ConfigError: ``val_samples`` is out of range, or ``download`` is asked of a data set
            that cannot download.

    Example:
        >>> d = load_dataset("fashion-mnist", val_samples=5000, seed=0)
        >>> len(d.train), len(d.val), len(d.test)
        (55000, 5000, 10000)
    """
    if name not in _REGISTRY:
        raise UnknownNameError("dataset", name, list(_REGISTRY))
    entry = _REGISTRY[name]
    if cache not in CACHE_MODES:
        raise ConfigError(f"data.cache must be one of {', '.join(CACHE_MODES)}, but got {cache!r}")
    if cache == "stream" and "cache" not in entry.options:
        raise ConfigError(
            f"data set {name!r} is held in memory and cannot be streamed, but data.cache is "
            f"stream; set data.cache: auto (imagefolder streams its images)"
        )
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
        "cache": cache,
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
    if isinstance(train, Split) and raw.stats_key is None:
        mean, std = _channel_stats(train.images)
    else:
        folder = cache_home() if cache_dir is None else Path(cache_dir)
        mean, std = _cached_stats(train, raw.stats_key, folder, name, seed, val_samples)
    if isinstance(raw.train, Split):
        c, h, w = (int(s) for s in raw.train.images.shape[1:])
    else:
        c, h, w = (int(s) for s in raw.train.take(torch.tensor([0]))[0].shape[1:])
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


def _cached_stats(
    train: Split | StreamedSplit,
    key: str | None,
    folder: Path,
    name: str,
    seed: int,
    val_samples: int,
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """:func:`sampled_stats` of ``train``, kept in ``folder`` under ``key`` (not without one)."""
    if key is None:
        return sampled_stats(train, seed=seed)
    payload = {"key": key, "seed": seed, "val_samples": val_samples, "samples": STATS_SAMPLES}
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
    path = folder / f"{name}-stats-{digest[:20]}.json"
    try:
        cached = json.loads(path.read_text())
        return tuple(cached["mean"]), tuple(cached["std"])
    except (OSError, ValueError, KeyError, TypeError):
        pass  # absent or unreadable: computed again
    mean, std = sampled_stats(train, seed=seed)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps({**payload, "mean": mean, "std": std}) + "\n")
        os.replace(tmp, path)
    except OSError as exc:
        _logger.warning("cannot write the statistics cache %s (%s)", path, exc)
    return mean, std


def _channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of ``uint8`` images, with pixels scaled to [0, 1]."""
    c = images.shape[1]
    x = images.transpose(0, 1).reshape(c, -1).to(torch.float64) / 255.0
    mean = x.mean(dim=1)
    std = x.std(dim=1).clamp_min(1e-6)  # a constant channel must not divide by zero
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)
