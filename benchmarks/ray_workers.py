"""Wall time of one search through a loopback Ray cluster with 1 worker and with 2 workers.

Starts a Ray head node on 127.0.0.1 with ``--cpus`` CPUs, then runs the same search (the
embedded default on ``jetson``, ``--trials`` trials, estimated latency) twice through it:
1 worker with all the CPUs, and 2 workers with half each, so both use the same cores. Writes the
wall times, their ratio and each run's trial counts (from ``autoprune report``) to
``benchmarks/results/ray_workers.json``.

Usage::

    python benchmarks/ray_workers.py --trials 6
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "ray_workers.json"
BIN = Path(sys.executable).parent


def _search(address: str, workers: int, cpus: float, trials: int, run_dir: Path) -> float:
    command = [
        str(BIN / "autoprune"), "search", "--target", "jetson", "--budget", "2gflops",
        "--trials", str(trials), "--ray-address", address, "--workers", str(workers),
        "--cpus-per-trial", str(cpus), "--run-dir", str(run_dir), "--quiet",
    ]  # fmt: skip
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def _summary(run_dir: Path) -> dict[str, int]:
    report = subprocess.run(
        [str(BIN / "autoprune"), "report", str(run_dir), "--format", "json"],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(report.stdout)["summary"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--port", type=int, default=6399)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="ap-rayb-"))
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    ray = str(BIN / "ray")
    subprocess.run(
        [ray, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={args.port}",
         f"--num-cpus={args.cpus}", "--include-dashboard=false", f"--temp-dir={work / 'ray'}"],
        check=True, env=env, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    address = f"127.0.0.1:{args.port}"
    try:
        os.environ["RAY_AUTH_MODE"] = "disabled"
        one = _search(address, 1, args.cpus, args.trials, work / "w1")
        two = _search(address, 2, args.cpus / 2, args.trials, work / "w2")
        summaries = {"1": _summary(work / "w1"), "2": _summary(work / "w2")}
    finally:
        subprocess.run([ray, "stop", "--force"], env=env, stdout=subprocess.DEVNULL)
        shutil.rmtree(work, ignore_errors=True)
    payload = {
        "benchmark": "ray_workers",
        "cluster": f"ray start --head on 127.0.0.1, {args.cpus} CPUs",
        "search": f"default config, --target jetson --budget 2gflops, {args.trials} trials",
        "seconds": {"1 worker": one, "2 workers": two},
        "cpus_per_trial": {"1 worker": args.cpus, "2 workers": args.cpus / 2},
        "speedup": one / two,
        "summaries": summaries,
        "machine": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=1) + "\n")
    print(json.dumps(payload, indent=1))


if __name__ == "__main__":
    main()
