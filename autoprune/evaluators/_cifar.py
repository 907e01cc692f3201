"""CIFAR-10 and CIFAR-100 from torchvision's on-disk layout, downloaded only when asked.

``root`` (default :func:`~autoprune.evaluators.data_home`) holds torchvision's extracted
"python version" folders: ``cifar-10-batches-py/`` (``data_batch_1`` .. ``data_batch_5``,
``test_batch``, ``batches.meta``) or ``cifar-100-python/`` (``train``, ``test``, ``meta``). File
names, URLs and checksums are read from torchvision's ``CIFAR10`` / ``CIFAR100`` classes.

The pickles are read here with :func:`read_pickle` (no code runs) and their structure is
checked: a wrong key, shape, dtype or label is a :class:`DataError` naming the file. Files
whose md5 differs from the published one load with a warning; archives are extracted only when
their md5 is the published one. Why not through torchvision's classes: ``docs/datasets.md``.
"""

from __future__ import annotations

import logging
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from autoprune.errors import DataError
from autoprune.evaluators._datasets import RawDataset, Split, data_home, register_dataset
from autoprune.evaluators._readers import read_pickle

__all__: list[str] = []

_logger = logging.getLogger("autoprune.evaluators.datasets")


@dataclass(frozen=True)
class _Cifar:
    """What differs between CIFAR-10 and CIFAR-100 beyond torchvision's class attributes."""

    title: str  # "CIFAR-10"
    torchvision_class: str  # "CIFAR10": its base_folder, url, filename, md5s, file lists
    num_classes: int
    label_key: str  # key of the labels in each batch


_CIFAR10 = _Cifar("CIFAR-10", "CIFAR10", 10, "labels")
_CIFAR100 = _Cifar("CIFAR-100", "CIFAR100", 100, "fine_labels")


def _one_line(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())


def _torchvision_class(spec: _Cifar) -> Any:
    import torchvision.datasets  # imported here: only the CIFAR loaders need it

    return getattr(torchvision.datasets, spec.torchvision_class)


def _files(tv: Any) -> list[tuple[str, str]]:
    """``(file name, published md5)`` of every file the folder must hold."""
    listed = [*tv.train_list, *tv.test_list, [tv.meta["filename"], tv.meta["md5"]]]
    return [(str(name), str(md5)) for name, md5 in listed]


def _fetch(spec: _Cifar, tv: Any, root: Path, folder: Path, download: bool) -> None:
    """Fill ``folder`` from the archive in ``root``, or download it when ``download``."""
    from torchvision.datasets.utils import (
        calculate_md5,
        download_and_extract_archive,
        extract_archive,
    )

    archive = root / tv.filename
    get = (
        f"set data.download: true with a network, or put the python-version archive "
        f"{tv.filename} ({tv.url}) in {str(root)!r}"
    )
    if archive.is_file():
        md5 = calculate_md5(archive)
        if md5 != tv.tgz_md5:
            raise DataError(
                f"{str(archive)!r} is not the published {spec.title} archive (md5 {md5}, "
                f"expected {tv.tgz_md5}): it is incomplete or another version; delete it and "
                f"{get}"
            )
        _logger.info("extracting %s into %s", archive, root)
        try:
            extract_archive(archive, root)
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise DataError(
                f"cannot extract {str(archive)!r}: {_one_line(exc)}; delete it and {get}"
            ) from None
    elif download:
        _logger.info("downloading %s from %s into %s", spec.title, tv.url, root)
        try:
            # torchvision checks the archive's md5 before it extracts it
            download_and_extract_archive(tv.url, str(root), filename=tv.filename, md5=tv.tgz_md5)
        except (OSError, RuntimeError, tarfile.TarError, EOFError) as exc:
            raise DataError(
                f"downloading {spec.title} from {tv.url} into {str(root)!r} failed: "
                f"{_one_line(exc)}; check the network, or put the python-version archive "
                f"{tv.filename} in {str(root)!r}"
            ) from None
    else:
        missing = next(name for name, _ in _files(tv) if not (folder / name).is_file())
        raise DataError(
            f"{spec.title} is not in {str(folder)!r} ({missing} is missing) and data.download "
            f"is false; {get}"
        )
    for name, _ in _files(tv):
        if not (folder / name).is_file():
            raise DataError(
                f"{str(folder / name)!r} is missing after extracting {tv.filename}; delete "
                f"{str(folder)!r} and {str(archive)!r} and {get}"
            )


