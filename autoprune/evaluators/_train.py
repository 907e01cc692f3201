"""Training at a fidelity, optionally distilled from a teacher (evaluation: ``_evaluate.py``).

:func:`train_model` trains whatever model it is given: a fresh initialisation (Liu et al.,
*Rethinking the Value of Network Pruning*, ICLR 2019: the pruned architecture, not the inherited
weights, is what matters) or weights inherited from a trained base (the fine-tune baseline).
SGD + Nesterov momentum under a one-cycle learning-rate schedule (Smith & Topin, 2019) stepped
once per batch; with a :class:`Distillation`, the loss is Hinton et al.'s (2015) softened-target
loss against a teacher; under the autocast ``precision`` asks for (``auto``: bfloat16 on GPUs
and on CPUs with native bfloat16), in channels-last memory format on GPUs under autocast and on
the CPU (:func:`~autoprune.evaluators._evaluate.uses_channels_last`). A streamed training split
is read by its DataLoader workers in the order the in-memory path would index it.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from autoprune._interrupts import raise_if_interrupted
from autoprune.errors import ConfigError
from autoprune.evaluators._datasets import DatasetSplits, StreamedSplit
from autoprune.evaluators._evaluate import (
    check_shape,
    evaluate_accuracy,
    normaliser,
    prepare_batch,
    resolve_device,
    resolve_precision,
    uses_channels_last,
)
from autoprune.evaluators._records import EvalResult, Fidelity

__all__ = [
    "Distillation",
    "EpochHook",
    "TrainingDiverged",
    "evaluate_accuracy",
    "prepare_batch",
    "train_model",
]

_logger = logging.getLogger("autoprune.evaluators.train")

# Loss is read back from the device every this many steps (and at the end of each epoch) to
# detect divergence and feed the progress bar: a read is a host-device sync on a GPU.
_CHECK_EVERY = 10


class TrainingDiverged(Exception):
    """The training loss became NaN or infinite; the search records the trial as failed.

    Attributes:
        epoch: Epoch (0-based) in which the loss was first seen non-finite.
        step: Global optimizer step (0-based) at which it was seen.
        loss: The non-finite loss value.
        lr: Learning rate at that step.
    """

    def __init__(self, *, epoch: int, step: int, loss: float, lr: float) -> None:
        self.epoch = epoch
        self.step = step
        self.loss = loss
        self.lr = lr
        super().__init__(
            f"training diverged: loss {loss} at epoch {epoch + 1}, step {step + 1} "
            f"(lr {lr:.4g}); lower lr or check the model's initialisation"
        )


#: Called after every epoch but the last as ``hook(epoch, epochs, accuracy)``: the epoch just
#: finished (1-based), the epochs planned, and the validation accuracy (a fraction) reached so
#: far. It may raise to stop the training (early stopping); the exception propagates.
EpochHook = Callable[[int, int | float, float], None]


@dataclass(frozen=True)
class Distillation:
    """Knowledge distillation from a trained teacher (Hinton, Vinyals & Dean, 2015).

    The loss is ``weight * T**2 * KL(softmax(t / T) || softmax(s / T)) + (1 - weight) * CE(s, y)``
    for student logits ``s``, teacher logits ``t`` and labels ``y``: the ``T**2`` keeps the soft
    term's gradients on the scale of the hard one's as ``T`` changes. The teacher sees the same
    (normalised, resized) batch as the student, in evaluation mode and without gradients.

    Attributes:
        teacher: The trained network whose softened outputs the student learns from.
        temperature: Softening temperature ``T`` (> 0); 1 leaves the teacher's probabilities
            as they are, larger spreads them over the wrong classes.
        weight: Share of the soft-target term in the loss, in [0, 1].
    """

    teacher: nn.Module
    temperature: float = 4.0
    weight: float = 0.9

    def __post_init__(self) -> None:
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise ConfigError(
                f"distillation temperature must be a positive number, but got "
                f"{self.temperature!r}; use e.g. 4"
            )
        if not (math.isfinite(self.weight) and 0 <= self.weight <= 1):
            raise ConfigError(
                f"distillation weight must be in [0, 1], but got {self.weight!r}; use e.g. 0.9"
            )

    def loss(
        self, student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        """The distillation loss of one batch (nats), from both networks' logits."""
        t = self.temperature
        soft = F.kl_div(
            F.log_softmax(student / t, dim=1),
            F.log_softmax(teacher / t, dim=1),
            reduction="batchmean",
            log_target=True,
        )
        return self.weight * t * t * soft + (1 - self.weight) * F.cross_entropy(student, labels)


