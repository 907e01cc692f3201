"""Where a search's time goes: training against everything else, per stage of each trial.

Runs the embedded default, ``autoprune search --target jetson --budget 2gflops`` (12 trials,
estimated latency), in a fresh run directory, and reads what each trial recorded of its own
time (the trial attribute ``seconds``: propose, costs, evaluate, train, validate, save) and
Optuna's start and completion times of each trial. Reports, per stage, its seconds summed over
the trials that trained and its share of their wall time. The overhead is that wall time less
the training loop (``train``) and the accuracy measurement on the validation split
(``validate``): proposing, costing (TVM lowering, estimation), building the model and its data,
writing. The share outside the training loop alone is reported beside it. Time outside the
trials (set-up, the sampler and the storage between trials, the test-split evaluation of the
front at the end) is reported too.

Usage (from the repository root)::

    .venv/bin/python benchmarks/trial_overhead.py [--trials 12] [--set KEY=VALUE ...]

Writes ``benchmarks/results/trial_overhead.json``. Times depend on what else the host runs
(the load average is recorded).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import optuna
from _common import code_versions, cpu_name, fresh_user_cache

from autoprune.cli import main as autoprune_main
from autoprune.search import RunDir

RESULTS = Path(__file__).resolve().parent / "results" / "trial_overhead.json"
#: The stages a trial records, in the order they run; ``train`` is the training loop,
#: ``validate`` the accuracy measurement.
STAGES = ("propose", "costs", "build", "train", "validate", "save")
#: What a trial measures; the other stages are overhead.
MEASURING = ("train", "validate")


def _stages(seconds: dict[str, float]) -> dict[str, float]:
    """A trial's recorded seconds under :data:`STAGES` (``build``: the evaluator's call less its
    training and validation, i.e. the model's construction and the data's preparation)."""
    return {
        "propose": seconds.get("propose", 0.0),
        "costs": seconds.get("costs", 0.0),
        "build": seconds.get("evaluate", 0.0),
        "train": seconds.get("train", 0.0),
        "validate": seconds.get("validate", 0.0),
        "save": seconds.get("save", 0.0),
    }


def measure(trials: int, settings: list[str]) -> dict[str, Any]:
    """Run the default search in a temporary folder; its trials' times, per stage."""
    with tempfile.TemporaryDirectory(prefix="autoprune-overhead-") as folder:
        run_dir = Path(folder) / "run"
        argv = ["search", "--target", "jetson", "--budget", "2gflops", "--trials", str(trials)]
        argv += ["--run-dir", str(run_dir), "--quiet"]
        for setting in settings:
            argv += ["--set", setting]
        load_before = os.getloadavg()[0]
        started = time.time()
        code = autoprune_main(argv)
        finished = time.time()
        if code != 0:
            raise SystemExit(f"the search exited with {code}")
        study = RunDir(run_dir).load_study()
        assert study is not None
        frozen = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)

    rows = []
    for trial in frozen:
        if trial.datetime_start is None or trial.datetime_complete is None:
            continue
        wall = (trial.datetime_complete - trial.datetime_start).total_seconds()
        attrs = trial.user_attrs
        recorded = attrs.get("seconds") or {}
        stages = _stages(recorded)
        rows.append(
            {
                "number": trial.number,
                "state": trial.state.name,
                "trained": bool(attrs.get("trained")) and "cached_from" not in attrs,
                "reference": "reference" in attrs,
                "wall_s": round(wall, 3),
                "stages_s": {k: round(v, 3) for k, v in stages.items()},
                "unrecorded_s": round(wall - sum(stages.values()), 3),
                "start": trial.datetime_start.timestamp(),
                "complete": trial.datetime_complete.timestamp(),
            }
        )
    trained = [r for r in rows if r["trained"] and not r["reference"]]
    wall = sum(r["wall_s"] for r in trained)
    per_stage = {s: sum(r["stages_s"][s] for r in trained) for s in STAGES}
    per_stage["unrecorded"] = sum(r["unrecorded_s"] for r in trained)
    train = per_stage["train"]
    gaps = [b["start"] - a["complete"] for a, b in zip(rows, rows[1:], strict=False)]
    total = finished - started
    return {
        "trials": len(rows),
        "trained_candidates": len(trained),
        "trial_wall_s": round(wall, 2),
        "per_stage": {
            s: {"seconds": round(v, 2), "share_of_trial_time": round(v / wall, 4) if wall else None}
            for s, v in per_stage.items()
        },
        "overhead_share_of_trial_time": (
            round((wall - sum(per_stage[s] for s in MEASURING)) / wall, 4) if wall else None
        ),
        "outside_training_share_of_trial_time": round((wall - train) / wall, 4) if wall else None,
        "search_wall_s": round(total, 2),
        "outside_trials_s": {
            "before_first_trial": round(rows[0]["start"] - started, 2) if rows else None,
            "between_trials": round(sum(gaps), 2),
            "between_trials_median": round(statistics.median(gaps), 3) if gaps else None,
            "after_last_trial": round(finished - rows[-1]["complete"], 2) if rows else None,
            "reference_trial": round(sum(r["wall_s"] for r in rows if r["reference"]), 2),
        },
        "training_share_of_search": round(sum(r["stages_s"]["train"] for r in rows) / total, 4),
        "load_average_1min_before": load_before,
        "load_average_1min_after": os.getloadavg()[0],
        "rows": [{k: v for k, v in r.items() if k not in ("start", "complete")} for r in rows],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    fresh_user_cache()  # a first run: no kernel list kept by an earlier one
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    result = {
        "benchmark": "trial_overhead",
        "command": "autoprune search --target jetson --budget 2gflops"
        + f" --trials {args.trials}"
        + "".join(f" --set {s}" for s in args.set),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "code": code_versions(),
        **measure(args.trials, args.set),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    summary = {k: v for k, v in result.items() if k not in ("rows", "code")}
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
