"""The Python API: the CLI's search, report and export, called from a notebook or a script.

One code path with the CLI: :func:`search` makes a config (the YAML file, the embedded default,
or a shipped name) with the given values on top, and runs the same :func:`run_search` in a run
directory, so a search started here resumes with ``autoprune search`` and the reverse, and
``autoprune report`` / ``export`` read its run. Models and data may be Python objects: a model
is any ``nn.Module`` or a factory ``(num_classes=, in_channels=) -> nn.Module`` (a name as in
YAML works too), and ``train`` / ``val`` / ``test`` any ``torch.utils.data.Dataset`` yielding
``(image tensor C x H x W, int label)``. Objects live in this process: continuing such a run
means passing them again.

Example:
    A new search is ``autoprune.search(model="resnet20", target="jetson", budgets=["20mflops"],
    trials=4, run_dir="runs/demo")`` (the README's "Python API" example, with data sets of
    yours, runs in ``tests/test_api.py``). Here, a finished 3-trial search continued by one
    trial, from its own configuration:

    >>> import autoprune
    >>> len(autoprune.open_run("runs/demo").records)
    3
    >>> run = autoprune.search(config="runs/demo/config.yaml", trials=4, run_dir="runs/demo",
    ...                        progress=False)
    >>> [(r.number, r.state) for r in run.records][-1], bool(run.pareto)
    ((3, 'complete'), True)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autoprune.config import load_config
from autoprune.errors import ConfigError
from autoprune.evaluators import DatasetSplits
from autoprune.export import DEFAULT_FORMATS, ExportedModel, export_run
from autoprune.report import format_front_table, weights_reference, write_report_files
from autoprune.retrain import RetrainSettings
from autoprune.search import RunDir, TrialRecord, pareto_front, run_search
from autoprune.spaces import python_model

__all__ = ["Run", "open_run", "search"]

PathLike = str | os.PathLike[str]


class Run:
    """A run directory, read back: its trials, its Pareto front, its report and exports.

    The same directory ``autoprune report`` and ``autoprune export`` read; every property
    reads the study again, so a run that another process extends shows its new trials.
    """

    def __init__(self, path: PathLike) -> None:
        self.path = Path(path)
        self._run = RunDir(self.path)

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    @property
    def records(self) -> list[TrialRecord]:
        """Every trial of the run, in trial order."""
        return self._run.records()

    @property
    def pareto(self) -> list[TrialRecord]:
        """The feasible, trained trials no other trial dominates (accuracy up, costs down)."""
        return pareto_front(self.records)

    def trial(self, number: int) -> TrialRecord:
        """The record of trial ``number``.

        Raises:
            ConfigError: the run has no such trial.
        """
        for record in self.records:
            if record.number == number:
                return record
        raise ConfigError(f"run {str(self.path)!r} has no trial {number}; see Run.records")

    def report(self, *, title: str | None = None) -> str:
        """Write the report files (``pareto.json``, ``.csv``, plots); return the front table."""
        records = self.records
        front = pareto_front(records)
        hypervolume = self._run.hypervolume(records)
        write_report_files(
            self.path, front, records, title=title or str(self.path), hypervolume=hypervolume
        )
        reference = weights_reference(self.path)
        return format_front_table(front, records, hypervolume, reference=reference)

    def export(
        self,
        trial: int | Sequence[int] | None = None,
        *,
        formats: Sequence[str] = DEFAULT_FORMATS,
        out: PathLike | None = None,
        target: str | None = None,
        fold_normalisation: bool = False,
        retrain: RetrainSettings | None = None,
        progress: bool = False,
    ) -> list[ExportedModel]:
        """Export ``trial`` (a number or several; ``None``: the whole Pareto front), as
        ``autoprune export`` does; returns what was written where, and what was skipped."""
        numbers = [trial] if isinstance(trial, int) else list(trial or ())
        return export_run(
            self.path,
            trials=numbers,
            pareto=trial is None,
            formats=list(formats),
            out_dir=Path(out) if out is not None else None,
            target=target,
            fold_normalisation=fold_normalisation,
            retrain=retrain,
            progress=progress,
        )


def open_run(path: PathLike) -> Run:
    """The run in ``path``, which must exist (``autoprune search`` or :func:`search` made it).

    Raises:
        ConfigError: ``path`` holds no run.
    """
    run = Run(path)
    if not run._run.exists():
        raise ConfigError(f"{str(path)!r} holds no autoprune run; run a search into it first")
    return run


def _splits(
    train: torch.utils.data.Dataset | None,
    val: torch.utils.data.Dataset | None,
    test: torch.utils.data.Dataset | None,
    num_classes: int | None,
    class_names: Sequence[str],
) -> DatasetSplits | None:
    if train is None and val is None and test is None:
        return None
    if train is None or val is None:
        raise ConfigError("give both `train` and `val` data sets (and optionally `test`)")
    return DatasetSplits.from_datasets(
        train, val, test, num_classes=num_classes, class_names=tuple(class_names)
    )


def search(
    model: str | nn.Module | Callable[..., nn.Module] | None = None,
    *,
    train: torch.utils.data.Dataset | None = None,
    val: torch.utils.data.Dataset | None = None,
    test: torch.utils.data.Dataset | None = None,
    target: str | None = None,
    budgets: Sequence[str] | None = None,
    trials: int | None = None,
    config: PathLike | None = None,
    run_dir: PathLike | None = None,
    weights: PathLike | None = None,
    num_classes: int | None = None,
    class_names: Sequence[str] = (),
    settings: Mapping[str, Any] | None = None,
    storage: str | None = None,
    progress: bool = True,
) -> Run:
    """Run (or continue) a search and return its :class:`Run`.

    Args:
        model: a model name (as in YAML: ``"resnet34"``, ``"timm:resnet18"``,
            ``"file.py:factory"``), an ``nn.Module`` (its architecture; give trained weights as
            ``weights``) or a factory; ``None``: the config's.
        train, val, test: data sets yielding ``(image tensor, label)``; ``None``: the config's
            data set. ``test`` is evaluated for the front only.
        target, budgets, trials: as ``--target``, ``--budget`` and ``--trials``.
        config: a YAML file or a shipped config's name; ``None``: the embedded default.
        run_dir: where the run lives; ``None``: ``runs/api-<target>-<budgets>-seed<seed>``.
        weights: the base model's trained weights (``model.weights``).
        num_classes: the classifier's outputs; ``None``: from ``train``'s labels (or the
            config).
        class_names: names of the classes, recorded in the run for exports.
        settings: any other config values by dotted key, e.g. ``{"training.epochs": 3}``.
        storage: an Optuna storage URL for the study (default: SQLite in ``run_dir``).
        progress: show progress bars.

    Raises:
        ConfigError: bad input, in one line (nothing is written then).
    """
    data = _splits(train, val, test, num_classes, class_names)
    values: dict[str, Any] = dict(settings or {})
    if model is not None:
        values["model.name"] = model if isinstance(model, str) else python_model(model)
    if data is not None:
        values["model.num_classes"] = data.num_classes
        values["model.in_channels"] = data.input_shape[0]
        values["data.input_shape"] = data.input_shape
        values["data.dataset"] = data.name
    elif num_classes is not None:
        values["model.num_classes"] = num_classes
    for key, value in (
        ("target", target),
        ("budgets", list(budgets) if budgets is not None else None),
        ("search.trials", trials),
        ("model.weights", os.fspath(weights) if weights is not None else None),
    ):
        if value is not None:
            values[key] = value
    cfg = load_config(config, values=values)
    in_process = data is not None or cfg.model.name.startswith("python:")
    if in_process and (cfg.search.workers > 1 or cfg.search.ray_address is not None):
        raise ConfigError(
            "Python objects (model or data) cannot reach Ray workers; give names instead "
            "(model.name, data.dataset) or set search.workers=1"
        )
    if run_dir is None:
        budget_text = "-".join(b.spec for b in cfg.budgets) or "nobudget"
        run_dir = Path("runs") / f"api-{cfg.target}-{budget_text}-seed{cfg.search.seed}"
    run_search(cfg, run_dir=Path(run_dir), storage=storage, progress=progress, data=data)
    return Run(run_dir)
