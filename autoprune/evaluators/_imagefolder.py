"""Image folders in torchvision's ``ImageFolder`` layout, decoded once and cached.

Layout: ``root/train/<class>/**/*.png`` (or any of torchvision's ``IMG_EXTENSIONS``) and
``root/test/<class>/...``, or ``root/val/<class>/...`` where there is no ``test/`` (ImageNet's
and Imagenette's layout: their ``val`` is the held-out set, which autoprune calls the test
split; its own validation split is carved from ``train/`` by :func:`load_dataset`). Classes
and file order are exactly torchvision's ``ImageFolder(root/"train")``: class folders sorted by
name give labels 0, 1, ...; files sorted by path. A test class folder must also be a training
class.

Every image is decoded with PIL in ``num_workers`` :class:`torch.utils.data.DataLoader` worker
processes, converted to RGB (3 channels) or greyscale (1) as in torchvision's loader, scaled so
it covers ``H x W`` with its aspect ratio kept and centre-cropped to ``H x W`` (torchvision's
``Resize`` + ``CenterCrop``, bilinear), and stored as ``uint8``. The decoded tensors are cached in
one file per (folder, listing of every file's path, size and mtime, ``C x H x W``) under
:func:`~autoprune.evaluators.cache_home`, so a second load reads one file; editing, adding or
removing an image makes a new cache entry.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import torch
from tqdm.auto import tqdm

from autoprune.errors import ConfigError, DataError
from autoprune.evaluators._datasets import RawDataset, Split, cache_home, register_dataset

__all__ = ["default_num_workers"]

_logger = logging.getLogger("autoprune.evaluators.datasets")

# Bumped whenever decoding changes (conversion, resampling, crop), so old caches are not reused.
_CACHE_FORMAT = 1
_BATCH = 32
_LAYOUT = "lay it out as ROOT/train/<class>/*.png and ROOT/test/<class>/*.png (or ROOT/val/...)"


def default_num_workers() -> int:
    """Decoding processes when ``data.num_workers`` is ``null``: ``min(4, CPUs)``, e.g. 2."""
    return min(4, os.cpu_count() or 1)


class _Images(torch.utils.data.Dataset):
    """Decodes ``paths[i]`` to a ``uint8`` ``C x H x W`` tensor; a failure comes back as data."""

    def __init__(self, paths: list[str], channels: int, size: tuple[int, int]) -> None:
        self.paths = paths
        self.mode = "RGB" if channels == 3 else "L"
        self.channels = channels
        self.size = size  # (H, W)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str]:
        from PIL import Image, ImageOps

        h, w = self.size
        try:
            with Image.open(self.paths[index]) as image:
                fitted = ImageOps.fit(
                    image.convert(self.mode), (w, h), method=Image.Resampling.BILINEAR
                )
        except Exception as exc:  # any decoder failure: reported by the parent, naming the file
            message = " ".join(f"{type(exc).__name__}: {exc}".split())
            return torch.zeros(self.channels, h, w, dtype=torch.uint8), message
        pixels = np.array(fitted, dtype=np.uint8)  # a writable copy (asarray's is read-only)
        pixels = pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
        return torch.from_numpy(np.ascontiguousarray(pixels)), ""


def _decode(
    paths: list[str], channels: int, size: tuple[int, int], num_workers: int
) -> torch.Tensor:
    """All ``paths`` decoded, in order, as one ``uint8`` ``N x C x H x W`` tensor."""
    out = torch.empty(len(paths), channels, *size, dtype=torch.uint8)
    loader = torch.utils.data.DataLoader(
        _Images(paths, channels, size),
        batch_size=_BATCH,
        shuffle=False,
        num_workers=num_workers,
    )
    _logger.info("decoding %d images with %d worker processes", len(paths), num_workers)
    start = 0
    with tqdm(total=len(paths), desc="decode", unit="image", leave=False, disable=None) as bar:
        for images, errors in loader:
            for offset, error in enumerate(errors):
                if error:
                    raise DataError(
                        f"cannot decode image {paths[start + offset]!r}: {error}; replace or "
                        f"remove the file"
                    )
            out[start : start + len(images)] = images
            start += len(images)
            bar.update(len(images))
    assert start == len(paths), (start, len(paths))
    return out


def _list(root: Path) -> tuple[list[str], list[tuple[str, int]], list[tuple[str, int]], str]:
    """Class names, (path, label) of the training and test images, and the test folder's name."""
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

    if not root.is_dir():
        raise DataError(f"imagefolder root {str(root)!r} is not a folder; {_LAYOUT}")
    train_dir = root / "train"
    if not train_dir.is_dir():
        raise DataError(f"imagefolder root {str(root)!r} has no train/ folder; {_LAYOUT}")
    test_name = "test" if (root / "test").is_dir() else "val"
    test_dir = root / test_name
    if not test_dir.is_dir():
        raise DataError(
            f"imagefolder root {str(root)!r} has no test/ (or val/) folder for the test split; "
            f"{_LAYOUT}"
        )
    if test_name == "test" and (root / "val").is_dir():
        _logger.warning(
            "imagefolder %s: test/ is the test split and val/ is not used (the validation "
            "split is carved from train/)",
            root,
        )
    try:
        classes, class_to_idx = find_classes(train_dir)
        train = make_dataset(train_dir, class_to_idx, IMG_EXTENSIONS, allow_empty=False)
    except FileNotFoundError as exc:
        raise DataError(f"imagefolder {str(train_dir)!r}: {exc}; {_LAYOUT}") from None
    strangers = sorted(e.name for e in os.scandir(test_dir) if e.is_dir() and e.name not in classes)
    if strangers:
        raise DataError(
            f"imagefolder {str(test_dir)!r} has class folders {strangers} that train/ lacks; "
            f"the training classes are {classes}; rename or remove them"
        )
    test = make_dataset(test_dir, class_to_idx, IMG_EXTENSIONS, allow_empty=True)
    if not test:
        raise DataError(
            f"imagefolder {str(test_dir)!r} holds no images with extensions "
            f"{', '.join(IMG_EXTENSIONS)}; {_LAYOUT}"
        )
    return classes, train, test, test_name


