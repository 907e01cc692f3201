"""Batches as the networks see them, and top-1 evaluation on a split.

:func:`prepare_batch` is the one conversion every image goes through (training, evaluation,
the zero-cost proxies): ``uint8`` or [0, 1] float pixels -> normalised ``float32`` at the
training resolution. :func:`split_batches` reads a split in order, from memory or streamed.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from autoprune.errors import ConfigError
from autoprune.evaluators._datasets import DatasetSplits, Split, StreamedSplit
from autoprune.evaluators._records import Fidelity, SplitName

__all__ = ["evaluate_accuracy", "prepare_batch", "split_batches"]


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``device``, or CUDA when available and else the CPU for ``None``."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def check_shape(data: DatasetSplits, input_shape: tuple[int, int, int]) -> tuple[int, int]:
    """The deploy ``(H, W)`` of ``input_shape``, checked against the data set's channels."""
    if len(input_shape) != 3 or any(int(s) < 1 for s in input_shape):
        raise ConfigError(
            f"input_shape must be (channels, height, width) with positive sizes, but got "
            f"{tuple(input_shape)!r}; use e.g. (1, 28, 28)"
        )
    if int(input_shape[0]) != data.input_shape[0]:
        raise ConfigError(
            f"input_shape {tuple(input_shape)!r} has {input_shape[0]} channels but data set "
            f"{data.name!r} has {data.input_shape[0]}; set the model's in_channels to "
            f"{data.input_shape[0]}"
        )
    return int(input_shape[1]), int(input_shape[2])


def normaliser(data: DatasetSplits, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The training split's mean and std as ``1 x C x 1 x 1`` ``float32`` tensors on ``device``."""
    mean = torch.tensor(data.mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    std = torch.tensor(data.std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    return mean, std


def prepare_batch(
    images: torch.Tensor,
    mean: torch.Tensor,
    std: torch.Tensor,
    hw: tuple[int, int],
) -> torch.Tensor:
    """A batch ``N x C x H x W`` -> normalised ``float32`` at resolution ``hw`` (pixels).

    ``uint8`` pixels are divided by 255 first; float pixels are taken to be in [0, 1]. Resized
    with antialiased bilinear interpolation when ``hw`` differs from the stored size.

    Example:
        >>> mean, std = torch.full((1, 1, 1, 1), 0.5), torch.full((1, 1, 1, 1), 0.25)
        >>> x = prepare_batch(torch.full((2, 1, 4, 4), 255, dtype=torch.uint8), mean, std, (2, 2))
        >>> tuple(x.shape), float(x.max())
        ((2, 1, 2, 2), 2.0)
    """
    if images.dtype == torch.uint8:
        x = (images.to(torch.float32) / 255.0 - mean) / std
    else:
        x = (images.to(torch.float32) - mean) / std
    if tuple(x.shape[-2:]) != hw:
        x = F.interpolate(x, size=hw, mode="bilinear", antialias=True, align_corners=False)
    return x


def split_batches(
    part: Split | StreamedSplit, batch_size: int, *, pin_memory: bool = False
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(images, labels)`` of ``part`` in order, ``batch_size`` at a time (the last smaller)."""
    if isinstance(part, Split):
        for start in range(0, len(part), batch_size):
            yield part.images[start : start + batch_size], part.labels[start : start + batch_size]
        return
    yield from part.batches(torch.arange(len(part)).split(batch_size), pin_memory=pin_memory)


def evaluate_accuracy(
    model: nn.Module,
    data: DatasetSplits,
    *,
    split: SplitName,
    input_shape: tuple[int, int, int],
    resolution_scale: float = 1.0,
    batch_size: int = 512,
    device: str | torch.device | None = None,
) -> float:
    """Top-1 accuracy of ``model`` on a split, as a fraction in [0, 1].

    Images are fed at ``round(input_shape[1:] * resolution_scale)`` pixels, normalised with the
    training split's statistics; a streamed split is read by its DataLoader workers. The model
    is put in evaluation mode.

    Args:
        model: The trained network.
        data: Splits from :func:`load_dataset`.
        split: ``"val"`` during search, ``"test"`` for final figures only.
        input_shape: The candidate's deploy input shape ``(C, H, W)`` in pixels.
        resolution_scale: Evaluation resolution relative to the deploy one, in (0, 1].
        batch_size: Images per forward pass.
        device: Where to run; ``None`` means the device of the model's first parameter (the
            CPU for a model without parameters).

    Example:
        >>> evaluate_accuracy(net, data, split="test", input_shape=(1, 28, 28))  # doctest: +SKIP
        0.8712
    """
    hw = Fidelity(samples=None, epochs=1, resolution_scale=resolution_scale).train_hw(
        check_shape(data, input_shape)
    )
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be an integer >= 1, but got {batch_size!r}")
    part = data.split(split)
    if device is None:
        first = next(model.parameters(), None)
        dev = first.device if first is not None else torch.device("cpu")
    else:
        dev = torch.device(device)
        model.to(dev)
    mean, std = normaliser(data, dev)
    model.eval()
    correct = torch.zeros((), dtype=torch.int64, device=dev)
    with torch.no_grad():
        for images, labels in split_batches(part, batch_size, pin_memory=dev.type == "cuda"):
            images = images.to(dev)
            labels = labels.to(dev)
            logits = model(prepare_batch(images, mean, std, hw))
            correct += (logits.argmax(dim=1) == labels).sum()
    return int(correct) / len(part)
