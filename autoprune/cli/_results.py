"""``autoprune report`` and ``autoprune export``: what a run found, as a table or as files."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from typing import Any

from autoprune._interrupts import interrupts_kept
from autoprune.cli._parser import check_path
from autoprune.errors import ConfigError
from autoprune.report import (
    format_front_table,
    front_records,
    hypervolume_payload,
    summary,
    weights_reference,
)
from autoprune.retrain import RetrainSettings
from autoprune.search import RunDir, pareto_front

__all__ = ["export_command", "report_command"]


def report_command(args: argparse.Namespace) -> int:
    """Print the run's Pareto front (table or JSON with the summary and hypervolume), and the
    unpruned base with your weights where the run started from ``model.weights``."""
    check_path("run directory", args.run_dir)
    run = RunDir(args.run_dir)
    records = run.records()
    front = pareto_front(records)
    hypervolume = run.hypervolume(records)
    reference = weights_reference(run.path)
    if args.format == "json":
        payload: dict[str, Any] = {"summary": summary(records), "pareto": front_records(front)}
        if reference is not None:
            payload["reference"] = reference
        if hypervolume is not None:
            payload["hypervolume"] = hypervolume_payload(hypervolume)
        print(json.dumps(payload, indent=2))
    else:
        print(format_front_table(front, records, hypervolume, reference=reference))
    return 0


def export_command(args: argparse.Namespace) -> int:
    """Export the chosen trials, retrained first with ``--retrain``: 0 when everything asked for
    was written, 3 when some (trial, format) pairs were skipped (each named on stderr), 130
    after Ctrl-C."""
    # ONNX, onnxscript and TVM's runtime come with the exporters: imported here, not for `report`.
    from autoprune.export import export_run  # noqa: PLC0415

    options = {
        "evaluator": args.retrain_evaluator,
        "epochs": args.retrain_epochs,
        "samples": args.retrain_samples,
        "seed": args.retrain_seed,
    }
    check_path("run directory", args.run_dir)
    if args.out is not None:
        check_path("--out", args.out)
    given = [f"--retrain-{name}" for name, value in options.items() if value is not None]
    if given and not args.retrain:
        raise ConfigError(f"{given[0]} applies only with --retrain; add --retrain")
    retrain = None
    if args.retrain:
        retrain = RetrainSettings(**{k: v for k, v in options.items() if v is not None})
    formats = [f.strip() for f in args.format.split(",") if f.strip()]
    try:
        with interrupts_kept():
            exported = export_run(
                args.run_dir,
                trials=args.trial or (),
                pareto=args.pareto,
                formats=formats,
                out_dir=args.out,
                target=args.target,
                fold_normalisation=args.fold_normalisation,
                retrain=retrain,
                progress=not args.quiet,
            )
    except KeyboardInterrupt:
        if retrain is None:
            raise
        print(
            f"autoprune: interrupted; retrained trials are kept in {args.run_dir / 'retrain'}. "
            f"Continue with: autoprune {' '.join(shlex.quote(a) for a in args.argv)}",
            file=sys.stderr,
        )
        return 130
    for item in exported:
        print(f"trial {item.trial}: {item.folder} ({', '.join(p.name for p in item.files)})")
        for note in item.notes:
            print(f"  note: {note}")
    skipped = [s for item in exported for s in item.skipped]
    for skip in skipped:
        print(f"autoprune: {skip}", file=sys.stderr)
    return 3 if skipped else 0