def _check_memory(root: Path, n_images: int, shape: tuple[int, int, int]) -> None:
    """Refuse a folder whose decoded images would not fit in this machine's memory.

    The images are held as one ``uint8`` tensor, and splitting off the validation set copies
    the training part, so a load peaks at about twice the decoded size (bytes:
    ``n_images * C * H * W``). Without this check a folder such as ImageNet's at 224 x 224
    (about 190 GiB decoded) is decoded until the kernel kills the process.
    """
    decoded = n_images * math.prod(shape)
    available = psutil.virtual_memory().available
    if 2 * decoded > available:
        c, h, w = shape
        raise DataError(
            f"the {n_images} images of {str(root)!r} decoded at {c}x{h}x{w} take "
            f"{decoded / 2**30:.1f} GiB, and loading holds about twice that, more than the "
            f"{available / 2**30:.1f} GiB of memory available; autoprune holds a data set in "
            f"memory: lower data.input_shape or point data.root at a subset of the folder"
        )


def _cache_key(root: Path, items: list[tuple[str, int]], shape: tuple[int, int, int]) -> str:
    """Digest of the folder, every image's path, size, mtime and label, and the decoded shape."""
    listing = []
    for path, label in items:
        stat = os.stat(path)
        listing.append([os.path.relpath(path, root), stat.st_size, stat.st_mtime_ns, label])
    payload = {
        "format": _CACHE_FORMAT,
        "root": str(root.resolve()),
        "shape": list(shape),
        "files": listing,
    }
    return hashlib.sha256(json.dumps(payload).encode()).hexdigest()


