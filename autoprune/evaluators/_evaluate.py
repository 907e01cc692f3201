"""Batches as the networks see them, where they run, and top-1 evaluation on a split.

:func:`prepare_batch` is the one conversion every image goes through (training, evaluation,
the zero-cost proxies): ``uint8`` or [0, 1] float pixels -> normalised ``float32`` at the
training resolution. :func:`split_batches` reads a split in order, from memory or streamed.
:func:`resolve_device` and :func:`resolve_precision` turn ``training.device`` and
``training.precision`` into a device and an autocast dtype.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from autoprune.errors import ConfigError
from autoprune.evaluators._datasets import DatasetSplits, Split, StreamedSplit
from autoprune.evaluators._records import Fidelity, SplitName

__all__ = [
    "CPU_AUTO_PRECISION",
    "CPU_CHANNELS_LAST",
    "PRECISIONS",
    "evaluate_accuracy",
    "prepare_batch",
    "resolve_device",
    "resolve_precision",
    "sample_batches",
    "split_batches",
]

_logger = logging.getLogger("autoprune.evaluators.train")

#: Values of ``training.precision``: ``fp32``, or autocast to ``bf16`` / ``fp16`` (GPU only).
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
#: What ``precision="auto"`` trains in on a CPU with native bfloat16 (AVX512-BF16 or AMX; on
#: others, where bfloat16 is emulated and slow, float32): ``bf16``, because
#: ``benchmarks/train_speed.py`` measured it faster at the default fidelity in every seed with
#: validation accuracy equal within the seeds' spread (``benchmarks/results/train_speed.json``).
CPU_AUTO_PRECISION = "bf16"
#: Whether training on the CPU runs in channels-last memory format: yes, measured faster by the
#: same benchmark in float32 and in bfloat16, accuracy equal within the seeds' spread.
CPU_CHANNELS_LAST = True
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``device``; ``None`` or ``"auto"``: CUDA when available, else the CPU.

    Raises:
        ConfigError: ``device`` is not a device name, or names CUDA where there is none.

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(
            f"training.device must be auto, cpu, cuda or cuda:N, but got {device!r}"
        ) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"training.device is {device!r} but torch sees no CUDA GPU here (none, or a "
            f"CPU-only torch); set training.device: auto or cpu"
        )
    return dev


@functools.cache
def _native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX)."""
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def resolve_precision(precision: str | None, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``precision`` on ``device``; ``None`` trains in float32.

    ``auto``: bfloat16 on a GPU that has it, else float16; on the CPU,
    :data:`CPU_AUTO_PRECISION` where the CPU has native bfloat16, else float32. ``None`` is
    ``auto``.

    Raises:
        ConfigError: ``precision`` is not one of :data:`PRECISIONS`, or is ``fp16`` off a GPU.

    Example:
        >>> resolve_precision("bf16", torch.device("cpu"))
        torch.bfloat16
    """
    chosen = "auto" if precision is None else precision
    if chosen not in PRECISIONS:
        raise ConfigError(
            f"training.precision must be one of {', '.join(PRECISIONS)}, but got {precision!r}"
        )
    if chosen == "auto" and device.type == "cuda":
        chosen = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    elif chosen == "auto":
        chosen = CPU_AUTO_PRECISION if CPU_AUTO_PRECISION != "bf16" or _native_bf16() else "fp32"
    if chosen == "fp16" and device.type != "cuda":
        raise ConfigError(
            "training.precision is fp16, which trains fast on GPUs only; on the CPU set "
            "training.precision: bf16 or fp32"
        )
    if chosen == "bf16" and device.type == "cpu" and not _native_bf16():
        _logger.warning(
            "training.precision is bf16 but this CPU has no native bfloat16 (AVX512-BF16 or "
            "AMX): it is emulated, slower than fp32"
        )
    return _DTYPES.get(chosen)


def uses_channels_last(device: torch.device, dtype: torch.dtype | None) -> bool:
    """Whether training runs in channels-last memory format: on GPUs under autocast, where
    tensor-core convolutions read NHWC; on the CPU, :data:`CPU_CHANNELS_LAST` when PyTorch
    has more than one thread.

    At one thread, PyTorch 2.14.1's oneDNN crashes the process (segmentation fault or abort)
    in the backward pass of a channels-last strided 1x1 convolution with 2 to 7 input channels
    (the projection shortcut of a narrow residual block), seen on an AVX2 x86 CPU; the
    contiguous format is unaffected (``tests/evaluators/test_evaluators_train.py``).
    """
    if device.type == "cuda":
        return dtype is not None
    return CPU_CHANNELS_LAST and torch.get_num_threads() > 1


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


def sample_batches(
    data: DatasetSplits, count: int, hw: tuple[int, int], *, seed: int, batch_size: int = 64
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``count`` training images drawn with ``seed`` (held in memory or streamed), normalised
    by the training statistics, at ``hw``, as ``(images, labels)`` batches of ``batch_size``.

    Example:
        >>> from autoprune.evaluators import load_dataset
        >>> data = load_dataset("synthetic", val_samples=100, seed=0)
        >>> [tuple(x.shape) for x, _ in sample_batches(data, 100, (16, 16), seed=0)]
        [(64, 1, 16, 16), (36, 1, 16, 16)]
    """
    generator = torch.Generator().manual_seed(seed)
    drawn = torch.randperm(len(data.train), generator=generator)[:count]
    mean, std = normaliser(data, torch.device("cpu"))
    out = []
    for idx in drawn.split(batch_size):
        images, labels = data.train.take(idx)
        out.append((prepare_batch(images, mean, std, hw), labels))
    return out


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
        >>> from autoprune.evaluators import load_dataset
        >>> from autoprune.spaces import create_model
        >>> data = load_dataset("synthetic", val_samples=100, seed=0)
        >>> net = create_model("resnet20", num_classes=10, in_channels=1)  # untrained
        >>> accuracy = evaluate_accuracy(net, data, split="test", input_shape=(1, 28, 28))
        >>> 0.0 <= accuracy <= 1.0
        True
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
