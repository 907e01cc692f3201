"""How well each board's latency estimate matches published measurements, before and after
fitting the profile to them (``autoprune calibrate``).

For every profile with at least 4 rows of the runtime it models in
``autoprune/hwprofiles/calibration/rows.csv``:

* before: the hand-written profile's per-kernel estimate against the published latencies;
* after: leave-one-model-out cross-validation of the fit: each model's rows are estimated by a
  profile fitted to the other models' rows only, so no row judges a fit it took part in.

Both give the median absolute percentage error and Kendall's tau over the board's distinct
measurements (model, input, precision; repeated rows at their median). Kernel lists are
lowered through TVM once per (model, input) and cached in ``--cache-dir``
(``~/.cache/autoprune/kernels``) under a folder named by the code's key
(``benchmarks/_common.py``), so other code lowers afresh; the first run takes about 10 min on 2
cores, later runs seconds.

    python benchmarks/board_fidelity.py   # writes benchmarks/results/board_fidelity.{json,md}
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

from _common import code_versions, keyed

from autoprune.hwprofiles import (
    default_kernel_cache,
    fit_profile,
    kernels_for_rows,
    list_profiles,
    load_profile,
    load_rows,
)
from autoprune.hwprofiles._calibrate import point_figures, predict_latency_ms

RESULTS = Path(__file__).resolve().parent / "results"
MIN_ROWS = 4
GOAL_ERROR_PERCENT = 25.0
GOAL_TAU = 0.8


def board_figures(name: str, cache_dir: Path) -> dict | None:
    """Before/after figures of one board; ``None`` when it has fewer than MIN_ROWS rows."""
    profile = load_profile(name, calibrated=False)
    rows = load_rows(boards=[name])
    own = [r for r in rows if r.runtime == profile.runtime]
    if len(own) < MIN_ROWS:
        return None
    start = time.perf_counter()
    kernels = kernels_for_rows(rows, cache_dir=cache_dir, progress=lambda t: print(f"  {t}"))
    before = [predict_latency_ms(kernels[r.workload], profile, r.precision) for r in own]
    fit = fit_profile(profile, rows, kernels)
    cv = fit.cross_validation
    return {
        "board": name,
        "runtime": profile.runtime,
        "rows": len(own),
        "models": len({r.model for r in own}),
        "other_rows": dict(Counter(r.runtime for r in rows if r.runtime != profile.runtime)),
        "precisions": sorted({r.precision for r in own}),
        "before": point_figures(own, {r.line: b for r, b in zip(own, before, strict=True)}),
        "leave_one_model_out": {
            "median_ape_percent": cv["median_ape_percent"],
            "kendall_tau": cv["kendall_tau"],
            "points": cv["points"],
        },
        "fitted": {k: round(v, 4) for k, v in fit.fitted.items()},
        "runtime_factors": {k: round(v, 3) for k, v in fit.runtime_factors.items()},
        "per_row": [
            {
                "line": r.line,
                "model": r.model,
                "input": f"{r.input_hw[0]}x{r.input_hw[1]}",
                "precision": r.precision,
                "published_ms": r.latency_ms,
                "before_ms": round(b, 3),
                "held_out_ms": cv["per_row"].get(r.line),
            }
            for r, b in zip(own, before, strict=True)
        ],
        "seconds": round(time.perf_counter() - start, 1),
    }


def _markdown(boards: list[dict], skipped: dict[str, int]) -> str:
    lines = [
        "# Board latency fidelity (published batch-1 rows)",
        "",
        "Median absolute error and Kendall tau of the per-kernel estimate against published "
        "latencies of the runtime each profile models; after = leave-one-model-out "
        f"cross-validated fit. Goal: median <= {GOAL_ERROR_PERCENT:.0f} %, tau >= {GOAL_TAU}.",
        "",
        "| board | runtime | rows | points | models | before: median | before: tau "
        "| after: median "
        "| after: tau | goal |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for b in boards:
        after = b["leave_one_model_out"]
        ok = after["median_ape_percent"] <= GOAL_ERROR_PERCENT and after["kendall_tau"] >= GOAL_TAU
        lines.append(
            f"| {b['board']} | {b['runtime']} | {b['rows']} | {after['points']} | {b['models']} "
            f"| {b['before']['median_ape_percent']} % | {b['before']['kendall_tau']} "
            f"| {after['median_ape_percent']} % | {after['kendall_tau']} "
            f"| {'met' if ok else 'NOT met'} |"
        )
    lines += ["", "Boards with fewer than 4 rows of their runtime (not scored):", ""]
    lines += [f"- {name}: {count} rows" for name, count in sorted(skipped.items())]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--boards", nargs="*", help="profile names (default: all)")
    parser.add_argument("--cache-dir", type=Path, default=default_kernel_cache())
    parser.add_argument("--out", type=Path, default=RESULTS / "board_fidelity")
    args = parser.parse_args(argv)
    names = args.boards or [p.name for p in list_profiles()]
    boards, skipped = [], {}
    for name in names:
        print(name, flush=True)
        figures = board_figures(name, keyed(args.cache_dir))
        if figures is None:
            profile = load_profile(name, calibrated=False)
            skipped[name] = sum(r.runtime == profile.runtime for r in load_rows(boards=[name]))
        else:
            boards.append(figures)
            print(
                f"  before {figures['before']}  after {figures['leave_one_model_out']}",
                flush=True,
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    summary = {
        "what": "per-kernel estimate vs published batch-1 latencies, before and after "
        "calibration (leave one model out)",
        "rows_file": "autoprune/hwprofiles/calibration/rows.csv",
        "code": code_versions(),
        "boards": boards,
        "not_scored": skipped,
    }
    args.out.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(_markdown(boards, skipped))
    print(_markdown(boards, skipped))
    return 0


if __name__ == "__main__":
    sys.exit(main())