def _read_cache(path: Path, n_train: int, n_test: int, shape: tuple[int, ...]) -> Any:
    if not path.is_file():
        return None
    try:
        cached = torch.load(path, weights_only=True)
        ok = (
            isinstance(cached, dict)
            and cached["train_images"].shape == (n_train, *shape)
            and cached["test_images"].shape == (n_test, *shape)
            and cached["train_images"].dtype == torch.uint8
            and cached["test_images"].dtype == torch.uint8
        )
    except Exception as exc:  # an unreadable cache is rebuilt, never fatal
        _logger.warning("ignoring unreadable image cache %s (%s)", path, exc)
        return None
    if not ok:
        _logger.warning("ignoring image cache %s: its tensors do not match the folder", path)
        return None
    return cached


def _write_cache(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(payload, tmp)
        os.replace(tmp, path)  # atomic: a concurrent reader sees the old file or the new one
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        _logger.warning("cannot write image cache %s (%s); the next load decodes again", path, exc)


@register_dataset("imagefolder")
def _imagefolder(
    root: Path | None,
    *,
    input_shape: tuple[int, int, int] | None = None,
    num_workers: int | None = None,
    cache_dir: Path | None = None,
) -> RawDataset:
    """Your own images in torchvision's ImageFolder layout, ``root/train`` + ``root/test``.

    Source: the folder at ``data.root``; its licence is that of your images. Decoded to
    ``input_shape`` (``C`` = 1 greyscale or 3 RGB, ``H x W`` pixels) by ``num_workers``
    processes (``None``: :func:`default_num_workers`) and cached under ``cache_dir`` (``None``:
    :func:`~autoprune.evaluators.cache_home`).
    """
    if root is None:
        raise ConfigError(
            f"the 'imagefolder' data set needs data.root, a folder of your images; {_LAYOUT}"
        )
    if input_shape is None or len(input_shape) != 3 or input_shape[0] not in (1, 3):
        raise ConfigError(
            f"the 'imagefolder' data set decodes to data.input_shape [C, H, W] with C = 1 "
            f"(greyscale) or 3 (RGB), but got {input_shape!r}; set e.g. input_shape: [3, 64, 64]"
        )
    c, h, w = (int(v) for v in input_shape)
    workers = default_num_workers() if num_workers is None else num_workers
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ConfigError(
            f"data.num_workers must be an int >= 0 (0 decodes in this process) or null for "
            f"{default_num_workers()}, but got {num_workers!r}"
        )
    classes, train, test, test_name = _list(root)
    _check_memory(root, len(train) + len(test), (c, h, w))
    key = _cache_key(root, train + test, (c, h, w))
    folder = cache_home() if cache_dir is None else cache_dir
    cache = folder / f"{root.name}-{c}x{h}x{w}-{key[:20]}.pt"
    cached = _read_cache(cache, len(train), len(test), (c, h, w))
    if cached is not None:
        _logger.info("imagefolder %s: decoded images from %s", root, cache)
        train_images, test_images = cached["train_images"], cached["test_images"]
    else:
        images = _decode([p for p, _ in train + test], c, (h, w), workers)
        # views of one tensor: saved once, loaded once; load_dataset copies what it keeps
        train_images, test_images = images[: len(train)], images[len(train) :]
        _write_cache(cache, {"train_images": train_images, "test_images": test_images})
    _logger.info(
        "imagefolder %s: %d classes, %d train/ and %d %s/ images at %dx%dx%d",
        root,
        len(classes),
        len(train),
        len(test),
        test_name,
        c,
        h,
        w,
    )
    return RawDataset(
        train=Split(
            images=train_images,
            labels=torch.tensor([label for _, label in train], dtype=torch.int64),
        ),
        test=Split(
            images=test_images,
            labels=torch.tensor([label for _, label in test], dtype=torch.int64),
        ),
        num_classes=len(classes),
        class_names=tuple(classes),
    )
