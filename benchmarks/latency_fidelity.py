"""How well do the latency estimates rank and predict measured latency on this host?

For candidates sampled from the default search space (float kernels) and the unpruned zoo models
at 3x224x224, this measures TVM-built latency and PyTorch eager latency on the ``host`` profile
(worker processes, one protocol for both) and compares two estimates with the TVM measurement:
the per-layer roofline (``estimate_hardware``) and the per-fused-TVM-kernel roofline
(``estimate_from_kernels``, the one searches use). It writes Kendall tau and the median absolute
percentage error (MAPE) of each estimate, with the mean and the worst error beside it, and the
TVM/PyTorch latency ratio per model, to ``benchmarks/results/latency_fidelity.json``.

Untuned TVM code is naive loops (docs/tvm.md), so by default every model is first tuned with
MetaSchedule into ONE database shared by all models (``--trials-per-task`` measured schedules
per new fused kernel), as a ``--target host`` search does. The work folder keeps the database,
the tuning log and a measurement cache, so an interrupted run picks up where it stopped; they
live under a folder named by the code's key (``benchmarks/_common.py``), so other code starts
afresh.

The host profile's three estimator factors (``compute_efficiency``, ``memory_efficiency``,
``kernel_launch_overhead_us``) are machine-specific; ``--fit`` fits them to these measurements
(least squares on log latency) and reports how the fitted estimator does on models it was not
fitted to (5-fold cross-validation), beside the figures of the profile as shipped. The
cross-validated error is the estimator's expected error on a model it was not fitted to; the
in-sample error of the fit is smaller than that by construction.

Every row keeps its measured and estimated latencies, so ``--summarise`` recomputes the summary
from a results file's rows alone (arithmetic, no measurement)::

    python benchmarks/latency_fidelity.py --candidates 30 --zoo [--fit] [--untuned]
        [--trials-per-task N] [--zoo-trials-per-task M]
    python benchmarks/latency_fidelity.py --summarise [--out FILE]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import platform
import random
import statistics
import time
from pathlib import Path

import numpy as np
from _common import code_versions, keyed
from scipy.optimize import minimize
from scipy.stats import kendalltau

from autoprune.config import load_config
from autoprune.hwprofiles import (
    DeviceProfile,
    KernelCost,
    MeasureProtocol,
    TuningError,
    estimate_from_kernels,
    estimate_hardware,
    fused_kernels,
    import_to_relax,
    load_profile,
    measure_pytorch_latency,
    measure_tvm_latency,
    tune_model,
)
from autoprune.search import build_space
from autoprune.spaces import Candidate, build_model, count_costs, create_model

RESULTS = Path(__file__).parent / "results" / "latency_fidelity.json"
WORK = Path("/var/tmp/autoprune-latency-fidelity")
ZOO = ("resnet18", "resnet50", "mobilenet_v2", "vgg16_bn")
FACTORS = ("compute_efficiency", "memory_efficiency", "kernel_launch_overhead_us")


def sample_candidates(count: int, seed: int) -> list[Candidate]:
    """Distinct float candidates of the default space, drawn uniformly."""
    config = load_config(overrides=["space.weight_bits=[32]", "space.activation_bits=[32]"])
    profile = load_profile("host")
    space = build_space(config, profile)
    rng = random.Random(seed)
    seen: dict[str, Candidate] = {}
    while len(seen) < count:
        params = {d.name: rng.choice(d.choices) for d in space.decisions}
        candidate = space.candidate(params)
        seen.setdefault(candidate.hash, candidate)
    return list(seen.values())


def mape(estimates: list[float], measured: list[float]) -> float:
    """Median absolute percentage error of estimates against measurements, percent."""
    return 100 * statistics.median(abs(e - m) / m for e, m in zip(estimates, measured, strict=True))


def fidelity(estimates: list[float], measured: list[float]) -> dict[str, float]:
    """Kendall tau, and the median (MAPE), mean and worst absolute percentage error of
    ``estimates`` against ``measured``."""
    errors = [100 * abs(e - m) / m for e, m in zip(estimates, measured, strict=True)]
    return {
        "kendall_tau": float(kendalltau(estimates, measured).statistic),
        "mape_percent": mape(estimates, measured),
        "mean_ape_percent": statistics.mean(errors),
        "max_ape_percent": max(errors),
    }


#: Columns of a row compared with ``tvm_ms`` in the summary, by summary key.
COMPARED = {
    "estimated_per_layer_ms": "estimated_per_layer_ms",
    "estimated_per_kernel_ms": "estimated_per_kernel_ms",
    "pytorch_vs_tvm": "pytorch_ms",
    "fitted_per_kernel_ms": "fitted_per_kernel_ms",
    "cross_validated_per_kernel_ms": "cross_validated_per_kernel_ms",
}


def summarise(rows: list[dict], fitted_factors: dict[str, float] | None) -> dict[str, object]:
    """The summary of a results file, from its rows: each estimate (and PyTorch) against the TVM
    measurement, over every model and over the candidates alone; ``fitted_factors`` with
    ``--fit``, whose rows carry the fitted and cross-validated estimates."""
    ok = [r for r in rows if r["tvm_error"] is None]
    summary: dict[str, object] = {
        key: fidelity([r[column] for r in ok], [r["tvm_ms"] for r in ok])
        for key, column in COMPARED.items()
        if ok and all(column in r for r in ok)
    }
    candidates = [r for r in ok if r["model"].startswith("candidate")]
    summary["candidates_only"] = {
        "per_kernel_vs_tvm": fidelity(
            [r["estimated_per_kernel_ms"] for r in candidates], [r["tvm_ms"] for r in candidates]
        ),
        "pytorch_vs_tvm": fidelity(
            [r["pytorch_ms"] for r in candidates], [r["tvm_ms"] for r in candidates]
        ),
    }
    if fitted_factors is not None:
        summary["fitted_factors"] = fitted_factors
    return summary


def resummarise(path: Path) -> None:
    """Recompute the summary of the results file at ``path`` from its rows, and write it back."""
    payload = json.loads(path.read_text())
    payload["summary"] = summarise(payload["rows"], payload["summary"].get("fitted_factors"))
    path.write_text(json.dumps(payload, indent=1) + "\n")
    print(json.dumps(payload["summary"], indent=1))


def with_factors(profile: DeviceProfile, values: np.ndarray) -> DeviceProfile:
    """``profile`` with the estimator factors set to ``values`` (in :data:`FACTORS` order)."""
    factors = dict(zip(FACTORS, map(float, values), strict=True))
    factors["compute_efficiency"] = dict.fromkeys(
        profile.native_precisions, factors["compute_efficiency"]
    )
    return dataclasses.replace(profile, **factors)


def _factor(profile: DeviceProfile, name: str) -> float:
    value = getattr(profile, name)
    return value["fp32"] if name == "compute_efficiency" else value


def fit_factors(
    profile: DeviceProfile, kernels: list[list[KernelCost]], measured: list[float]
) -> np.ndarray:
    """Estimator factors that minimise the squared log error of the per-kernel estimate.

    Searched in log space (efficiencies in (0, 1], overhead in microseconds) with Nelder-Mead
    from the profile's own values.
    """
    target = np.log(measured)

    def loss(log_values: np.ndarray) -> float:
        values = np.exp(log_values)
        if values[0] > 1 or values[1] > 1:
            return 1e9
        fitted = with_factors(profile, values)
        predicted = [estimate_from_kernels(k, fitted).latency_ms for k in kernels]
        return float(np.sum((np.log(predicted) - target) ** 2))

    start = np.log([_factor(profile, name) for name in FACTORS])
    result = minimize(loss, start, method="Nelder-Mead", options={"maxiter": 2000, "xatol": 1e-4})
    return np.exp(result.x)


def cross_validated(
    profile: DeviceProfile, kernels: list[list[KernelCost]], measured: list[float], folds: int
) -> list[float]:
    """Out-of-fold per-kernel estimates: each model estimated with factors fitted without it."""
    order = list(range(len(measured)))
    random.Random(0).shuffle(order)
    predicted = [math.nan] * len(measured)
    for fold in range(folds):
        held_out = set(order[fold::folds])
        train = [i for i in order if i not in held_out]
        values = fit_factors(profile, [kernels[i] for i in train], [measured[i] for i in train])
        fitted = with_factors(profile, values)
        for i in held_out:
            predicted[i] = estimate_from_kernels(kernels[i], fitted).latency_ms
    return predicted


def tuning_log(work: Path, trials_per_task: int) -> dict[str, dict]:
    """Tuning reports of an earlier (interrupted) run at this budget or more, by model label.

    A model logged at a smaller budget is tuned again: its kernels get the trials they lack.
    """
    path = work / "tuning.jsonl"
    if not path.exists():
        return {}
    entries = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {
        entry["model"]: entry
        for entry in entries
        if entry.get("trials_per_task", 0) >= trials_per_task
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--candidates", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--zoo", action="store_true", help="add the unpruned zoo at 3x224x224")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--untuned", action="store_true", help="measure untuned TVM code")
    parser.add_argument("--trials-per-task", type=int, default=8)
    parser.add_argument(
        "--zoo-trials-per-task",
        type=int,
        help="tuning budget of the zoo models (default: --trials-per-task); their 224x224 "
        "kernels cost several times a candidate's per trial",
    )
    parser.add_argument("--tune-timeout-s", type=float, default=3600.0)
    parser.add_argument("--fit", action="store_true", help="fit the host factors, 5-fold CV")
    parser.add_argument("--work", type=Path, default=WORK, help="database and caches")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--summarise", action="store_true", help="recompute --out's summary from its rows only"
    )
    args = parser.parse_args()
    if args.summarise:
        resummarise(args.out)
        return
    args.work = keyed(args.work)

    profile = load_profile("host")
    protocol = MeasureProtocol(threads=args.threads)
    database = None if args.untuned else args.work / "tuning"
    models: list[tuple[str, object, tuple[int, int, int]]] = [
        (f"candidate {c.hash}", c, c.input_shape)
        for c in sample_candidates(args.candidates, args.seed)
    ]
    if args.zoo:
        models += [
            (name, create_model(name, num_classes=1000, in_channels=3), (3, 224, 224))
            for name in ZOO
        ]

    budgets = {label: args.trials_per_task for label, _, _ in models}
    if args.zoo and args.zoo_trials_per_task is not None:
        budgets.update({name: args.zoo_trials_per_task for name in ZOO})
    tuning: dict[str, dict] = {}
    if database is not None:  # phase 1: tune everything into the shared database
        for label, model, shape in models:
            logged = tuning_log(args.work, budgets[label]).get(label)
            if logged is not None:
                tuning[label] = logged
                continue
            for attempt in (1, 2):  # a crash in TVM's thread pool has happened once in hours
                try:
                    report = tune_model(
                        model,
                        shape,
                        profile,
                        database_dir=database,
                        max_trials=budgets[label] * 1000,
                        trials_per_task=budgets[label],
                        threads=args.threads,
                        timeout_s=args.tune_timeout_s,
                    )
                    break
                except TuningError as error:
                    print(f"tuning {label} failed (attempt {attempt}): {error}", flush=True)
                    if attempt == 2:
                        raise
            tuning[label] = {
                "model": label,
                "trials_per_task": budgets[label],
                **report.to_dict(),
            }
            with open(args.work / "tuning.jsonl", "a") as log:
                log.write(json.dumps(tuning[label]) + "\n")
            print(
                f"tuned {label:28s} {report.new_tasks:3d}/{report.tasks:3d} new tasks, "
                f"{report.trials:4d} trials, {report.seconds:7.1f} s",
                flush=True,
            )

    rows, all_kernels = [], []  # phase 2: measure, then estimate
    for label, model, shape in models:
        module = build_model(model, seed=0) if isinstance(model, Candidate) else model
        costs = count_costs(module, shape)
        kernels = fused_kernels(import_to_relax(module, shape))
        started = time.perf_counter()
        tvm_run = measure_tvm_latency(
            model,
            shape,
            profile,
            protocol=protocol,
            cache_dir=args.work / "hw-cache",
            database_dir=database,
            timeout_s=1800.0,
        )
        torch_run = measure_pytorch_latency(
            model, shape, protocol=protocol, cache_dir=args.work / "hw-cache"
        )
        row = {
            "model": label,
            "input_shape": list(shape),
            "macs": costs.macs,
            "kernels": len(kernels),
            "estimated_per_layer_ms": estimate_hardware(costs, profile).latency_ms,
            "estimated_per_kernel_ms": estimate_from_kernels(kernels, profile).latency_ms,
            "tvm_ms": tvm_run.latency_ms,
            "tvm_spread_ms": tvm_run.spread_ms,
            "tvm_tuned": tvm_run.tuned,
            "tuning_trials_per_task": None if database is None else budgets[label],
            "tvm_error": tvm_run.error,
            "tuning": tuning.get(label),
            "pytorch_ms": torch_run.latency_ms,
            "pytorch_spread_ms": torch_run.spread_ms,
            "tvm_over_pytorch": tvm_run.latency_ms / torch_run.latency_ms,
            "seconds": time.perf_counter() - started,
        }
        rows.append(row)
        all_kernels.append(kernels)
        print(
            f"{label:28s} {row['macs'] / 1e6:9.2f} MMACs  est {row['estimated_per_kernel_ms']:8.3f}"
            f" ms  tvm {row['tvm_ms']:8.3f} ms  pytorch {row['pytorch_ms']:8.3f} ms",
            flush=True,
        )

    ok = [i for i, r in enumerate(rows) if r["tvm_error"] is None]
    measured = [rows[i]["tvm_ms"] for i in ok]
    fitted_factors = None
    if args.fit:
        kernels = [all_kernels[i] for i in ok]
        values = fit_factors(profile, kernels, measured)
        fitted = with_factors(profile, values)
        in_sample = [estimate_from_kernels(k, fitted).latency_ms for k in kernels]
        out_of_fold = cross_validated(profile, kernels, measured, folds=5)
        for i, row_index in enumerate(ok):
            rows[row_index]["fitted_per_kernel_ms"] = in_sample[i]
            rows[row_index]["cross_validated_per_kernel_ms"] = out_of_fold[i]
        fitted_factors = dict(zip(FACTORS, map(float, values), strict=True))
    # pytorch_vs_tvm is context: how well two measurements of the same models agree.
    summary = summarise(rows, fitted_factors)
    ratios = {r["model"]: r["tvm_over_pytorch"] for r in rows if r["tvm_error"] is None}
    zoo_budget = budgets.get(ZOO[0], args.trials_per_task)
    tuned_with = f"{args.trials_per_task} MetaSchedule trials per fused kernel" + (
        f" ({zoo_budget} for the zoo models)"
        if args.zoo and zoo_budget != args.trials_per_task
        else ""
    )
    payload = {
        "benchmark": "latency_fidelity",
        "code": code_versions(),
        "measured_against": "TVM-built code on this host, "
        + (
            f"tuned ({tuned_with}, one database)"
            if all(rows[i]["tvm_tuned"] for i in ok)
            else "UNTUNED (naive loops)"
        ),
        "profile": profile.name,
        "profile_factors": {name: _factor(profile, name) for name in FACTORS},
        "protocol": protocol.to_dict(),
        "machine": platform.processor() or platform.machine(),
        "models": len(rows),
        "failed": len(rows) - len(ok),
        "summary": summary,
        "tvm_over_pytorch": ratios,
        "tvm_over_pytorch_median": statistics.median(ratios.values()) if ratios else None,
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=1) + "\n")
    print(json.dumps({"measured_against": payload["measured_against"], **summary}, indent=1))


if __name__ == "__main__":
    main()
