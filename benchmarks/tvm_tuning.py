"""MetaSchedule-tuned TVM against untuned TVM and PyTorch eager on this host, batch 1.

The embedded default's base model (CIFAR-style ResNet-20, 1 input channel, deploy shape 1x28x28)
is tuned with :func:`~autoprune.hwprofiles.tune_model` at each trial budget into a fresh
database, then timed tuned (``measure_tvm_latency(..., database_dir=...)``), untuned and in
PyTorch, all with one thread and the same :class:`~autoprune.hwprofiles.MeasureProtocol`, each
in a fresh worker process. The tuned outputs are checked against PyTorch. Then a second
candidate of the same search space (one block per stage) is run against the last database, to
show how many of its tasks are reused. Times depend on what else the host runs (the load
average is recorded). Writes ``benchmarks/results/tvm_tuning.json``.

Usage (from the repository root)::

    PYTHONPATH=. .venv/bin/python benchmarks/tvm_tuning.py                   # 64 and 256 trials
    PYTHONPATH=. .venv/bin/python benchmarks/tvm_tuning.py --trials 64 --threads 2
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import tempfile
from pathlib import Path
from typing import Any

from autoprune.hwprofiles import (
    MeasureProtocol,
    check_outputs_match,
    measure_pytorch_latency,
    measure_tvm_latency,
    tune_model,
)
from autoprune.hwprofiles._cache import package_version
from autoprune.spaces import Candidate

_logger = logging.getLogger("autoprune.benchmarks.tvm_tuning")

RESULTS = Path(__file__).resolve().parent / "results" / "tvm_tuning.json"

BASE = Candidate(model="resnet20", num_classes=10, in_channels=1, input_shape=(1, 28, 28))
SHALLOW = Candidate(
    model="resnet20",
    num_classes=10,
    in_channels=1,
    input_shape=(1, 28, 28),
    blocks={"layer1": 1, "layer2": 1, "layer3": 1},
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="threads (default 1)")
    parser.add_argument(
        "--trials", type=int, nargs="+", default=[64, 256], help="budgets (default 64 256)"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    protocol = MeasureProtocol(threads=args.threads)
    shape = BASE.input_shape
    # PyTorch first (docs/tvm.md: PyTorch timed in a process where TVM had run can be slow;
    # each runs in its own worker process here anyway).
    torch_m = measure_pytorch_latency(BASE, shape, protocol=protocol)
    untuned = measure_tvm_latency(BASE, shape, "host", protocol=protocol)
    _logger.info("PyTorch %.3f ms, TVM untuned %.3f ms", torch_m.latency_ms, untuned.latency_ms)
    rows: list[dict[str, Any]] = []
    reuse: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="autoprune-tuning-") as scratch:
        for trials in args.trials:
            database = Path(scratch) / f"db-{trials}"
            report = tune_model(
                BASE,
                shape,
                "host",
                database_dir=database,
                max_trials=trials,
                threads=args.threads,
                timeout_s=3000,
            )
            tuned = measure_tvm_latency(
                BASE, shape, "host", protocol=protocol, database_dir=database
            )
            diff = check_outputs_match(
                BASE, shape, "host", rtol=1e-4, atol=1e-4, database_dir=database
            )
            row = {
                "max_trials": trials,
                "tuning": report.to_dict(),
                "tvm_tuned_ms": tuned.latency_ms,
                "tvm_tuned_spread_ms": tuned.spread_ms,
                "tuned_over_pytorch": tuned.latency_ms / torch_m.latency_ms,
                "untuned_over_tuned": untuned.latency_ms / tuned.latency_ms,
                "max_abs_diff": diff,
                "load_average": os.getloadavg()[0],
            }
            _logger.info(
                "%4d trials: %d tasks tuned in %.0f s (%d trials); tuned %.3f ms "
                "(PyTorch %.3f, untuned %.3f); max |diff| %.1e",
                trials,
                report.tasks,
                report.seconds,
                report.trials,
                tuned.latency_ms,
                torch_m.latency_ms,
                untuned.latency_ms,
                diff,
            )
            rows.append(row)
            reuse_report = tune_model(
                SHALLOW, shape, "host", database_dir=database, max_trials=0, threads=args.threads
            )
            reuse = {
                "candidate": "resnet20 one block per stage, 1x28x28",
                "database_of_max_trials": trials,
                **reuse_report.to_dict(),
            }
        reuse.pop("database_dir", None)
        for row in rows:
            row["tuning"].pop("database_dir", None)  # a deleted temporary folder
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "model": "resnet20 full, 1x28x28",
        "candidate": BASE.hash,
        "protocol": protocol.to_dict(),
        "pytorch_ms": torch_m.latency_ms,
        "pytorch_spread_ms": torch_m.spread_ms,
        "tvm_untuned_ms": untuned.latency_ms,
        "tvm_untuned_spread_ms": untuned.spread_ms,
        "tvm_target": untuned.target,
        "search": "EvolutionarySearch(population_size=64, genetic_num_iters=1), cost_model=random",
        "rows": rows,
        "reuse_by_second_candidate": reuse,
        "torch": package_version("torch"),
        "tvm": package_version("apache-tvm"),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
    }
    RESULTS.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    _logger.info("wrote %s", RESULTS)


if __name__ == "__main__":
    main()
