"""Untuned TVM against PyTorch eager on this host, batch 1, by the same measurement protocol.

For a few candidates of the embedded default (CIFAR-style ResNet-20, 1 input channel, deploy
shape 1x28x28) this builds the model with TVM for the ``host`` profile, checks its outputs
against PyTorch and times both with :class:`~autoprune.hwprofiles.MeasureProtocol` defaults in
fresh worker processes. It shows the size of the gap that untuned TVM code leaves (docs/tvm.md:
naive loops on a CPU), which is why these records carry
``tuned: false`` and are no latency signal. Times depend on what else the host runs (the load
average is recorded). Writes ``benchmarks/results/tvm_smoke.json``.

Usage (from the repository root)::

    PYTHONPATH=. .venv/bin/python benchmarks/tvm_smoke.py               # about 1 minute
    PYTHONPATH=. .venv/bin/python benchmarks/tvm_smoke.py --threads 1   # when a core is busy

With 2 threads on 2 cores, PyTorch eager ran 140x slow (0.87 -> 121 ms, resnet20 1x16x16) while
another process held one core; the spread of the repeats shows it and a warning is logged.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
from pathlib import Path
from typing import Any

from autoprune.hwprofiles import (
    MeasureProtocol,
    check_outputs_match,
    measure_pytorch_latency,
    measure_tvm_latency,
)
from autoprune.hwprofiles._cache import package_version
from autoprune.spaces import Candidate

_logger = logging.getLogger("autoprune.benchmarks.tvm_smoke")

RESULTS = Path(__file__).resolve().parent / "results" / "tvm_smoke.json"

CANDIDATES = {
    "resnet20 full, 1x28x28": Candidate(
        model="resnet20", num_classes=10, in_channels=1, input_shape=(1, 28, 28)
    ),
    "resnet20 one block per stage, 1x28x28": Candidate(
        model="resnet20",
        num_classes=10,
        in_channels=1,
        input_shape=(1, 28, 28),
        blocks={"layer1": 1, "layer2": 1, "layer3": 1},
    ),
    "resnet20 full, 1x16x16": Candidate(
        model="resnet20", num_classes=10, in_channels=1, input_shape=(1, 16, 16)
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="threads per model (default 2)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    protocol = MeasureProtocol(threads=args.threads)
    rows: list[dict[str, Any]] = []
    for label, candidate in CANDIDATES.items():
        shape = candidate.input_shape
        # PyTorch first: timed in a process where TVM had run, it can be slow (docs/tvm.md);
        # here each runs in its own worker process anyway.
        torch_m = measure_pytorch_latency(candidate, shape, protocol=protocol)
        tvm_m = measure_tvm_latency(candidate, shape, "host", protocol=protocol)
        diff = check_outputs_match(candidate, shape, "host", rtol=1e-5, atol=1e-5)
        row = {
            "label": label,
            "candidate": candidate.hash,
            "input_shape": list(shape),
            "pytorch_ms": torch_m.latency_ms,
            "pytorch_spread_ms": torch_m.spread_ms,
            "tvm_untuned_ms": tvm_m.latency_ms,
            "tvm_untuned_spread_ms": tvm_m.spread_ms,
            "tvm_over_pytorch": tvm_m.latency_ms / torch_m.latency_ms,
            "max_abs_diff": diff,
            "tvm_target": tvm_m.target,
            "load_average": os.getloadavg()[0],
        }
        _logger.info(
            "%-40s PyTorch %7.3f ms   TVM untuned %7.3f ms   (%.1fx)   max |diff| %.1e",
            label,
            row["pytorch_ms"],
            row["tvm_untuned_ms"],
            row["tvm_over_pytorch"],
            diff,
        )
        rows.append(row)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "protocol": protocol.to_dict(),
        "torch": package_version("torch"),
        "tvm": package_version("apache-tvm"),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "rows": rows,
    }
    RESULTS.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    _logger.info("wrote %s", RESULTS)


if __name__ == "__main__":
    main()
