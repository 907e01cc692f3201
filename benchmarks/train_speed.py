"""Training speed and accuracy of a CIFAR-style ResNet-20 on Fashion-MNIST at several fidelities.

Measures the training of the embedded default (2 CPU threads, SGD + one-cycle, batch
128, 1x28x28): training images per second (best and median of short windows) and, end to end,
test accuracy and time for a ladder of fidelities, plus half-width and half-resolution variants.
Accuracies are deterministic for a seed; times depend on what else the host runs (the load
average is recorded next to each). Writes ``benchmarks/results/train_speed.json``, keeping
the entries of runs not repeated.

Usage (from the repository root; ``autoprune`` must be importable, e.g. ``pip install -e .``
or ``PYTHONPATH=.``)::

    .venv/bin/python benchmarks/train_speed.py                 # all runs, about 15 minutes
    .venv/bin/python benchmarks/train_speed.py --runs 10k-x2   # one run (and the throughput)
    .venv/bin/python benchmarks/train_speed.py --runs          # throughput only

The model comes from ``autoprune.spaces.create_model("resnet20", ...)`` when that is importable,
otherwise from the local definition below (He et al., CVPR 2016, section 4.2: three stages of
three basic blocks, 16/32/64 channels, 1x1 convolution shortcuts where the shape changes).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autoprune.evaluators import Fidelity, evaluate_accuracy, load_dataset, train_model

_logger = logging.getLogger("autoprune.benchmarks.train_speed")

RESULTS = Path(__file__).resolve().parent / "results" / "train_speed.json"
INPUT_SHAPE = (1, 28, 28)

# name -> (width multiplier, fidelity)
RUNS: dict[str, tuple[float, Fidelity]] = {
    "10k-x2": (1.0, Fidelity(samples=10_000, epochs=2)),
    "20k-x2": (1.0, Fidelity(samples=20_000, epochs=2)),
    "20k-x3": (1.0, Fidelity(samples=20_000, epochs=3)),
    "30k-x2": (1.0, Fidelity(samples=30_000, epochs=2)),
    "20k-x2-half-width": (0.5, Fidelity(samples=20_000, epochs=2)),
    "20k-x2-half-res": (1.0, Fidelity(samples=20_000, epochs=2, resolution_scale=0.5)),
}


class _BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


def local_resnet20(*, num_classes: int = 10, in_channels: int = 1, width: float = 1.0) -> nn.Module:
    """CIFAR-style ResNet-20 (0.27 M parameters at width 1.0)."""
    widths = [max(1, round(c * width)) for c in (16, 32, 64)]
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False),
        nn.BatchNorm2d(widths[0]),
        nn.ReLU(),
    ]
    c_in = widths[0]
    for stage, c_out in enumerate(widths):
        for block in range(3):
            layers.append(_BasicBlock(c_in, c_out, 2 if stage > 0 and block == 0 else 1))
            c_in = c_out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, num_classes)]
    net = nn.Sequential(*layers)
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    return net


def make_model(width: float) -> tuple[nn.Module, str]:
    """ResNet-20 from autoprune.spaces when available (full width only), else the local one."""
    if width == 1.0:
        try:
            from autoprune.spaces import create_model  # type: ignore[attr-defined]
        except ImportError:
            pass
        else:
            return create_model("resnet20", num_classes=10, in_channels=1), "autoprune.spaces"
    return local_resnet20(width=width), "benchmarks.train_speed.local_resnet20"


def run(name: str, *, seed: int, data: Any) -> dict[str, Any]:
    width, fidelity = RUNS[name]
    torch.manual_seed(seed)
    model, source = make_model(width)
    params = sum(p.numel() for p in model.parameters())
    load_before = os.getloadavg()[0]
    result = train_model(
        model, data, fidelity=fidelity, input_shape=INPUT_SHAPE, seed=seed, progress=True
    )
    start = time.perf_counter()
    test_acc = evaluate_accuracy(
        model,
        data,
        split="test",
        input_shape=INPUT_SHAPE,
        resolution_scale=fidelity.resolution_scale,
    )
    eval_seconds = time.perf_counter() - start
    record = {
        "name": name,
        "model": "resnet20",
        "model_source": source,
        "width": width,
        "params": params,
        "fidelity": fidelity.to_dict(),
        "fidelity_label": fidelity.describe(INPUT_SHAPE[1:]),
        "val_accuracy": result.accuracy,
        "test_accuracy": test_acc,
        "train_seconds": round(result.train_seconds, 2),
        "images_per_second": round(result.images_per_second, 1),
        "test_eval_seconds": round(eval_seconds, 2),
        "train_loss": result.train_loss,
        "load_average_1min_before": load_before,
        "load_average_1min_after": os.getloadavg()[0],
    }
    _logger.info(
        "%s: %s, test %.2f %%, val %.2f %%, %.1f s, %.0f images/s",
        name,
        record["fidelity_label"],
        100 * test_acc,
        100 * result.accuracy,
        result.train_seconds,
        result.images_per_second,
    )
    return record


# name -> (width multiplier, training resolution scale)
THROUGHPUT: dict[str, tuple[float, float]] = {
    "full": (1.0, 1.0),
    "half-width": (0.5, 1.0),
    "half-res": (1.0, 0.5),
}


def throughput(
    name: str,
    *,
    data: Any,
    batch_size: int = 128,
    warmup: int = 5,
    windows: int = 7,
    steps: int = 10,
) -> dict[str, Any]:
    """Training images/s in short windows (best and median): robust to a busy shared host.

    The end-to-end runs above time whole trainings, which other processes on the host can slow
    down for minutes; the best of several short windows approximates the uncontended speed.
    The step is the one :func:`train_model` takes (uint8 -> float, normalise, resize,
    forward, cross-entropy, backward, SGD + Nesterov).
    """
    width, scale = THROUGHPUT[name]
    torch.manual_seed(0)
    model, source = make_model(width)
    model.train()
    optimizer = torch.optim.SGD(
        model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4
    )
    hw = Fidelity(samples=None, epochs=1, resolution_scale=scale).train_hw(INPUT_SHAPE[1:])
    mean, std = data.mean[0], data.std[0]
    generator = torch.Generator().manual_seed(0)

    def step() -> None:
        idx = torch.randint(0, len(data.train), (batch_size,), generator=generator)
        x = (data.train.images[idx].float() / 255.0 - mean) / std
        if tuple(x.shape[-2:]) != hw:
            x = nn.functional.interpolate(x, size=hw, mode="bilinear", antialias=True)
        loss = nn.functional.cross_entropy(model(x), data.train.labels[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(warmup):
        step()
    rates = []
    for _ in range(windows):
        start = time.perf_counter()
        for _ in range(steps):
            step()
        rates.append(steps * batch_size / (time.perf_counter() - start))
    rates.sort()
    record = {
        "name": name,
        "model": "resnet20",
        "model_source": source,
        "width": width,
        "resolution_hw": list(hw),
        "batch_size": batch_size,
        "windows": windows,
        "steps_per_window": steps,
        "images_per_second_best": round(rates[-1], 1),
        "images_per_second_median": round(rates[len(rates) // 2], 1),
        "load_average_1min": os.getloadavg()[0],
    }
    _logger.info(
        "throughput %s (%dx%d): best %.0f, median %.0f images/s",
        name,
        *hw,
        rates[-1],
        rates[len(rates) // 2],
    )
    return record


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="*", choices=sorted(RUNS), default=list(RUNS))
    parser.add_argument(
        "--throughput", nargs="*", choices=sorted(THROUGHPUT), default=list(THROUGHPUT)
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    data = load_dataset("fashion-mnist", val_samples=5000, seed=args.seed)
    # Results of runs not repeated now are kept from the previous file.
    previous: dict[str, Any] = {}
    if args.out.is_file():
        previous = json.loads(args.out.read_text())
    speeds = {r["name"]: r for r in previous.get("throughput", [])}
    for name in args.throughput:
        speeds[name] = throughput(name, data=data)
    records = {r["name"]: r for r in previous.get("runs", [])}
    for name in args.runs:
        records[name] = run(name, seed=args.seed, data=data)
    out = {
        "benchmark": "train_speed",
        "dataset": "fashion-mnist (val 5000 carved from train, test = published 10000)",
        "input_shape": list(INPUT_SHAPE),
        "optimizer": "SGD nesterov momentum 0.9, wd 5e-4, OneCycleLR max_lr 0.1, per-batch step",
        "seed": args.seed,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "throughput": [speeds[n] for n in THROUGHPUT if n in speeds],
        "runs": [records[n] for n in RUNS if n in records],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    _logger.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
