"""Training speed and accuracy of a CIFAR-style ResNet-20 on Fashion-MNIST at several fidelities.

Measures what DESIGN.md quotes for the embedded default (2 CPU threads, SGD + one-cycle, batch
128, 1x28x28): training images per second and test accuracy for a ladder of fidelities, plus a
half-width variant. Writes ``benchmarks/results/train_speed.json``.

Usage::

    .venv/bin/python benchmarks/train_speed.py                 # all runs, about 10 minutes
    .venv/bin/python benchmarks/train_speed.py --runs 10k-x2   # one run

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

from autoprune.evaluators import Fidelity, evaluate_accuracy, load_dataset, train_from_scratch

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
    result = train_from_scratch(
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", choices=sorted(RUNS), default=list(RUNS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    data = load_dataset("fashion-mnist", val_samples=5000, seed=args.seed)
    records = [run(name, seed=args.seed, data=data) for name in args.runs]
    out = {
        "benchmark": "train_speed",
        "dataset": "fashion-mnist (val 5000 carved from train, test = published 10000)",
        "input_shape": list(INPUT_SHAPE),
        "optimizer": "SGD nesterov momentum 0.9, wd 5e-4, OneCycleLR max_lr 0.1, per-batch step",
        "seed": args.seed,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "runs": records,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    _logger.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
