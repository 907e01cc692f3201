"""Dataset registry, IDX and pickle readers, Fashion-MNIST and a synthetic data set for tests.

Images are kept as ``uint8`` tensors ``N x C x H x W`` (Fashion-MNIST's 60,000 training images
take 47 MB that way); the trainer converts each batch to float and normalises it with the
training split's per-channel mean and standard deviation stored on :class:`DatasetSplits`.

The other registered data sets live in their own modules: ``mnist`` (``_mnist.py``),
``cifar10`` and ``cifar100`` (``_cifar.py``) and ``imagefolder`` (``_imagefolder.py``).
"""

from __future__ import annotations

import codecs
import gzip
import inspect
import io
import logging
import math
import os
import pickle
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from autoprune.errors import ConfigError, DataError, UnknownNameError

__all__ = [
    "LOADER_OPTIONS",
    "DatasetSplits",
    "RawDataset",
    "Split",
    "cache_home",
    "data_home",
    "list_datasets",
    "load_dataset",
    "read_idx",
    "read_pickle",
    "register_dataset",
]

_logger = logging.getLogger("autoprune.evaluators.datasets")

FASHION_MNIST_ROOT = Path("/usr/share/datasets/fashion-mnist")
_FASHION_MNIST_FIX = (
    "install it with `apt-get install dataset-fashion-mnist` (Debian), or set data.root to a "
    "folder holding the four IDX files"
)
FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


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


# --- pickles -----------------------------------------------------------------------------------

# What a pickled numpy array needs, as numpy 1 (Python 2 era: CIFAR, deeplearning.net's MNIST)
# and numpy 2 write it: the array reconstructor, ndarray, dtype, scalars, and `_codecs.encode`,
# which protocol 2 uses for bytes under Python 3. The reconstructors are taken from numpy's own
# reduce tuples, so they are the current numpy's functions whatever module path the file names.
_PICKLE_GLOBALS: dict[tuple[str, str], object] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,
    **{
        (f"{package}.{module}", name): function
        for package in ("numpy.core", "numpy._core")
        for module, name, function in (
            ("multiarray", "_reconstruct", np.zeros(1).__reduce__()[0]),
            ("multiarray", "scalar", np.float64(0).__reduce__()[0]),
            ("numeric", "_frombuffer", np.zeros(1).__reduce_ex__(5)[0]),
        )
    },
}


class _RefusedGlobal(pickle.UnpicklingError):
    pass


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays, dicts, lists, strings and numbers, and refuses anything else."""

    def find_class(self, module: str, name: str) -> object:
        try:
            return _PICKLE_GLOBALS[(module, name)]
        except KeyError:
            raise _RefusedGlobal(f"refused to load global {module}.{name}") from None


def read_pickle(path: str | Path) -> object:
    """Read a (gzip-compressed or plain) pickle of numpy arrays, lists, dicts and strings.

    Strings that Python 2 wrote are decoded as latin-1, as torchvision does for CIFAR. Unlike
    :func:`pickle.load` it runs no code: a pickle that names any other global (a class, a
    function) is refused, so a data folder from elsewhere cannot execute anything.

    Raises:
        DataError: The file is unreadable, not a pickle, or names a global other than numpy's
            array reconstruction; the message names the file.

    Example:
        >>> path = data_home() / "cifar-10-batches-py" / "test_batch"
        >>> batch = read_pickle(path)  # doctest: +SKIP
        >>> batch["data"].shape, len(batch["labels"])  # doctest: +SKIP
        ((10000, 3072), 10000)
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        return _ArrayUnpickler(io.BytesIO(raw), encoding="latin1").load()
    except _RefusedGlobal as exc:
        raise DataError(
            f"cannot load pickle {str(path)!r}: {exc}; only numpy arrays, lists, dicts and "
            f"strings are loaded (a pickle can run code), replace the file"
        ) from None
    except (pickle.UnpicklingError, OSError, EOFError, zlib.error, ValueError, TypeError) as exc:
        raise DataError(
            f"cannot read pickle {str(path)!r}: {type(exc).__name__}: {exc}; the file is "
            f"truncated or corrupt, replace it"
        ) from None


# --- IDX ---------------------------------------------------------------------------------------

# IDX type codes (LeCun et al., "THE MNIST DATABASE" file format description); big-endian.
_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (gzip-compressed or plain) into a numpy array, checking its header.

    The header is two zero bytes, a type code (0x08 = unsigned byte, ...), the number of
    dimensions, then one big-endian ``uint32`` per dimension; the payload must hold exactly
    the product of the dimensions.

    Raises:
        DataError: The file is unreadable, its header is invalid or its payload has the wrong
            length; the message names the file.

    Example:
        >>> images = read_idx("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")
        >>> images.shape, images.dtype
        ((10000, 28, 28), dtype('uint8'))
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError) as exc:
        raise DataError(f"cannot read IDX file {str(path)!r}: {exc}; replace the file") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(
            f"{str(path)!r} is not an IDX file: header starts with {raw[:4].hex()!r}, expected "
            f"'0000' followed by a type code and a dimension count; replace the file"
        )
    code, ndim = raw[2], raw[3]
    if code not in _IDX_DTYPES:
        valid = ", ".join(f"0x{c:02X}" for c in _IDX_DTYPES)
        raise DataError(
            f"IDX file {str(path)!r} has unknown type code 0x{code:02X}; valid codes: {valid}; "
            f"replace the file"
        )
    offset = 4 + 4 * ndim
    if ndim == 0 or len(raw) < offset:
        raise DataError(
            f"IDX file {str(path)!r} has a truncated header ({ndim} dimensions, {len(raw)} "
            f"bytes); replace the file"
        )
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_DTYPES[code]
    expected = math.prod(dims) * dtype.itemsize
    if len(raw) - offset != expected:
        raise DataError(
            f"IDX file {str(path)!r} holds {len(raw) - offset} payload bytes but its header "
            f"{dims} of {dtype} needs {expected}; the file is truncated or corrupt, replace it"
        )
    return np.frombuffer(raw, dtype=dtype, offset=offset).reshape(dims)


