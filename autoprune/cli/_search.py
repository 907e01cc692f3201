"""``autoprune search``: options to a config, the search, then the front and how to continue."""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path

from tqdm.contrib.logging import logging_redirect_tqdm

from autoprune._interrupts import interrupts_kept, raise_if_interrupted
from autoprune.cli._parser import SEARCH_VALUES, check_path
from autoprune.config import Config, load_config
from autoprune.report import format_front_table, weights_reference, write_report_files
from autoprune.search import RunDir, pareto_front, run_search

__all__ = ["search_command"]


def _default_run_dir(args: argparse.Namespace, config: Config) -> Path:
    stem = Path(args.config).stem if args.config else "default"
    budgets = "-".join(b.spec for b in config.budgets) or "nobudget"
    return Path("runs") / (
        f"{stem}-{config.target}-{budgets}-{config.search.controller}-seed{config.search.seed}"
    )


def _without_trials(argv: list[str]) -> list[str]:
    """The command line minus ``--trials N``, to print "continue with: ... --trials N"."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--trials":
            skip = True
        elif not arg.startswith("--trials="):
            out.append(arg)
    return out


def _write_report(run: RunDir, title: str) -> None:
    """``pareto.json``, ``pareto.csv`` and the plots of what the run holds now."""
    records = run.records() if run.exists() else []
    if records:
        write_report_files(
            run.path,
            pareto_front(records),
            records,
            title=title,
            hypervolume=run.hypervolume(records),
        )


def search_command(args: argparse.Namespace) -> int:
    """Run the search the options describe; 130 after Ctrl-C (finished trials kept)."""
    values = {
        key: getattr(args, option)
        for option, key in SEARCH_VALUES.items()
        if getattr(args, option) is not None
    }
    config = load_config(args.config, overrides=args.overrides, values=values)
    run_dir = args.run_dir or _default_run_dir(args, config)
    check_path("--run-dir", run_dir)
    run = RunDir(run_dir)
    command = "autoprune " + " ".join(shlex.quote(a) for a in args.argv)
    title = (
        f"{config.model.name} on {config.target}, budgets: "
        f"{', '.join(b.spec for b in config.budgets) or 'none'}"
    )
    try:
        with interrupts_kept(), logging_redirect_tqdm(loggers=[logging.getLogger("autoprune")]):
            result = run_search(
                config, run_dir=run_dir, storage=args.storage, progress=not args.quiet
            )
            raise_if_interrupted()  # one swallowed after the last trial, in the test evaluation
    except KeyboardInterrupt:
        study = run.load_study() if run.exists() else None
        done = 0 if study is None else run.finished(study)
        _write_report(run, title)
        print(
            f"autoprune: interrupted; {done} finished trials are kept in {run_dir}. "
            f"Continue with: {command}",
            file=sys.stderr,
        )
        return 130
    hypervolume = run.hypervolume(list(result.records))
    write_report_files(
        run_dir, list(result.front), list(result.records), title=title, hypervolume=hypervolume
    )
    reference = weights_reference(run_dir)
    print(format_front_table(result.front, result.records, hypervolume, reference=reference))
    print(
        f"\nrun directory: {run_dir} (pareto.json, pareto.csv, pareto.png, hypervolume.png); "
        f"continue or extend with: autoprune "
        f"{' '.join(shlex.quote(a) for a in _without_trials(args.argv))} --trials N"
    )
    return 0
