"""The estimate's TVM import without PyTorch's decompositions, against the decomposed import.

A build imports a model with ``from_exported_program``'s decompositions; an estimate imports
it without them (``lowered_kernels``). Most of the import's time goes to the decompositions.

For each model this lowers its fused kernels both ways, at batch 1 and 3x64x64 (``SHAPES``
for three), after one warm-up lowering of resnet20. It records the time of each way and
whether the kernels agree in every cost (MACs, FLOPs, bytes and class, names aside); where
they do not, it records the totals. A model that TVM cannot lower either way is recorded as
such. Writes ``benchmarks/results/kernel_import.json``.

Usage (from the repository root)::

    PYTHONPATH=. .venv/bin/python benchmarks/kernel_import.py     # about 3 minutes
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any

from _common import code_versions, cpu_name

from autoprune.hwprofiles import fused_kernels, import_to_relax
from autoprune.hwprofiles._lowered import lowered_kernels
from autoprune.spaces import create_model

MODELS = (
    "resnet20",
    "resnet18",
    "resnet50",
    "resnext50_32x4d",
    "mobilenet_v2",
    "mobilenet_v3_small",
    "mnasnet0_5",
    "efficientnet_b0",
    "densenet121",
    "squeezenet1_1",
    "shufflenet_v2_x0_5",
    "googlenet",
    "regnet_x_400mf",
    "convnext_tiny",
    "vgg16_bn",
    "alexnet",
    "timm:resnet10t",
    "timm:mobilenetv3_small_050",
    "timm:regnetx_002",
)
#: Where 3x64x64 does not fit: the CIFAR network's own size, and 224 for the two models whose
#: adaptive pooling to 7x7 and 6x6 TVM lowers only from an input that divides.
SHAPES = {"resnet20": (1, 28, 28), "vgg16_bn": (3, 224, 224), "alexnet": (3, 224, 224)}
OUT = Path(__file__).parent / "results" / "kernel_import.json"


def _timed(lower: Any) -> tuple[list | None, float, str | None]:
    start = time.perf_counter()
    try:
        kernels = lower()
    except Exception as exc:  # noqa: BLE001 - recorded: TVM cannot lower this model
        return None, time.perf_counter() - start, str(exc).splitlines()[0][:200]
    return kernels, time.perf_counter() - start, None


def compare(name: str) -> dict[str, Any]:
    """One model's row: kernel counts and seconds both ways, and whether their costs agree."""
    shape = SHAPES.get(name, (3, 64, 64))
    module = create_model(name, num_classes=10, in_channels=shape[0]).eval()
    fast, fast_s, fast_error = _timed(lambda: lowered_kernels(module, shape))
    slow, slow_s, slow_error = _timed(lambda: fused_kernels(import_to_relax(module, shape)))
    row: dict[str, Any] = {
        "model": name,
        "input_shape": list(shape),
        "seconds_without_decompositions": round(fast_s, 2),
        "seconds_decomposed": round(slow_s, 2),
        "error": fast_error or slow_error,
    }
    if fast is None or slow is None:
        return row
    unnamed = [dataclasses.replace(k, name="") for k in fast]
    same = unnamed == [dataclasses.replace(k, name="") for k in slow]
    row.update(kernels=[len(fast), len(slow)], same_costs=same)
    if not same:
        row["flops"] = [sum(k.flops for k in fast), sum(k.flops for k in slow)]
        row["macs"] = [sum(k.macs for k in fast), sum(k.macs for k in slow)]
        row["bytes_moved"] = [sum(k.bytes_moved for k in fast), sum(k.bytes_moved for k in slow)]
    return row


def main() -> None:
    compare("resnet20")  # warm-up: the first export and the first TVM passes load code once
    rows = []
    for name in MODELS:
        rows.append(compare(name))
        print(json.dumps(rows[-1]))
    lowered = [r for r in rows if r["error"] is None]
    result = {
        "benchmark": "kernel_import",
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "code": code_versions(),
        "models": len(rows),
        "lowered_both_ways": len(lowered),
        "same_costs": sum(bool(r["same_costs"]) for r in lowered),
        "seconds_without_decompositions": round(
            sum(r["seconds_without_decompositions"] for r in lowered), 1
        ),
        "seconds_decomposed": round(sum(r["seconds_decomposed"] for r in lowered), 1),
        "load_average_1min_after": os.getloadavg()[0],
        "rows": rows,
    }
    OUT.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
