"""Fashion-MNIST (Xiao et al., 2017) from the IDX files of Debian's ``dataset-fashion-mnist``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from autoprune.errors import DataError
from autoprune.evaluators._datasets import RawDataset, Split, register_dataset
from autoprune.evaluators._readers import read_idx

__all__ = ["FASHION_MNIST_CLASSES", "FASHION_MNIST_ROOT"]

#: Where Debian's ``dataset-fashion-mnist`` installs the four IDX files.
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