def _idx_file(root: Path, name: str) -> Path:
    path = root / name
    if path.is_file():
        return path
    plain = root / name.removesuffix(".gz")
    if plain.is_file():  # an uncompressed copy is fine too
        return plain
    raise DataError(f"Fashion-MNIST file {str(path)!r} is missing; {_FASHION_MNIST_FIX}")


def _read_idx_split(root: Path, prefix: str, num_classes: int) -> Split:
    images_path = _idx_file(root, f"{prefix}-images-idx3-ubyte.gz")
    labels_path = _idx_file(root, f"{prefix}-labels-idx1-ubyte.gz")
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataError(
            f"{str(images_path)!r} holds {images.dtype} of shape {images.shape}, expected "
            f"uint8 images N x H x W; {_FASHION_MNIST_FIX}"
        )
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise DataError(
            f"{str(labels_path)!r} holds {labels.dtype} of shape {labels.shape}, expected "
            f"uint8 labels N; {_FASHION_MNIST_FIX}"
        )
    if labels.shape[0] != images.shape[0]:
        raise DataError(
            f"{str(labels_path)!r} has {labels.shape[0]} labels but {str(images_path)!r} has "
            f"{images.shape[0]} images; {_FASHION_MNIST_FIX}"
        )
    if labels.size and int(labels.max()) >= num_classes:
        raise DataError(
            f"{str(labels_path)!r} holds label {int(labels.max())}, expected 0..{num_classes - 1}"
            f"; {_FASHION_MNIST_FIX}"
        )
    return Split(
        images=torch.from_numpy(images.copy()).unsqueeze(1),
        labels=torch.from_numpy(labels.astype(np.int64)),
    )


@register_dataset("fashion-mnist")
def _fashion_mnist(root: Path | None) -> RawDataset:
    """Fashion-MNIST (Xiao et al., 2017): 60,000 + 10,000 grey 28x28 images, 10 classes.

    Source: Zalando Research, https://github.com/zalandoresearch/fashion-mnist, MIT licence;
    read from the IDX files of Debian's ``dataset-fashion-mnist`` (or ``root``).
    """
    root = FASHION_MNIST_ROOT if root is None else root
    return RawDataset(
        train=_read_idx_split(root, "train", 10),
        test=_read_idx_split(root, "t10k", 10),
        num_classes=10,
        class_names=FASHION_MNIST_CLASSES,
    )


# --- synthetic ---------------------------------------------------------------------------------

_SYNTHETIC_TRAIN = 2000
_SYNTHETIC_TEST = 500
_SYNTHETIC_CLASSES = 10
_SYNTHETIC_SEED = 1234


@register_dataset("synthetic")
def _synthetic(root: Path | None) -> RawDataset:
    """Deterministic 1x28x28 images in 10 classes: 2,000 train, 500 test; for tests.

    Source: generated here from a fixed seed; no files, no licence.

    Each class has a smooth random mean pattern (a shared 7x7 background plus a class-specific
    deviation, upsampled to 28x28); an image is its class pattern, randomly shifted by up to 2
    pixels, plus Gaussian noise (sigma 0.35 of full scale). A small CNN learns it well above
    chance (10 %) in a few dozen steps, and the patterns survive downscaling.
    """
    if root is not None:
        raise ConfigError(
            f"the 'synthetic' data set is generated in memory and takes no root, but got "
            f"{str(root)!r}; remove data.root"
        )
    g = torch.Generator().manual_seed(_SYNTHETIC_SEED)
    # A shared background plus a class-specific deviation of +-0.3: hard enough that a tiny CNN
    # reaches about 85 % (not 100 %) in two epochs, so accuracy differences stay visible.
    base = torch.rand(1, 1, 7, 7, generator=g)
    deviation = 0.3 * (2.0 * torch.rand(_SYNTHETIC_CLASSES, 1, 7, 7, generator=g) - 1.0)
    coarse = base + deviation
    patterns = torch.nn.functional.interpolate(
        coarse, size=(28, 28), mode="bilinear", align_corners=False
    )

    def make(n: int) -> Split:
        labels = torch.randint(0, _SYNTHETIC_CLASSES, (n,), generator=g)
        shifts = torch.randint(-2, 3, (n, 2), generator=g)
        images = patterns[labels].clone()
        for i in range(n):  # per-image shift; n is small
            images[i] = torch.roll(images[i], shifts=tuple(shifts[i].tolist()), dims=(1, 2))
        images = images + 0.35 * torch.randn(images.shape, generator=g)
        pixels = (images.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)
        return Split(images=pixels, labels=labels)

    return RawDataset(
        train=make(_SYNTHETIC_TRAIN),
        test=make(_SYNTHETIC_TEST),
        num_classes=_SYNTHETIC_CLASSES,
        class_names=tuple(f"class{i}" for i in range(_SYNTHETIC_CLASSES)),
    )