def _check_optimizer(*, lr: float, momentum: float, weight_decay: float) -> None:
    if not (math.isfinite(lr) and lr > 0):
        raise ConfigError(f"train.lr must be a positive number, but got {lr!r}; use e.g. 0.1")
    # Nesterov momentum needs a momentum in (0, 1) (torch.optim.SGD rejects 0).
    if not (math.isfinite(momentum) and 0 < momentum < 1):
        raise ConfigError(
            f"train.momentum must be in (0, 1) for Nesterov SGD, but got {momentum!r}; use e.g. 0.9"
        )
    if not (math.isfinite(weight_decay) and weight_decay >= 0):
        raise ConfigError(
            f"train.weight_decay must be >= 0, but got {weight_decay!r}; use e.g. 5e-4"
        )


def _batches(perm: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """Split a permutation into batches; a final batch of one image joins no step.

    Batch normalisation cannot normalise a batch of one image in training mode.
    """
    chunks = list(perm.split(batch_size))
    if len(chunks) > 1 and len(chunks[-1]) < 2:
        chunks.pop()
    return chunks


def _epoch_plans(
    n: int, fidelity: Fidelity, generator: torch.Generator
) -> list[list[torch.Tensor]]:
    """The batches of each pass over ``n`` images, each pass freshly shuffled; a fractional
    ``fidelity.epochs`` keeps that share of the last pass's batches (at least one)."""
    passes = math.ceil(fidelity.epochs)
    plans = [
        _batches(torch.randperm(n, generator=generator), fidelity.batch_size) for _ in range(passes)
    ]
    share = fidelity.epochs - (passes - 1)
    if share < 1:
        plans[-1] = plans[-1][: max(1, round(share * len(plans[-1])))]
    return plans


def train_model(
    model: nn.Module,
    data: DatasetSplits,
    *,
    fidelity: Fidelity,
    input_shape: tuple[int, int, int],
    seed: int,
    lr: float = 0.1,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    distillation: Distillation | None = None,
    on_epoch: EpochHook | None = None,
    evaluator: str = "scratch-e",
    progress: bool = False,
    device: str | torch.device | None = None,
    precision: str | None = None,
    channels_last: bool | None = None,
) -> EvalResult:
    """Train ``model`` in place, then measure its validation accuracy.

    Uses ``fidelity.samples`` training images (a subset drawn with ``seed``; all when ``None``
    or larger than the split), reshuffled each epoch with ``seed``, for ``fidelity.epochs``
    epochs (a fractional part is that share of one more epoch's batches) of batch
    ``fidelity.batch_size``, with SGD (Nesterov, ``momentum``,
    ``weight_decay``) under a one-cycle schedule peaking at ``lr`` and stepped per batch.
    Images are trained and evaluated at ``fidelity.train_hw(input_shape[1:])``, resized
    with antialiased bilinear interpolation when that differs from the stored size. Runs under
    a forked RNG seeded with ``seed`` (dropout and similar are reproducible; the caller's RNG
    state is left alone), so on the CPU the same seed gives the same accuracy. The number of
    threads is the caller's (``torch.set_num_threads``). The model ends on ``device``, in
    evaluation mode.

    Args:
        model: Network taking ``input_shape`` images and returning logits: freshly initialised
            (training from scratch) or with inherited weights (fine-tuning).
        data: Splits from :func:`load_dataset` or :meth:`DatasetSplits.from_datasets`, held in
            memory or streamed (read by its DataLoader workers, batch by batch, in the order
            the in-memory path indexes); trains on ``train``, evaluates on ``val``.
        fidelity: Samples, epochs, resolution scale and batch size.
        input_shape: The candidate's deploy input shape ``(C, H, W)`` in pixels.
        seed: Seed of the subset, the shuffling and the model's own randomness.
        lr: Peak learning rate of the one-cycle schedule.
        momentum: SGD momentum (Nesterov); constant, not cycled.
        weight_decay: L2 penalty applied by SGD to every parameter but the learned step sizes
            of fake quantization (``act_step``).
        distillation: Learn from a teacher's softened outputs as well as the labels.
        on_epoch: Called after every epoch but the last with the epoch (1-based), the epochs
            planned and the validation accuracy so far (which costs one pass over the
            validation split); an exception it raises stops the training and propagates.
        evaluator: Name recorded on the result (see :class:`EvalResult`).
        progress: Show a tqdm bar over the training batches (removed when done).
        device: Where to train (``training.device``); ``None`` or ``"auto"``: CUDA when
            available, else the CPU.
        precision: ``"fp32"``, or autocast to ``"bf16"`` or ``"fp16"`` (GPU only, with loss
            scaling) (``training.precision``); ``None`` or ``"auto"``: see
            :func:`~autoprune.evaluators._evaluate.resolve_precision`. Evaluation is float32.
        channels_last: Train in channels-last memory format; ``None``: where it helps
            (:func:`~autoprune.evaluators._evaluate.uses_channels_last`). The model is handed
            back contiguous either way.

    Returns:
        The validation accuracy with its fidelity, resolution, time and throughput.

    Raises:
        TrainingDiverged: The loss became NaN or infinite.
        ConfigError: ``input_shape`` does not match the data set's channels, ``lr``,
            ``momentum`` or ``weight_decay`` is out of range, or ``device`` or ``precision``
            cannot be had here.

    Example:
        >>> from autoprune.evaluators import load_dataset
        >>> data = load_dataset("synthetic", val_samples=200, seed=0)
        >>> net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(),
        ...                     nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(128, 10))
        >>> r = train_model(net, data, fidelity=Fidelity(samples=256, epochs=2),
        ...                 input_shape=(1, 28, 28), seed=0, device="cpu")
        >>> r.split, r.samples, r.epochs, r.input_hw, 0 <= r.accuracy <= 1
        ('val', 256, 2, (28, 28), True)
    """
    _check_optimizer(lr=lr, momentum=momentum, weight_decay=weight_decay)
    deploy_hw = check_shape(data, input_shape)
    hw = fidelity.train_hw(deploy_hw)
    dev = resolve_device(device)
    dtype = resolve_precision(precision, dev)  # None: float32
    if channels_last is None:
        channels_last = uses_channels_last(dev, dtype)
    scaler = torch.amp.GradScaler(dev.type) if dtype == torch.float16 else None
    train = data.train
    n_all = len(train)
    n = n_all if fidelity.samples is None else min(fidelity.samples, n_all)
    if fidelity.samples is not None and fidelity.samples > n_all:
        _logger.warning(
            "fidelity asks for %d training samples but %r has %d; training on all %d",
            fidelity.samples,
            data.name,
            n_all,
            n_all,
        )
    teacher = None
    if distillation is not None:
        teacher = distillation.teacher.to(dev).eval()
    fork_devices = [dev] if dev.type == "cuda" else []
    intermediate: list[float] = []

    evaluating = [0.0]  # seconds spent in val_accuracy

    def val_accuracy() -> float:
        begin = time.perf_counter()
        accuracy = evaluate_accuracy(
            model,
            data,
            split="val",
            input_shape=input_shape,
            resolution_scale=fidelity.resolution_scale,
            device=dev,
        )
        evaluating[0] += time.perf_counter() - begin
        return accuracy

    with torch.random.fork_rng(devices=fork_devices):
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        subset = torch.randperm(n_all, generator=generator)[:n]
        if not isinstance(train, StreamedSplit):
            images = train.images[subset].to(dev)
            labels = train.labels[subset].to(dev)
        mean, std = normaliser(data, dev)

        epoch_plans = _epoch_plans(n, fidelity, generator)
        streamed = None
        if isinstance(train, StreamedSplit):  # read by its workers, in the plans' order
            order = [subset[idx] for plan in epoch_plans for idx in plan]
            streamed = train.batches(order, pin_memory=dev.type == "cuda")
        total_steps = sum(len(plan) for plan in epoch_plans)
        model.to(dev)
        if channels_last:
            model.to(memory_format=torch.channels_last)
        # Learned quantizer step sizes (LSQ's ``act_step``) are ranges, not weights: no decay.
        steps = [p for n, p in model.named_parameters() if n.endswith("act_step")]
        weights = [p for n, p in model.named_parameters() if not n.endswith("act_step")]
        groups = [{"params": weights}] + ([{"params": steps, "weight_decay": 0.0}] if steps else [])
        optimizer = torch.optim.SGD(
            groups,
            lr=lr,
            momentum=momentum,
            nesterov=True,
            weight_decay=weight_decay,
        )
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=lr, total_steps=total_steps, cycle_momentum=False
        )
        _logger.debug(
            "training %s on %s in %s%s: %s, %d steps, lr %g%s",
            type(model).__name__,
            dev,
            "float32" if dtype is None else f"{dtype} autocast",
            ", channels last" if channels_last else "",
            fidelity.describe(deploy_hw),
            total_steps,
            lr,
            "" if distillation is None else f", distilled at T={distillation.temperature:g}",
        )
        bar = tqdm(total=total_steps, desc="train", unit="batch", leave=False, disable=not progress)
        model.train()
        step = 0
        seen = 0
        epoch_loss = 0.0
        seconds = 0.0
        start = time.perf_counter()
        try:
            for epoch, plan in enumerate(epoch_plans):
                loss_sum = torch.zeros((), device=dev)
                epoch_images = 0
                for i, idx in enumerate(plan):
                    raise_if_interrupted()
                    if streamed is None:
                        idx = idx.to(dev)
                        batch, truth = images[idx], labels[idx]
                    else:
                        batch, truth = (t.to(dev, non_blocking=True) for t in next(streamed))
                    x = prepare_batch(batch, mean, std, hw)
                    if channels_last:
                        x = x.contiguous(memory_format=torch.channels_last)
                    with torch.autocast(
                        dev.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None
                    ):
                        logits = model(x)
                        if teacher is None:
                            loss = F.cross_entropy(logits, truth)
                        else:
                            assert distillation is not None
                            with torch.no_grad():
                                target = teacher(x)
                            loss = distillation.loss(logits.float(), target.float(), truth)
                    optimizer.zero_grad(set_to_none=True)
                    if scaler is None:
                        loss.backward()
                        optimizer.step()
                    else:  # float16: loss scaling, so that small gradients do not underflow
                        scaler.scale(loss).backward()
                        scaler.step(optimizer)
                        scaler.update()
                    scheduler.step()
                    loss_sum += loss.detach() * len(idx)
                    epoch_images += len(idx)
                    if (i + 1) % _CHECK_EVERY == 0 or i + 1 == len(plan):
                        value = float(loss.detach())
                        if not math.isfinite(value):
                            raise TrainingDiverged(
                                epoch=epoch,
                                step=step,
                                loss=value,
                                lr=optimizer.param_groups[0]["lr"],
                            )
                        bar.set_postfix(epoch=epoch + 1, loss=f"{value:.3f}", refresh=False)
                    step += 1
                    bar.update(1)
                seen += epoch_images
                epoch_loss = float(loss_sum) / max(epoch_images, 1)
                if not math.isfinite(epoch_loss):
                    raise TrainingDiverged(
                        epoch=epoch,
                        step=step - 1,
                        loss=epoch_loss,
                        lr=optimizer.param_groups[0]["lr"],
                    )
                _logger.debug("epoch %d/%g: loss %.4f", epoch + 1, fidelity.epochs, epoch_loss)
                if on_epoch is not None and epoch + 1 < len(epoch_plans):
                    seconds += time.perf_counter() - start  # evaluation is not training time
                    accuracy = val_accuracy()
                    intermediate.append(accuracy)
                    model.train()
                    on_epoch(epoch + 1, fidelity.epochs, accuracy)
                    start = time.perf_counter()
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            seconds += time.perf_counter() - start
        finally:
            bar.close()
            if streamed is not None:
                streamed.close()  # stops its worker processes, also after an early stop
            if channels_last:
                model.to(memory_format=torch.contiguous_format)  # as saved and exported

    accuracy = val_accuracy()
    result = EvalResult(
        accuracy=accuracy,
        split="val",
        fidelity=fidelity,
        input_hw=hw,
        train_seconds=seconds,
        images_per_second=seen / seconds if seconds > 0 else math.inf,
        epochs=fidelity.epochs,
        samples=n,
        seed=seed,
        train_loss=epoch_loss,
        evaluator=evaluator,
        intermediate=tuple(intermediate),
        eval_seconds=evaluating[0],
    )
    _logger.debug("%s in %.1f s (%.0f images/s)", result.label, seconds, result.images_per_second)
    return result
