"""``autoprune calibrate``: fit a profile's factors to the published rows of its board."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from autoprune._files import write_atomic
from autoprune.cli._parser import check_folder
from autoprune.errors import ConfigError
from autoprune.hwprofiles import (
    CalibrationFit,
    fit_profile,
    kernels_for_rows,
    load_profile,
    load_rows,
    profile_file,
)
from autoprune.hwprofiles._lowered import default_kernel_cache
from autoprune.hwprofiles._registry import overlay_path

__all__ = ["calibrate_command"]


def calibrate_command(args: argparse.Namespace) -> int:
    """Fit ``--target``'s factors to its rows, print them and write the profile's overlay."""
    profile = load_profile(args.target, calibrated=False)
    check_folder("--cache-dir", args.cache_dir)
    rows = load_rows(args.rows, boards=[profile.name])
    if not rows:
        raise ConfigError(
            f"no calibration row for {profile.name} in {args.rows or 'the built-in rows.csv'}; "
            "add published measurements of that board (see docs/calibration.md)"
        )
    quiet = args.format == "json" or args.quiet
    progress = None if quiet else (lambda text: print(f"  lowering {text}", file=sys.stderr))
    kernels = kernels_for_rows(
        rows, cache_dir=args.cache_dir or default_kernel_cache(), progress=progress
    )
    fit = fit_profile(profile, rows, kernels, cross_validate=not args.no_cross_validation)
    written = None
    if not args.dry_run:
        written = overlay_path(profile_file(args.target))
        _write_yaml(written, fit.overlay(), profile.name)
    if args.format == "json":
        print(json.dumps({**fit.overlay(), "written": str(written) if written else None}))
    else:
        _print_fit(fit, rows, profile, written)
    return 0


def _write_yaml(path: Path, data: dict[str, Any], name: str) -> None:
    text = (
        f"# Fitted by `autoprune calibrate --target {name}` from calibration/rows.csv "
        "(the rows listed below).\n# Regenerate rather than edit; see docs/calibration.md.\n"
        + yaml.safe_dump(data, sort_keys=False, width=100)
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, text)


def _print_fit(fit: CalibrationFit, rows: list, before: Any, written: Path | None) -> None:
    runtimes = Counter(r.runtime for r in rows)
    p = fit.profile
    print(
        f"{p.name}: {len(rows)} rows ({', '.join(f'{k} {v}' for k, v in runtimes.items())}), "
        f"{len({r.model for r in rows})} models; the estimate models {p.runtime}"
    )
    from autoprune.hwprofiles._calibrate import _factor_value

    for name, value in fit.fitted.items():
        bound = f"; {fit.at_bound[name].split(':')[0]}" if name in fit.at_bound else ""
        was = _factor_value(before, name)
        print(f"  fitted   {name:36s} {value:10.4g}  (was {was:.4g}{bound})")
    for name, why in fit.not_fitted.items():
        if name not in fit.derived:
            print(f"  assumed  {name:36s} {_factor_value(p, name):10.4g}  {why}")
    for name, value in fit.derived.items():
        print(f"  derived  {name:36s} {value:10.4g}  {fit.not_fitted[name]}")
    if fit.reference_setup:
        print(f"  models   {fit.reference_setup} (the setup with the most {p.runtime} rows)")
    for name, value in fit.runtime_factors.items():
        if name.startswith("setup_factor."):
            setup = name.removeprefix("setup_factor.")
            print(f"  setup    {setup:36s} {value:10.4g}  x latency, against the modelled setup")
            continue
        what = "x the roofline part" if name.startswith("runtime_factor.") else "us per kernel"
        print(f"  runtime  {name:36s} {value:10.4g}  {what}, against {p.runtime}")
    cv = fit.cross_validation
    if cv.get("rows"):
        print(
            f"  leave-one-model-out over the {p.runtime} rows: median error "
            f"{cv['median_ape_percent']:.1f} %, Kendall tau {cv['kendall_tau']:.2f} "
            f"({cv['points']} measurements in {cv['rows']} rows, {cv['models']} models)"
        )
    if written is not None:
        print(f"  wrote {written}")
