"""Per-trial overhead of the Ray path, and trials at once on a 3-node loopback cluster.

Runs the same search (the embedded default on ``jetson``, ``--trials`` trials, estimated latency,
seed 0) three ways, each in a fresh process and run directory:

1. the local loop (``--workers 1``, no Ray);
2. Ray with one worker holding every CPU (a local Ray instance: ``--workers 1 --ray-address``
   of a head started here with all the CPUs), so that it trains with the same threads;
3. a 3-node loopback cluster: a head without CPUs and three ``ray start`` worker nodes of one CPU
   each, ``--workers 3``.

The per-trial overhead of the Ray path is, trial by trial over the trials whose candidate is the
same in runs 1 and 2 (the sampler is seeded), the difference of the trial's wall time (Optuna's
``datetime_complete - datetime_start``: proposal to record); its median over the trials after
the first, as seconds and as a share of the local trial's median time. The one-off costs: the
worker process's start (the first trial's extra time: Python, torch, TVM and the objective
loaded once per process), and starting Ray and Tune (the rest of the difference of the runs'
wall times). On the cluster, trials at once is the most attempts whose intervals
(the worker's start to the trial's record) overlap. Writes ``benchmarks/results/ray_overhead.json``.

Usage::

    python benchmarks/ray_overhead.py --trials 12
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
from _common import fresh_user_cache

sys.path.insert(0, str(Path(__file__).parents[1]))
from autoprune.search import RunDir  # noqa: E402
from autoprune.search import _schema as attrs  # noqa: E402
from tests.search.cluster import LoopbackCluster  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "ray_overhead.json"


def _search(run_dir: Path, trials: int, *flags: str) -> float:
    """Wall seconds of one search in a fresh process."""
    command = [
        sys.executable, "-m", "autoprune.cli", "search", "--target", "jetson",
        "--budget", "2gflops", "--trials", str(trials), "--seed", "0",
        "--run-dir", str(run_dir), "--quiet", *flags,
    ]  # fmt: skip
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env=env)
    return time.perf_counter() - started


def _trials(run_dir: Path) -> dict[int, dict]:
    study = RunDir(run_dir).load_study()
    assert study is not None
    out = {}
    for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)):
        attempts_file = RunDir(run_dir).attempts_file(t.number)
        attempts = (
            [json.loads(x) for x in attempts_file.read_text().splitlines()]
            if (attempts_file.exists())
            else []
        )
        out[t.number] = {
            "candidate": attrs.CANDIDATE_HASH.get(t),
            "seconds": (t.datetime_complete - t.datetime_start).total_seconds(),
            "complete": t.datetime_complete.timestamp(),
            "attempts": attempts,
        }
    return out


def _most_at_once(trials: dict[int, dict]) -> int:
    events = []
    for t in trials.values():
        for a in t["attempts"]:
            events += [(a["started"], 1), (t["complete"], -1)]
    running = most = 0
    for _, step in sorted(events):
        running += step
        most = max(most, running)
    return most


def _cluster_run(work: Path, trials: int) -> tuple[float, dict[int, dict]]:
    cluster = LoopbackCluster(work / "cluster")
    try:
        address = cluster.start_head(cpus=0)
        for _ in range(3):
            cluster.add_worker(cpus=1)
        run_dir = work / "cluster-run"
        flags = ["--ray-address", address, "--workers", "3", "--cpus-per-trial", "1"]
        seconds = _search(run_dir, trials, *flags)
        return seconds, _trials(run_dir)
    finally:
        cluster.stop()


def _local_ray_run(work: Path, trials: int, cpus: int) -> tuple[float, dict[int, dict]]:
    cluster = LoopbackCluster(work / "one")
    try:
        address = cluster.start_head(cpus=cpus)
        run_dir = work / "ray-run"
        flags = ["--ray-address", address, "--workers", "1", "--cpus-per-trial", str(cpus)]
        seconds = _search(run_dir, trials, *flags)
        return seconds, _trials(run_dir)
    finally:
        cluster.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=12)  # the default run's
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    fresh_user_cache()  # a first run: no kernel list kept by an earlier one
    os.environ["RAY_AUTH_MODE"] = "disabled"

    work = Path(tempfile.mkdtemp(prefix="ap-rayo-", dir="/tmp"))  # short: Ray's socket paths
    local_seconds = _search(work / "local-run", args.trials)
    local = _trials(work / "local-run")
    ray_seconds, ray_one = _local_ray_run(work, args.trials, args.cpus)
    cluster_seconds, cluster = _cluster_run(work, args.trials)

    same = [n for n in local if n in ray_one and local[n]["candidate"] == ray_one[n]["candidate"]]
    overhead = {n: ray_one[n]["seconds"] - local[n]["seconds"] for n in same}
    local_trial = statistics.median(local[n]["seconds"] for n in same)
    first = min(same)  # the worker process starts with it: Python, torch, TVM, the objective
    per_trial = statistics.median(overhead[n] for n in same if n != first)
    result = {
        "benchmark": "ray_overhead",
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "search": f"default config, --target jetson --budget 2gflops, {args.trials} trials, seed 0",
        "wall_seconds": {
            "local loop": round(local_seconds, 1),
            f"ray, 1 worker, {args.cpus} CPUs": round(ray_seconds, 1),
            "3-node loopback cluster, 3 workers of 1 CPU": round(cluster_seconds, 1),
        },
        "trials_compared": len(same),
        "local_trial_seconds_median": round(local_trial, 2),
        "ray_overhead_seconds_per_trial": {
            "median_after_the_first": round(per_trial, 2),
            "per_trial": {n: round(o, 2) for n, o in overhead.items()},
        },
        "ray_overhead_share_of_trial_time": round(per_trial / local_trial, 4),
        "worker_start_seconds": round(overhead[first] - per_trial, 1),
        "ray_start_seconds": round(ray_seconds - local_seconds - sum(overhead.values()), 1),
        "cluster_trials_at_once": _most_at_once(cluster),
        "cluster_trials_complete": len(cluster),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
