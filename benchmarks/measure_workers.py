"""What a measured candidate costs in a kept worker process against a fresh one per candidate.

A search with measured latency (``--target host``) sends each candidate to a worker process that
builds it with TVM and times it, and times it with PyTorch in another. This script measures the
wall time of those calls for resnet20 candidates at 1x28x28 (depth variants: different models,
the same kernels), alternating a fresh process per call (``keep=None``, how every call ran
before workers were kept) with the kept worker (``keep="tvm"`` / ``"pytorch"``, the
runners' default), so that a change in the host's load hits both. The kept worker's first call
starts it (interpreter, torch, TVM); the rest reuse it. TVM code here is untuned (no database):
the build and the timing are what a tuned candidate pays after its tuning.

Usage (from the repository root)::

    PYTHONPATH=. .venv/bin/python benchmarks/measure_workers.py [--candidates 4]

Writes ``benchmarks/results/measure_workers.json`` (seconds per call, their medians, the load
average before and after).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

from benchmarks._common import code_versions, cpu_name

RESULTS = Path(__file__).resolve().parent / "results" / "measure_workers.json"
SHAPE = (1, 28, 28)
#: Blocks kept per stage of each candidate, in the order they are measured.
DEPTHS = [(3, 3, 3), (2, 2, 3), (1, 2, 3), (2, 3, 1), (3, 1, 2), (1, 1, 1)]


def _runners() -> dict[str, Any]:
    from autoprune.hwprofiles import MeasureProtocol, PyTorchRunner, TvmRunner

    protocol = MeasureProtocol(warmup=1, number=2, repeat=3, min_repeat_ms=5.0, threads=2)
    return {
        "tvm": TvmRunner("host", protocol=protocol),
        "pytorch": PyTorchRunner(protocol=protocol),
    }


def measure(candidates: int) -> dict[str, Any]:
    """Seconds per call of each backend, fresh and kept, over ``candidates`` candidates."""
    from autoprune.hwprofiles._workers import close_kept_workers, run_in_worker
    from autoprune.spaces import Candidate

    runners = _runners()
    seconds: dict[str, dict[str, list[float]]] = {
        backend: {"fresh": [], "kept": []} for backend in runners
    }
    for depth in DEPTHS[:candidates]:
        blocks = dict(zip(("layer1", "layer2", "layer3"), depth, strict=True))
        model = Candidate(
            model="resnet20", num_classes=10, in_channels=1, input_shape=SHAPE, blocks=blocks
        )
        for backend, runner in runners.items():
            protocol = runner.protocol
            payload = runner.payload(model, SHAPE, protocol)
            for mode, keep in (("fresh", None), ("kept", runner.worker)):
                started = time.perf_counter()
                ok, answer = run_in_worker(
                    runner.job, payload, threads=protocol.threads, timeout_s=600, keep=keep
                )
                seconds[backend][mode].append(round(time.perf_counter() - started, 2))
                if not ok:
                    raise RuntimeError(f"{backend} {mode} failed: {answer}")
    close_kept_workers()
    summary = {
        backend: {
            "fresh_median_s": statistics.median(modes["fresh"]),
            "kept_first_s": modes["kept"][0],
            "kept_median_after_first_s": statistics.median(modes["kept"][1:]),
        }
        for backend, modes in seconds.items()
    }
    return {"seconds_per_call": seconds, "summary": summary}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", type=int, default=4, choices=range(2, len(DEPTHS) + 1))
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    started = time.time()
    result = measure(args.candidates)
    record = {
        "what": "wall seconds per measurement call, resnet20 depth variants at 1x28x28, "
        "untuned TVM on host and PyTorch eager, 2 threads; fresh process vs kept worker",
        "candidates": args.candidates,
        **result,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "wall_s": round(time.time() - started, 1),
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "code": code_versions(),
        "date": time.strftime("%Y-%m-%d"),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record["summary"], indent=2))


if __name__ == "__main__":
    main()