def _read_batch(spec: _Cifar, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``uint8`` images ``N x 3 x 32 x 32`` and ``int64`` labels ``N`` of one batch file."""
    entry = read_pickle(path)
    fix = f"expected torchvision's {spec.title} format; replace the file"
    if not isinstance(entry, dict) or "data" not in entry or spec.label_key not in entry:
        keys = sorted(entry) if isinstance(entry, dict) else type(entry).__name__
        raise DataError(
            f"{str(path)!r} is not a {spec.title} batch: expected a dict with 'data' and "
            f"{spec.label_key!r}, got {keys}; {fix}"
        )
    data = entry["data"]
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2) or (
        data.shape[1] != 3 * 32 * 32
    ):
        what = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data)
        raise DataError(f"{str(path)!r}: 'data' is {what}, expected uint8 N x 3072; {fix}")
    labels = np.asarray(entry[spec.label_key])
    if labels.shape != (data.shape[0],) or (labels.size and labels.dtype.kind not in "iu"):
        raise DataError(
            f"{str(path)!r}: {spec.label_key!r} holds {labels.dtype} {labels.shape} for "
            f"{data.shape[0]} images, expected N integer labels; {fix}"
        )
    if labels.size and (int(labels.min()) < 0 or int(labels.max()) >= spec.num_classes):
        raise DataError(
            f"{str(path)!r}: {spec.label_key!r} holds labels {int(labels.min())}.."
            f"{int(labels.max())}, expected 0..{spec.num_classes - 1}; {fix}"
        )
    # each row is the red, green and blue 32x32 planes in turn: already C x H x W
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def _read_split(spec: _Cifar, folder: Path, listed: list[list[str]]) -> Split:
    parts = [_read_batch(spec, folder / name) for name, _ in listed]
    return Split(
        images=torch.from_numpy(np.concatenate([p[0] for p in parts])),
        labels=torch.from_numpy(np.concatenate([p[1] for p in parts])),
    )


def _read_class_names(spec: _Cifar, path: Path, key: str) -> tuple[str, ...]:
    meta = read_pickle(path)
    names = meta.get(key) if isinstance(meta, dict) else None
    if not (
        isinstance(names, list | tuple)
        and len(names) == spec.num_classes
        and all(isinstance(n, str) for n in names)
    ):
        raise DataError(
            f"{str(path)!r} is not {spec.title}'s meta file: expected a dict whose {key!r} lists "
            f"{spec.num_classes} class names; replace the file"
        )
    return tuple(names)


def _warn_if_not_published(spec: _Cifar, tv: Any, folder: Path) -> None:
    from torchvision.datasets.utils import calculate_md5

    differ = [name for name, md5 in _files(tv) if calculate_md5(folder / name) != md5]
    if differ:
        _logger.warning(
            "%s in %s: %s differ from the published files (md5); loaded as found",
            spec.title,
            folder,
            ", ".join(differ),
        )


def _load(spec: _Cifar, root: Path | None, download: bool) -> RawDataset:
    tv = _torchvision_class(spec)
    root = data_home() if root is None else root
    folder = root / tv.base_folder
    if not all((folder / name).is_file() for name, _ in _files(tv)):
        _fetch(spec, tv, root, folder, download)
    raw = RawDataset(
        train=_read_split(spec, folder, tv.train_list),
        test=_read_split(spec, folder, tv.test_list),
        num_classes=spec.num_classes,
        class_names=_read_class_names(spec, folder / tv.meta["filename"], tv.meta["key"]),
    )
    _warn_if_not_published(spec, tv, folder)
    return raw


@register_dataset("cifar10")
def _cifar10(root: Path | None, *, download: bool = False) -> RawDataset:
    """CIFAR-10 (Krizhevsky, 2009): 50,000 + 10,000 RGB 32x32 images, 10 classes.

    Source: https://www.cs.toronto.edu/~kriz/cifar.html, "Learning Multiple Layers of Features
    from Tiny Images" (no licence stated; the page asks that the report be cited). Read from
    ``root/cifar-10-batches-py`` (default root :func:`data_home`); with ``download``, a missing
    folder is fetched by torchvision, md5-checked.
    """
    return _load(_CIFAR10, root, download)


@register_dataset("cifar100")
def _cifar100(root: Path | None, *, download: bool = False) -> RawDataset:
    """CIFAR-100 (Krizhevsky, 2009): 50,000 + 10,000 RGB 32x32 images, 100 fine classes.

    Source: https://www.cs.toronto.edu/~kriz/cifar.html, "Learning Multiple Layers of Features
    from Tiny Images" (no licence stated; the page asks that the report be cited). The labels
    are the 100 ``fine_labels``, as torchvision's ``CIFAR100``; read from
    ``root/cifar-100-python`` (default root :func:`data_home`); with ``download``, a missing
    folder is fetched by torchvision, md5-checked.
    """
    return _load(_CIFAR100, root, download)
