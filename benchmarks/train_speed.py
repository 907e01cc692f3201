"""Training speed and accuracy of a CIFAR-style ResNet-20 on Fashion-MNIST at several fidelities.

Measures the training of the embedded default (2 CPU threads, SGD + one-cycle, batch
128, 1x28x28): training images per second (best and median of short windows) and, end to end,
test accuracy and time for a ladder of fidelities, plus half-width and half-resolution variants.
Accuracies are deterministic for a seed; times depend on what else the host runs (the load
average is recorded next to each). Writes ``benchmarks/results/train_speed.json``, keeping
the entries of runs not repeated.

``--precision`` compares float32 with bfloat16 autocast on the CPU, each in contiguous and in
channels-last memory format, at the default fidelity (the embedded default config's resnet20
and ``training`` section: 20,000 samples x 1 epoch, batch 128), for 3 seeds, the variants in
turn so that a change in the host's load hits all: images/s (per second of wall time and of CPU
time), validation and test accuracy, and whether each is faster than float32 with accuracy
equal within the seeds' spread (what ``training.precision: auto`` and the memory format may
pick on a CPU: ``autoprune.evaluators.CPU_AUTO_PRECISION`` and ``CPU_CHANNELS_LAST``). Short
windows compare the four variants' throughput too.

Usage (from the repository root; ``autoprune`` must be importable, e.g. ``pip install -e .``
or ``PYTHONPATH=.``)::

    .venv/bin/python benchmarks/train_speed.py                 # all runs, about 15 minutes
    .venv/bin/python benchmarks/train_speed.py --runs 10k-x2   # one run (and the throughput)
    .venv/bin/python benchmarks/train_speed.py --runs          # throughput only
    .venv/bin/python benchmarks/train_speed.py --runs --throughput  # precision variants only

The model comes from ``autoprune.spaces.create_model("resnet20", ...)`` when that is importable,
otherwise from the local definition below (He et al., CVPR 2016, section 4.2: three stages of
three basic blocks, 16/32/64 channels, 1x1 convolution shortcuts where the shape changes).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import torch
from _common import code_key, code_versions, cpu_name
from torch import nn

from autoprune.config import load_config
from autoprune.evaluators import Fidelity, evaluate_accuracy, fidelity_of, load_dataset, train_model

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


PRECISIONS = ("fp32", "bf16")
#: name -> (precision, channels-last memory format); "fp32" is the baseline
VARIANTS: dict[str, tuple[str, bool]] = {
    "fp32": ("fp32", False),
    "fp32-channels-last": ("fp32", True),
    "bf16": ("bf16", False),
    "bf16-channels-last": ("bf16", True),
}
PRECISION_SEEDS = (0, 1, 2)


def precision_run(variant: str, *, seed: int, data: Any) -> dict[str, Any]:
    """One training of the default config's base model at its fidelity, on the CPU."""
    precision, channels_last = VARIANTS[variant]
    from autoprune.spaces import Candidate, build_model

    config = load_config()
    candidate = Candidate(
        model=config.model.name,
        num_classes=config.model.num_classes,
        in_channels=config.model.in_channels,
        input_shape=config.data.input_shape,
    )
    model = build_model(candidate, seed=seed)
    training = config.training
    fidelity = fidelity_of(training)
    load_before = os.getloadavg()[0]
    cpu_before = time.process_time()
    result = train_model(
        model,
        data,
        fidelity=fidelity,
        input_shape=candidate.input_shape,
        seed=seed,
        lr=training.lr,
        momentum=training.momentum,
        weight_decay=training.weight_decay,
        device="cpu",
        precision=precision,
        channels_last=channels_last,
    )
    cpu_seconds = time.process_time() - cpu_before  # training and one validation pass
    start = time.process_time()
    evaluate_accuracy(model, data, split="val", input_shape=candidate.input_shape)
    cpu_seconds -= time.process_time() - start  # less that pass, measured again
    test = evaluate_accuracy(model, data, split="test", input_shape=candidate.input_shape)
    record = {
        "variant": variant,
        "precision": precision,
        "memory_format": "channels_last" if channels_last else "contiguous",
        "seed": seed,
        "fidelity_label": fidelity.describe(candidate.input_shape[1:]),
        "val_accuracy": result.accuracy,
        "test_accuracy": test,
        "train_seconds": round(result.train_seconds, 2),
        "images_per_second": round(result.images_per_second, 1),
        "train_cpu_seconds": round(cpu_seconds, 2),
        "images_per_cpu_second": round(result.samples * fidelity.epochs / cpu_seconds, 1),
        "train_loss": result.train_loss,
        "load_average_1min_before": load_before,
        "load_average_1min_after": os.getloadavg()[0],
    }
    _logger.info(
        "%s seed %d: val %.2f %%, test %.2f %%, %.0f images/s",
        variant,
        seed,
        100 * result.accuracy,
        100 * test,
        result.images_per_second,
    )
    return record


