"""Every search controller side by side: hypervolume against trials, and feasible proposals.

Two problems, each run by every registered controller (``autoprune.search.list_controllers``)
for ``--seeds`` seeds and the same ``--trials`` each, through the same Optuna code path as a
search (categorical decisions, constraints by ``Trial.set_constraint``, in-memory storage):

(a) ``compression``: the default search space (resnet20 at 1x28x28, float widths, depth and
    resolution; bit-widths fixed at 32) on the default target ``jetson``. Objectives: maximise
    the log synflow score of the candidate at initialisation (a zero-cost accuracy stand-in,
    ``autoprune.evaluators.log_synflow``), minimise the estimated latency (ms) and energy (mJ)
    per inference (the per-layer roofline ``estimate_hardware``: exact and cheap for a given
    architecture). Budget: MACs at most ``--budget-fraction`` of the base model's, with the
    search's repair step (``search.repair``, placed as a search places it: in the sampler, or
    in the objective for ``rl``): over-budget proposals are shrunk to fit, and the share of
    proposals that were feasible *as proposed* is reported.
(b) ``dtlz2``: DTLZ2 (Deb et al. 2002) with 3 objectives and ``--dtlz-variables`` variables,
    each discretised to ``--dtlz-levels`` evenly spaced values in [0, 1]; no constraint.

Hypervolume: each objective is normalised by the smallest and largest values seen on the
problem across every run (the reference run included) and minimised; the reference point is
1.1 in every normalised objective. The reference front is the non-dominated set of everything
found, including a much longer ``--reference-trials`` NSGA-II run per problem; each history is
reported as a fraction of that front's hypervolume.

Writes ``benchmarks/results/controllers.json`` and ``controllers.png``.

Usage::

    python benchmarks/controllers.py --trials 200 --seeds 3 --reference-trials 3000
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import platform
import statistics
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch
from _common import code_versions

from autoprune.config import load_config, parse_budget
from autoprune.evaluators import log_synflow
from autoprune.hwprofiles import estimate_hardware, load_profile
from autoprune.search import build_space, create_sampler, hypervolume, list_controllers
from autoprune.search._repair import repair, repairing
from autoprune.search._schema import REPAIR_STEPS
from autoprune.spaces import build_model, count_costs

RESULTS = Path(__file__).parent / "results" / "controllers.json"
REFERENCE_POINT = 1.1


@dataclass
class Run:
    """One controller's run on one problem: minimised objective vectors in trial order."""

    controller: str
    seed: int
    points: list[tuple[float, ...] | None] = field(default_factory=list)  # None: failed
    feasible_as_proposed: list[bool] = field(default_factory=list)
    seconds: float = 0.0


class Problem:
    """A benchmark problem: decisions, one evaluation, and how to minimise its objectives."""

    name: str
    directions: tuple[str, ...]

    def decisions(self) -> list[tuple[str, tuple[Any, ...]]]:
        raise NotImplementedError

    def evaluate(self, trial: optuna.Trial, params: dict[str, Any]) -> tuple[float, ...]:
        raise NotImplementedError

    def sampler(self, sampler: optuna.samplers.BaseSampler) -> optuna.samplers.BaseSampler:
        """The controller's sampler as a search on this problem would use it."""
        return sampler

    def minimised(self, values: Sequence[float]) -> tuple[float, ...]:
        return tuple(
            -v if d == "maximize" else v for v, d in zip(values, self.directions, strict=True)
        )


class Compression(Problem):
    """(a): the default space on jetson; log synflow, latency, energy; a MACs budget."""

    name = "compression"
    directions = ("maximize", "minimize", "minimize")

    def __init__(self, budget_fraction: float) -> None:
        config = load_config(overrides=["space.weight_bits=[32]", "space.activation_bits=[32]"])
        self.profile = load_profile(config.target)
        self.space = build_space(config, self.profile)
        base_macs = count_costs(
            build_model(self.space.largest(), device="meta"), self.space.largest().input_shape
        ).macs
        self.budget = parse_budget(f"{budget_fraction * base_macs / 1e6:.6f}mflops")
        self._cache: dict[str, tuple[float, float, float, int]] = {}

    def decisions(self) -> list[tuple[str, tuple[Any, ...]]]:
        return [(d.name, d.choices) for d in self.space.decisions]

    def _costs(self, params: dict[str, Any]) -> tuple[float, float, float, int]:
        candidate = self.space.candidate(params)
        if candidate.hash not in self._cache:
            costs = count_costs(build_model(candidate, device="meta"), candidate.input_shape)
            hardware = estimate_hardware(costs, self.profile)
            score = log_synflow(build_model(candidate, seed=0), candidate.input_shape)
            self._cache[candidate.hash] = (
                score,
                hardware.latency_ms,
                hardware.energy_mj,
                costs.macs,
            )
        return self._cache[candidate.hash]

    def sampler(self, sampler: optuna.samplers.BaseSampler) -> optuna.samplers.BaseSampler:
        return repairing(sampler, self.space, [self.budget])

    def evaluate(self, trial: optuna.Trial, params: dict[str, Any]) -> tuple[float, ...]:
        fitted, steps = repair(self.space, params, [self.budget])  # rl: the objective repairs
        steps += int(trial.user_attrs.get(REPAIR_STEPS.key) or 0)  # the others: their sampler
        trial.set_user_attr("feasible_as_proposed", steps == 0)
        score, latency, energy, macs = self._costs(fitted)
        trial.set_constraint(self.budget.spec, self.budget.violation(macs))
        return score, latency, energy


