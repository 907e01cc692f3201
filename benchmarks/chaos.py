"""A search killed with SIGKILL at 10 random moments, resumed after each, against an uninterrupted
run of the same seed: are the same trials there, none lost, changed or duplicated, and is the
final Pareto front the same?

Usage: ``python benchmarks/chaos.py [--kills 10] [--trials 8] [--seed 0]``; writes
``benchmarks/results/chaos.json``. The search is the tests' tiny synthetic one (resnet20, 1
epoch on 256 images, NSGA-II). Each kill is drawn with a seeded RNG: after a random delay, at
the first or second write of a trial's weights (halfway through), or at the storage's commit
of the first trial a process completes (just before or just after) (``tests/faults_driver.py``
puts the kill there). A kill that the search outlives (it finished first) is counted as
attempted, not landed.

Trials are compared by their proposal (the candidate's parameters) and their values: a trial
of the uninterrupted run is *lost* when no finished trial of the resumed run has its
parameters, *changed* when one has them with other values, and a finished trial of the resumed
run is *duplicated* when the run holds it twice (two finished trials with the same number of a
retry). Each finished trial's record is also checked against the record it had right after the
kill that followed it: a finished trial must never change or vanish across a resume.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import optuna
import yaml
from _common import code_versions

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "chaos.json"
CONFIG = {
    "model": {"name": "resnet20", "num_classes": 10, "in_channels": 1},
    "data": {"dataset": "synthetic", "root": None, "val_samples": 200, "input_shape": [1, 28, 28]},
    "space": {
        "width_ratios": [0.25, 0.5, 1.0],
        "depth": True,
        "resolution_scales": [0.75, 1.0],
        "weight_bits": [8, 32],
        "activation_bits": [8, 32],
    },
    "training": {"samples": 256, "epochs": 1, "batch_size": 64, "lr": 0.05},
    "search": {"controller": "nsga2", "trials": 8, "seed": 0, "population_size": 4},
    "target": "jetson",
    "budgets": [],
}


def _search(run_dir: Path, config: Path, faults: list[str]) -> list[str]:
    driver = [sys.executable, str(ROOT / "tests" / "faults_driver.py"), *faults, "--"]
    return [*driver, "search", "--config", str(config), "--run-dir", str(run_dir), "--quiet"]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def _finished(run_dir: Path) -> dict[int, dict[str, Any]]:
    """Finished (COMPLETE) trials by number: params, values, user attributes."""
    storage = f"sqlite:///{run_dir / 'study.db'}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name="autoprune", storage=storage)
    return {
        t.number: {"params": t.params, "values": t.values, "user_attrs": t.user_attrs}
        for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    }


def _front(run_dir: Path) -> list[dict[str, Any]]:
    payload = json.loads((run_dir / "pareto.json").read_text())
    return [
        {"params": m["architecture"], "accuracy": m["accuracy"], "latency_ms": m["latency_ms"]}
        for m in payload["pareto"]
    ]


def _key(params: dict[str, Any]) -> str:
    return json.dumps(params, sort_keys=True)


def _draw(rng: random.Random, baseline_s: float) -> list[str]:
    """A kill that lands before the search ends: within its first trial or two."""
    kind = rng.choice(["delay", "kill-writing", "kill-commit", "kill-committed"])
    if kind == "delay":
        return [f"delay:{rng.uniform(0.05, 0.35) * baseline_s:.1f}"]
    if kind == "kill-writing":
        return [f"kill-writing:model.pt:{rng.randint(1, 2)}"]
    return [f"{kind}:1"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    folder = Path(tempfile.mkdtemp(prefix="autoprune-chaos-"))
    config = folder / "chaos.yaml"
    data = {**CONFIG, "search": {**CONFIG["search"], "trials": args.trials, "seed": args.seed}}
    config.write_text(yaml.safe_dump(data))

    started = time.perf_counter()
    calm = folder / "uninterrupted"
    subprocess.run(_search(calm, config, []), env=_env(), check=True, capture_output=True)
    baseline_s = time.perf_counter() - started

    chaotic = folder / "killed"
    kills: list[dict[str, Any]] = []
    kept: dict[int, dict[str, Any]] = {}  # finished trials seen after each kill
    changed_across_resume = 0
    started = time.perf_counter()
    for _ in range(args.kills):
        fault = _draw(rng, baseline_s)
        delay = None
        if fault[0].startswith("delay:"):
            delay, fault = float(fault[0].split(":")[1]), []
        process = subprocess.Popen(
            _search(chaotic, config, fault),
            env=_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if delay is not None:
            try:
                process.wait(timeout=delay)  # the kill's moment: a random time after the start
            except subprocess.TimeoutExpired:
                process.send_signal(signal.SIGKILL)
        code = process.wait()
        landed = code == -signal.SIGKILL
        kills.append({"fault": fault or [f"delay:{delay:.1f}s"], "exit": code, "landed": landed})
        if (chaotic / "study.db").exists() and (chaotic / "run.json").exists():
            now = _finished(chaotic)
            changed_across_resume += sum(1 for n, t in kept.items() if n not in now or now[n] != t)
            kept.update(now)
        print(f"kill {len(kills)}: {kills[-1]}; {len(kept)} finished trials", flush=True)
    subprocess.run(_search(chaotic, config, []), env=_env(), check=True, capture_output=True)
    chaos_s = time.perf_counter() - started

    calm_trials, chaos_trials = _finished(calm), _finished(chaotic)
    changed_across_resume += sum(
        1 for n, t in kept.items() if n not in chaos_trials or chaos_trials[n] != t
    )
    by_params: dict[str, list[dict[str, Any]]] = {}
    for trial in chaos_trials.values():
        by_params.setdefault(_key(trial["params"]), []).append(trial)
    lost = changed = 0
    differences = []
    for number, trial in sorted(calm_trials.items()):
        found = by_params.get(_key(trial["params"]), [])
        if not found:
            lost += 1
            differences.append(f"uninterrupted trial {number}: params not among the resumed")
        elif all(t["values"] != trial["values"] for t in found):
            changed += 1
            differences.append(f"uninterrupted trial {number}: same params, other values")
    retries = [t["user_attrs"].get("retry_of") for t in chaos_trials.values()]
    retries = [r for r in retries if r is not None]
    duplicated = len(retries) - len(set(retries))
    front_identical = _front(calm) == _front(chaotic)
    result = {
        "kills_attempted": len(kills),
        "kills_landed": sum(k["landed"] for k in kills),
        "trials_uninterrupted": len(calm_trials),
        "trials_resumed": len(chaos_trials),
        "trials_lost": lost,
        "trials_changed": changed,
        "trials_duplicated": duplicated,
        "finished_trials_changed_across_a_resume": changed_across_resume,
        "front_identical": front_identical,
        "differences": differences,
        "kills": kills,
        "wall_s": {"uninterrupted": round(baseline_s, 1), "killed_and_resumed": round(chaos_s, 1)},
        "config": data,
        "code": code_versions(),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k not in ("kills", "config")}, indent=2))
    shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
