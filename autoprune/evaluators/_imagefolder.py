"""Image folders in torchvision's ``ImageFolder`` layout, streamed or decoded once and cached.

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
``Resize`` + ``CenterCrop``, bilinear), as ``uint8``. ``data.cache`` says when:

- ``stream``: per batch, while training (:class:`ImageFiles` behind a
  :class:`~autoprune.evaluators.StreamedSplit`); memory does not grow with the folder.
- ``memory``: all at once, held as one tensor and cached in one file per (folder, listing of
  every file's path, size and mtime, ``C x H x W``) under
  :func:`~autoprune.evaluators.cache_home`, so a second load reads one file; editing, adding or
  removing an image makes a new cache entry. Refused when the folder would not fit in memory.
- ``auto``: ``memory`` when the decoded images take at most a quarter of the available memory,
  else ``stream``.

Either way the pixels are the same, and so are the normalisation statistics (a seeded sample of
the training images, cached beside the images), so the mode changes speed, not results.
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
from autoprune.evaluators._streaming import StreamedSplit, check_num_workers, default_num_workers

__all__ = ["ImageFiles", "default_num_workers"]

_logger = logging.getLogger("autoprune.evaluators.datasets")

# Bumped whenever decoding changes (conversion, resampling, crop), so old caches are not reused.
_CACHE_FORMAT = 1
_BATCH = 32
_LAYOUT = "lay it out as ROOT/train/<class>/*.png and ROOT/test/<class>/*.png (or ROOT/val/...)"


class ImageFiles(torch.utils.data.Dataset):
    """``(uint8 C x H x W image, label)`` of ``items[i]`` (a ``(path, label)``), decoded now.

    Paths and labels are kept in numpy arrays, not Python lists: DataLoader worker processes
    share them without copying (a list's reference counts would copy its pages into every
    worker, which for ImageNet's 1.28 million paths is hundreds of MB each).

    Raises:
        DataError: (from ``__getitem__``) The file cannot be decoded; the message names it.
    """

    def __init__(self, items: list[tuple[str, int]], channels: int, size: tuple[int, int]) -> None:
        encoded = [os.fsencode(path) for path, _ in items]
        self._ends = np.cumsum([len(p) for p in encoded], dtype=np.int64)
        self._paths = np.frombuffer(b"".join(encoded), dtype=np.uint8)
        self.targets = np.array([label for _, label in items], dtype=np.int64)
        self.mode = "RGB" if channels == 3 else "L"
        self.size = size  # (H, W)

    def __len__(self) -> int:
        return len(self.targets)

    def path(self, index: int) -> str:
        """The file of item ``index``."""
        start = int(self._ends[index - 1]) if index else 0
        return os.fsdecode(self._paths[start : int(self._ends[index])].tobytes())

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        from PIL import Image, ImageOps

        h, w = self.size
        path = self.path(index)
        try:
            with Image.open(path) as image:
                fitted = ImageOps.fit(
                    image.convert(self.mode), (w, h), method=Image.Resampling.BILINEAR
                )
        except Exception as exc:  # any decoder failure, naming the file
            message = " ".join(f"{type(exc).__name__}: {exc}".split())
            raise DataError(
                f"cannot decode image {path!r}: {message}; replace or remove the file"
            ) from None
        pixels = np.array(fitted, dtype=np.uint8)  # a writable copy (asarray's is read-only)
        pixels = pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
        return torch.from_numpy(np.ascontiguousarray(pixels)), int(self.targets[index])


def _decode(files: ImageFiles, channels: int, num_workers: int) -> torch.Tensor:
    """All ``files`` decoded, in order, as one ``uint8`` ``N x C x H x W`` tensor."""
    n = len(files)
    out = torch.empty(n, channels, *files.size, dtype=torch.uint8)
    stream = StreamedSplit(files, num_workers=num_workers)
    _logger.info("decoding %d images with %d worker processes", n, num_workers)
    start = 0
    with tqdm(total=n, desc="decode", unit="image", leave=False, disable=None) as bar:
        for images, _ in stream.batches(torch.arange(n).split(_BATCH)):
            out[start : start + len(images)] = images
            start += len(images)
            bar.update(len(images))
    assert start == n, (start, n)
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


def _in_memory(cache: str, root: Path, n_images: int, shape: tuple[int, int, int]) -> bool:
    """Whether to decode the folder into memory (``data.cache``), refusing ``memory`` for a
    folder whose decoded images would not fit in this machine's memory.

    Held in memory, the images are one ``uint8`` tensor, and splitting off the validation set
    copies the training part, so a load peaks at about twice the decoded size (bytes:
    ``n_images * C * H * W``). Without the check a folder such as ImageNet's at 224 x 224
    (about 190 GiB decoded) is decoded until the kernel kills the process.
    """
    if cache == "stream":
        return False
    decoded = n_images * math.prod(shape)
    available = psutil.virtual_memory().available
    if cache == "auto":
        fits = 4 * decoded <= available
        _logger.info(
            "imagefolder %s: %.2f GiB decoded, %.1f GiB of memory available: %s (data.cache: auto)",
            root,
            decoded / 2**30,
            available / 2**30,
            "held in memory" if fits else "streamed per batch",
        )
        return fits
    if 2 * decoded > available:
        c, h, w = shape
        raise DataError(
            f"the {n_images} images of {str(root)!r} decoded at {c}x{h}x{w} take "
            f"{decoded / 2**30:.1f} GiB, and loading holds about twice that, more than the "
            f"{available / 2**30:.1f} GiB of memory available; set data.cache: stream to read "
            f"them per batch, or lower data.input_shape or point data.root at a subset"
        )
    return True


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
    cache: str = "auto",
) -> RawDataset:
    """Your own images in torchvision's ImageFolder layout, ``root/train`` + ``root/test``.

    Source: the folder at ``data.root``; its licence is that of your images. Decoded to
    ``input_shape`` (``C`` = 1 greyscale or 3 RGB, ``H x W`` pixels) by ``num_workers``
    processes (``None``: :func:`default_num_workers`), per batch or once into memory as
    ``cache`` says (``auto``, ``memory`` or ``stream``: see the module docstring), and cached
    under ``cache_dir`` (``None``: :func:`~autoprune.evaluators.cache_home`).
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
    workers = check_num_workers(num_workers)
    classes, train, test, test_name = _list(root)
    in_memory = _in_memory(cache, root, len(train) + len(test), (c, h, w))
    key = _cache_key(root, train + test, (c, h, w))
    _logger.info(
        "imagefolder %s: %d classes, %d train/ and %d %s/ images at %dx%dx%d, %s",
        root,
        len(classes),
        len(train),
        len(test),
        test_name,
        c,
        h,
        w,
        "held in memory" if in_memory else f"streamed by {workers} worker processes",
    )
    train_files = ImageFiles(train, c, (h, w))
    test_files = ImageFiles(test, c, (h, w))
    if not in_memory:
        return RawDataset(
            train=StreamedSplit(train_files, num_workers=workers),
            test=StreamedSplit(test_files, num_workers=workers),
            num_classes=len(classes),
            class_names=tuple(classes),
            stats_key=key,
        )
    folder = cache_home() if cache_dir is None else cache_dir
    cache_file = folder / f"{root.name}-{c}x{h}x{w}-{key[:20]}.pt"
    cached = _read_cache(cache_file, len(train), len(test), (c, h, w))
    if cached is not None:
        _logger.info("imagefolder %s: decoded images from %s", root, cache_file)
        train_images, test_images = cached["train_images"], cached["test_images"]
    else:
        images = _decode(ImageFiles(train + test, c, (h, w)), c, workers)
        # views of one tensor: saved once, loaded once; load_dataset copies what it keeps
        train_images, test_images = images[: len(train)], images[len(train) :]
        _write_cache(cache_file, {"train_images": train_images, "test_images": test_images})
    return RawDataset(
        train=Split(images=train_images, labels=torch.from_numpy(train_files.targets.copy())),
        test=Split(images=test_images, labels=torch.from_numpy(test_files.targets.copy())),
        num_classes=len(classes),
        class_names=tuple(classes),
        stats_key=key,
    )
