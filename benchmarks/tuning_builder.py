"""MetaSchedule tuning with TVM's ``LocalBuilder`` against autoprune's ``PooledBuilder``.

The embedded default's base model (resnet20, 1x28x28) is tuned on this host at each trials-per-
task budget into a fresh database, once with each builder, everything else the same (the tuning
job of :func:`~autoprune.hwprofiles.tune_model`, run in this process so that the builder can be
swapped and the build processes counted). ``LocalBuilder`` starts new build processes for every
batch; ``PooledBuilder`` keeps them for the job. Writes ``benchmarks/results/tuning_builder.json``.

Usage (from the repository root)::

    PYTHONPATH=. .venv/bin/python benchmarks/tuning_builder.py                # 1 and 4 a task
    PYTHONPATH=. .venv/bin/python benchmarks/tuning_builder.py --trials-per-task 2
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._common import code_versions, cpu_name

RESULTS = Path(__file__).resolve().parent / "results" / "tuning_builder.json"


def tune_once(trials_per_task: int, builder: str) -> dict[str, Any]:
    """One tuning job of resnet20 at 1x28x28 on host with ``builder`` (``local``/``pooled``)."""
    from tvm.s_tir import meta_schedule as ms
    from tvm.support import popen_pool

    from autoprune.hwprofiles import _builder
    from autoprune.hwprofiles._relax import local_profile, profile_threads
    from autoprune.hwprofiles._tune import _tune_job
    from autoprune.hwprofiles._workers import model_payload
    from autoprune.spaces import Candidate

    started_processes = []
    original_init = popen_pool.PopenWorker.__init__

    def counting_init(self: Any, *args: Any, **kwargs: Any) -> None:
        started_processes.append(1)
        original_init(self, *args, **kwargs)

    pooled = _builder.PooledBuilder
    if builder == "local":  # TVM's, as MetaSchedule's own tune_tasks makes it

        def local(f_build: Any, *, max_workers: int) -> Any:
            made = ms.builder.LocalBuilder(f_build=f_build, max_workers=max_workers)
            made.close = lambda: None  # it ends its processes after every batch
            return made

        _builder.PooledBuilder = local
    profile = local_profile("host")
    base = Candidate(model="resnet20", num_classes=10, in_channels=1, input_shape=(1, 28, 28))
    popen_pool.PopenWorker.__init__ = counting_init
    try:
        with tempfile.TemporaryDirectory(prefix="ap-builder-") as folder:
            payload = {
                "model": model_payload(base),
                "input_shape": (1, 28, 28),
                "target": profile.tvm_target_spec(),
                "database_dir": folder,
                "max_trials": 10_000,
                "trials_per_task": trials_per_task,
                "threads": profile_threads(profile),
                "seed": 0,
            }
            load = os.getloadavg()[0]
            start = time.perf_counter()
            done = _tune_job(payload)
            seconds = time.perf_counter() - start
    finally:
        popen_pool.PopenWorker.__init__ = original_init
        _builder.PooledBuilder = pooled
    return {
        "builder": builder,
        "trials_per_task": trials_per_task,
        "tasks": done["tasks"],
        "trials": done["trials"],
        "seconds": round(seconds, 1),
        "processes_started": len(started_processes),
        "load_average_before": round(load, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials-per-task", type=int, nargs="+", default=[1, 4])
    args = parser.parse_args()
    rows = []
    for trials in args.trials_per_task:
        for builder in ("local", "pooled"):
            row = tune_once(trials, builder)
            print(json.dumps(row))
            rows.append(row)
    result = {
        "what": "one MetaSchedule tuning job of resnet20 at 1x28x28 on host, fresh database "
        "each; processes_started counts TVM popen workers (build and run)",
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "rows": rows,
        "code": code_versions(),
    }
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
