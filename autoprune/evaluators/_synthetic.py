"""The ``synthetic`` data set: deterministic images generated in memory, for tests."""

from __future__ import annotations

from pathlib import Path

import torch

from autoprune.errors import ConfigError
from autoprune.evaluators._datasets import RawDataset, Split, register_dataset

__all__: list[str] = []

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
    pixels, plus Gaussian noise (sigma 0.35 of full scale). The patterns are smooth so that they
    survive downscaling (reduced-resolution fidelities).
    """
    if root is not None:
        raise ConfigError(
            f"the 'synthetic' data set is generated in memory and takes no root, but got "
            f"{str(root)!r}; remove data.root"
        )
    g = torch.Generator().manual_seed(_SYNTHETIC_SEED)
    # A shared background plus a class-specific deviation of +-0.3: hard enough that a tiny CNN
    # does not learn it perfectly in a test's few epochs, so accuracy differences stay visible.
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