class Dtlz2(Problem):
    """(b): DTLZ2, 3 objectives, ``variables`` variables on ``levels`` levels in [0, 1]."""

    name = "dtlz2"
    directions = ("minimize", "minimize", "minimize")

    def __init__(self, variables: int, levels: int) -> None:
        self.variables = variables
        self.levels = tuple(round(i / (levels - 1), 6) for i in range(levels))

    def decisions(self) -> list[tuple[str, tuple[Any, ...]]]:
        return [(f"x{i}", self.levels) for i in range(self.variables)]

    def evaluate(self, trial: optuna.Trial, params: dict[str, Any]) -> tuple[float, ...]:
        x = [float(params[f"x{i}"]) for i in range(self.variables)]
        trial.set_user_attr("feasible_as_proposed", True)
        g = sum((xi - 0.5) ** 2 for xi in x[2:])
        a, b = x[0] * math.pi / 2, x[1] * math.pi / 2
        return (
            (1 + g) * math.cos(a) * math.cos(b),
            (1 + g) * math.cos(a) * math.sin(b),
            (1 + g) * math.sin(a),
        )


def run_controller(
    problem: Problem, controller: str, seed: int, trials: int, population: int
) -> Run:
    """``trials`` trials of ``controller`` on ``problem``; the run's points in trial order."""
    decisions = problem.decisions()

    def objective(trial: optuna.Trial) -> tuple[float, ...]:
        params = {name: trial.suggest_categorical(name, choices) for name, choices in decisions}
        return problem.evaluate(trial, params)

    study = optuna.create_study(
        directions=list(problem.directions),
        sampler=problem.sampler(create_sampler(controller, seed=seed, population_size=population)),
    )
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        study.optimize(objective, n_trials=trials, catch=(Exception,))
    run = Run(controller=controller, seed=seed, seconds=time.perf_counter() - started)
    for trial in study.get_trials(deepcopy=False):
        complete = trial.state == optuna.trial.TrialState.COMPLETE
        feasible = complete and all(v <= 0 for v in trial.constraints.values())
        run.points.append(problem.minimised(trial.values) if feasible else None)
        run.feasible_as_proposed.append(bool(trial.user_attrs.get("feasible_as_proposed")))
    return run


def _normaliser(runs: Sequence[Run]) -> Callable[[tuple[float, ...]], tuple[float, ...]]:
    points = np.array([p for r in runs for p in r.points if p is not None])
    low, high = points.min(axis=0), points.max(axis=0)
    span = np.where(high > low, high - low, 1.0)
    return lambda p: tuple(float(x) for x in (np.asarray(p) - low) / span)


def history(run: Run, normalise: Callable[[tuple[float, ...]], tuple[float, ...]]) -> list[float]:
    """Hypervolume after each trial (normalised objectives, reference point 1.1 each)."""
    front: list[tuple[float, ...]] = []
    volumes, volume = [], 0.0
    reference = (REFERENCE_POINT,) * 3
    for point in run.points:
        if point is not None:
            p = normalise(point)
            if not any(all(a <= b for a, b in zip(q, p, strict=True)) for q in front):
                front = [q for q in front if not all(a <= b for a, b in zip(p, q, strict=True))] + [
                    p
                ]
                volume = hypervolume(front, reference)
        volumes.append(volume)
    return volumes


_PROBLEM: Problem | None = None  # one per worker process (its evaluation cache with it)


def _run_in_worker(
    make: Callable[[], Problem], controller: str, seed: int, trials: int, population: int
) -> Run:
    global _PROBLEM
    if _PROBLEM is None:
        torch.set_num_threads(1)  # one core per worker
        optuna.logging.set_verbosity(optuna.logging.ERROR)
        _PROBLEM = make()
    return run_controller(_PROBLEM, controller, seed, trials, population)