def precision_windows(*, data: Any, rounds: int = 5, steps: int = 10) -> list[dict[str, Any]]:
    """Training images/s of float32 and bf16, each contiguous and channels-last, in short
    windows taken in turn (one window of each variant per round): best and median, per second
    of wall time and per second of this process's CPU time (less disturbed by other processes
    on a shared host)."""
    import torch.nn.functional as F

    from autoprune.spaces import Candidate, build_model

    candidate = Candidate(model="resnet20", num_classes=10, in_channels=1, input_shape=INPUT_SHAPE)
    variants = [(p, cl) for p in PRECISIONS for cl in (False, True)]
    models = {v: build_model(candidate, seed=0).train() for v in variants}
    optimizers = {
        v: torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9, nesterov=True)
        for v, m in models.items()
    }
    for (_, cl), model in models.items():
        if cl:
            model.to(memory_format=torch.channels_last)
    mean, std = data.mean[0], data.std[0]
    generator = torch.Generator().manual_seed(0)

    def step(variant: tuple[str, bool]) -> None:
        precision, cl = variant
        idx = torch.randint(0, len(data.train), (128,), generator=generator)
        x = (data.train.images[idx].float() / 255.0 - mean) / std
        if cl:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = F.cross_entropy(models[variant](x), data.train.labels[idx])
        optimizers[variant].zero_grad(set_to_none=True)
        loss.backward()
        optimizers[variant].step()

    rates: dict[tuple[str, bool], list[float]] = {v: [] for v in variants}
    cpu_rates: dict[tuple[str, bool], list[float]] = {v: [] for v in variants}
    for v in variants:
        for _ in range(3):
            step(v)  # warm-up: oneDNN picks and caches its kernels
    for _ in range(rounds):
        for v in variants:
            start, cpu_start = time.perf_counter(), time.process_time()
            for _ in range(steps):
                step(v)
            rates[v].append(steps * 128 / (time.perf_counter() - start))
            cpu_rates[v].append(steps * 128 / (time.process_time() - cpu_start))
    out = []
    for (precision, cl), r in rates.items():
        r.sort()
        c = sorted(cpu_rates[(precision, cl)])
        out.append(
            {
                "precision": precision,
                "memory_format": "channels_last" if cl else "contiguous",
                "windows": rounds,
                "steps_per_window": steps,
                "images_per_second_best": round(r[-1], 1),
                "images_per_second_median": round(r[len(r) // 2], 1),
                "images_per_cpu_second_best": round(c[-1], 1),
                "images_per_cpu_second_median": round(c[len(c) // 2], 1),
            }
        )
        _logger.info(
            "window %s %s: best %.0f images/s, %.0f per CPU second",
            precision,
            out[-1]["memory_format"],
            r[-1],
            c[-1],
        )
    return out


def _stats(values: list[float]) -> dict[str, float]:
    mean = sum(values) / len(values)
    sd = (sum((v - mean) ** 2 for v in values) / max(len(values) - 1, 1)) ** 0.5
    return {"mean": mean, "std": sd, "min": min(values), "max": max(values)}


def precision_summary(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Per variant: images/s and accuracies over the seeds; and each variant against float32
    contiguous: faster in every seed (by wall time and by CPU time), and its mean validation
    accuracy within the seeds' spread (the larger max - min of the two) of float32's, with the
    per-seed differences. ``cpu_auto_precision`` / ``cpu_channels_last``: what passes both."""
    keys = ("images_per_second", "images_per_cpu_second", "val_accuracy", "test_accuracy")
    by = {v: [r for r in records if r["variant"] == v] for v in VARIANTS}
    summary: dict[str, Any] = {
        v: {key: _stats([r[key] for r in rs]) for key in keys} for v, rs in by.items() if rs
    }
    if "fp32" not in summary:
        return summary
    base = summary["fp32"]
    against: dict[str, Any] = {}
    for variant in [v for v in summary if v != "fp32"]:
        ours = summary[variant]
        faster = all(ours[k]["min"] > base[k]["max"] for k in keys[:2])
        spread = max(s["val_accuracy"]["max"] - s["val_accuracy"]["min"] for s in (base, ours))
        difference = ours["val_accuracy"]["mean"] - base["val_accuracy"]["mean"]
        paired = {
            str(r["seed"]): round(r["val_accuracy"] - q["val_accuracy"], 4)
            for r in by[variant]
            for q in by["fp32"]
            if q["seed"] == r["seed"]
        }
        against[variant] = {
            "speedup": round(ours[keys[0]]["mean"] / base[keys[0]]["mean"], 3),
            "speedup_cpu_time": round(ours[keys[1]]["mean"] / base[keys[1]]["mean"], 3),
            "faster_in_every_seed": faster,
            "val_accuracy_difference": round(difference, 4),
            "val_accuracy_difference_per_seed": paired,
            "val_accuracy_seed_spread": round(spread, 4),
            "accuracy_equal_within_spread": abs(difference) <= spread,
            "passes": faster and abs(difference) <= spread,
        }
    summary["against_fp32"] = against
    summary["passes"] = sorted(v for v, a in against.items() if a["passes"])
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="*", choices=sorted(RUNS), default=list(RUNS))
    parser.add_argument(
        "--throughput", nargs="*", choices=sorted(THROUGHPUT), default=list(THROUGHPUT)
    )
    parser.add_argument("--precision", nargs="*", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    data = load_dataset("fashion-mnist", val_samples=5000, seed=args.seed)
    _logger.info("CPU %s, native bf16: %s", cpu_name(), torch.cpu._is_avx512_bf16_supported())
    # Results of runs not repeated now are kept from the previous file, if the same code made it.
    previous: dict[str, Any] = {}
    if args.out.is_file():
        previous = json.loads(args.out.read_text())
    if previous.get("code", {}).get("key") != code_key():
        _logger.info("%s was written by other code: its results are not kept", args.out)
        previous = {}
    # every entry names the CPU it was measured on (older files named it once, at the top)
    for entry in [*previous.get("throughput", []), *previous.get("runs", [])]:
        entry.setdefault("cpu", previous.get("cpu"))
    speeds = {r["name"]: r for r in previous.get("throughput", [])}
    for name in args.throughput:
        speeds[name] = {**throughput(name, data=data), "cpu": cpu_name()}
    records = {r["name"]: r for r in previous.get("runs", [])}
    for name in args.runs:
        records[name] = {**run(name, seed=args.seed, data=data), "cpu": cpu_name()}
    precision = previous.get("precision", {})
    if args.precision:
        windows = precision_windows(data=data)
        trainings = [
            precision_run(p, seed=seed, data=data)
            for seed in PRECISION_SEEDS
            for p in args.precision  # in turn, so that load changes hit every variant
        ]
        precision = {
            "cpu": cpu_name(),
            "cpu_native_bf16": torch.cpu._is_avx512_bf16_supported(),
            "cpu_amx": torch.cpu._is_amx_tile_supported(),
            "threads": torch.get_num_threads(),
            "fidelity": "the embedded default's training section (20000 samples x 1 epoch, "
            "batch 128, lr 0.1) and resnet20, device cpu",
            "seeds": list(PRECISION_SEEDS),
            "runs": trainings,
            "summary": precision_summary(trainings),
            "windows": windows,
        }
    out = {
        "benchmark": "train_speed",
        "code": code_versions(),
        "dataset": "fashion-mnist (val 5000 carved from train, test = published 10000)",
        "input_shape": list(INPUT_SHAPE),
        "optimizer": "SGD nesterov momentum 0.9, wd 5e-4, OneCycleLR max_lr 0.1, per-batch step",
        "seed": args.seed,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "throughput": [speeds[n] for n in THROUGHPUT if n in speeds],
        "runs": [records[n] for n in RUNS if n in records],
        "precision": precision,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    _logger.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