def benchmark(make: Callable[[], Problem], args: argparse.Namespace) -> dict[str, Any]:
    """Every controller on the problem ``make`` builds; hypervolume fractions of the reference
    front. With ``args.jobs > 1`` the runs go to that many worker processes (one thread each)."""
    problem = make()
    jobs = [
        (c, s, args.trials, args.population) for c in args.controllers for s in range(args.seeds)
    ]
    jobs.append(("nsga2", 1000, args.reference_trials, 50))  # the reference run, last
    runs: list[Run] = []
    if args.jobs > 1:
        with ProcessPoolExecutor(
            args.jobs, mp_context=multiprocessing.get_context("spawn")
        ) as pool:
            futures = [pool.submit(_run_in_worker, make, *job) for job in jobs]
            for future in futures:
                run = future.result()
                runs.append(run)
                print(
                    f"{problem.name:12s} {run.controller:7s} seed {run.seed}: {run.seconds:6.1f} s",
                    flush=True,
                )
    else:
        for job in jobs:
            run = run_controller(problem, *job)
            runs.append(run)
            print(
                f"{problem.name:12s} {run.controller:7s} seed {run.seed}: {run.seconds:6.1f} s",
                flush=True,
            )
    reference_run = runs.pop()
    normalise = _normaliser([*runs, reference_run])
    everything = [normalise(p) for r in [*runs, reference_run] for p in r.points if p is not None]
    reference_volume = hypervolume(everything, (REFERENCE_POINT,) * 3)
    checkpoints = sorted({c for c in (25, 50, 100, 200, args.trials) if c <= args.trials})
    table: dict[str, Any] = {}
    for controller in args.controllers:
        mine = sorted((r for r in runs if r.controller == controller), key=lambda r: r.seed)
        fractions = np.array([history(r, normalise) for r in mine]) / reference_volume
        feasible = [statistics.mean(r.feasible_as_proposed) for r in mine]
        table[controller] = {
            "seeds": [r.seed for r in mine],
            "hypervolume_fraction": {  # std: population standard deviation over the seeds
                str(c): {
                    "mean": float(fractions[:, c - 1].mean()),
                    "std": float(fractions[:, c - 1].std()),
                    "per_seed": fractions[:, c - 1].tolist(),
                }
                for c in checkpoints
            },
            "history_mean": fractions.mean(axis=0).round(5).tolist(),
            "feasible_as_proposed": {"mean": statistics.mean(feasible), "per_seed": feasible},
            "seconds_per_run": statistics.mean(r.seconds for r in mine),
        }
    random_mean = table.get("random", {}).get("hypervolume_fraction", {}).get(str(args.trials))
    return {
        "problem": problem.name,
        "reference_volume": reference_volume,
        "reference_points": len(everything),
        "reference_run_trials": args.reference_trials,
        "random_mean_at_end": None if random_mean is None else random_mean["mean"],
        "controllers": table,
    }


def _plot(path: Path, results: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        1, len(results), figsize=(6 * len(results), 4.2), constrained_layout=True, squeeze=False
    )
    for ax, result in zip(axes[0], results, strict=True):
        for controller, row in result["controllers"].items():
            curve = row["history_mean"]
            ax.plot(range(1, len(curve) + 1), curve, label=controller)
        ax.axhline(0.95, c="0.5", ls="--", lw=0.8)
        ax.set_title(f"{result['problem']}: hypervolume / reference front's")
        ax.set_xlabel("trials")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--population", type=int, default=16, help="population_size")
    parser.add_argument("--reference-trials", type=int, default=3000)
    parser.add_argument("--controllers", nargs="*", default=list_controllers())
    parser.add_argument("--problems", nargs="*", default=["compression", "dtlz2"])
    parser.add_argument("--budget-fraction", type=float, default=0.25)
    parser.add_argument("--dtlz-variables", type=int, default=12)
    parser.add_argument("--dtlz-levels", type=int, default=8)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--jobs", type=int, default=1, help="worker processes (one thread each)")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)

    problems: dict[str, Callable[[], Problem]] = {  # picklable: built again in each worker
        "compression": partial(Compression, args.budget_fraction),
        "dtlz2": partial(Dtlz2, args.dtlz_variables, args.dtlz_levels),
    }
    started = time.perf_counter()
    results = [benchmark(problems[name], args) for name in args.problems]
    payload = {
        "benchmark": "controllers",
        "code": code_versions(),
        "trials": args.trials,
        "seeds": args.seeds,
        "population_size": args.population,
        "jobs": args.jobs,
        "machine": platform.processor() or platform.machine(),
        "seconds": time.perf_counter() - started,
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=1) + "\n")
    _plot(args.out.with_suffix(".png"), results)
    for result in results:
        print(f"\n{result['problem']} (hypervolume / reference front's, mean +- std over seeds)")
        for controller, row in result["controllers"].items():
            cells = "  ".join(
                f"@{c}: {v['mean']:.3f}+-{v['std']:.3f}"
                for c, v in row["hypervolume_fraction"].items()
            )
            print(
                f"  {controller:7s} {cells}  feasible as proposed "
                f"{100 * row['feasible_as_proposed']['mean']:.0f} %"
            )


if __name__ == "__main__":
    main()
