"""``export_run``: choose a run's trials, check what was asked, and write each trial's folder
whole (the layout is in :mod:`autoprune.export`)."""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from autoprune.errors import AutopruneError, RunDirError
from autoprune.export._card import card_markdown, model_json
from autoprune.export._formats import EXPORT_FORMATS, ExportJob, WrittenFile
from autoprune.hwprofiles import DeviceProfile, load_profile
from autoprune.retrain import Retrained, Retrainer, RetrainSettings
from autoprune.search import RunDir, TrialRecord, pareto_front

__all__ = ["DEFAULT_FORMATS", "ExportedModel", "Skipped", "export_run"]

_logger = logging.getLogger("autoprune.export")
DEFAULT_FORMATS = ("onnx", "torchscript", "pt2")
_PARTIAL = ".partial"  # suffix of a trial folder being written


@dataclass(frozen=True)
class Skipped:
    """A (trial, format) pair that was not produced, and why (one line)."""

    trial: int
    format: str
    reason: str

    def __str__(self) -> str:
        return f"trial {self.trial}: {self.format} skipped: {self.reason}"


@dataclass(frozen=True)
class ExportedModel:
    """Where one trial's exported files went, the formats skipped, and notes for deployers."""

    trial: int
    folder: Path
    files: tuple[Path, ...]
    skipped: tuple[Skipped, ...] = ()
    notes: tuple[str, ...] = ()


class _Normalised(nn.Module):
    """``model`` fed pixel values in 0..255: ``(x / 255 - mean) / std`` per channel first."""

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).reshape(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).reshape(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x / 255.0 - self.mean) / self.std)


def _choose(run: RunDir, trials: Sequence[int], pareto: bool) -> list[TrialRecord]:
    records = {r.number: r for r in run.records()}
    if pareto:
        chosen = pareto_front(list(records.values()))
        if not chosen:
            raise RunDirError(f"run {str(run.path)!r} has no feasible trained trial to export yet")
        return chosen
    missing = [n for n in trials if n not in records]
    if missing:
        raise RunDirError(
            f"trial {missing[0]} does not exist in {str(run.path)!r}; trials: "
            f"0..{max(records, default=-1)}"
        )
    return [records[n] for n in trials]


def _check_formats(formats: Sequence[str]) -> None:
    """Only registered format names: each writes fixed file names inside the trial's folder."""
    unknown = sorted(set(formats) - set(EXPORT_FORMATS))
    if unknown:
        raise AutopruneError(
            f"unknown export format {unknown[0]!r}; valid formats: {', '.join(EXPORT_FORMATS)}"
        )
    if not formats:
        raise AutopruneError(f"no export format given; valid formats: {', '.join(EXPORT_FORMATS)}")


def _check(run: RunDir, chosen: list[TrialRecord]) -> None:
    """Everything about the run that can be checked before writing: trials trained, weights."""
    for record in chosen:
        run.trained_state(record)  # raises if untrained, missing or damaged


def _data(run: RunDir, fold_normalisation: bool) -> dict[str, Any] | None:
    data = run.data()  # raises if damaged
    if data is not None:
        return data
    if fold_normalisation:
        raise RunDirError(
            f"run {str(run.path)!r} has no data.json (it predates it), so its normalisation is "
            f"unknown; export without --fold-normalisation"
        )
    return None


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")


def _remove(path: Path) -> None:
    """Delete ``path`` inside the output folder: a link is unlinked, never followed out of it."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


def _replace(partial: Path, folder: Path) -> None:
    """Put the finished ``partial`` folder in ``folder``'s place (an earlier export's goes)."""
    old = folder.with_name(folder.name + ".old")
    _remove(old)
    if folder.exists() or folder.is_symlink():
        folder.rename(old)
    partial.rename(folder)
    _remove(old)


def export_run(
    run_dir: Path,
    *,
    trials: Sequence[int] = (),
    pareto: bool = False,
    formats: Sequence[str] = DEFAULT_FORMATS,
    out_dir: Path | None = None,
    target: str | None = None,
    fold_normalisation: bool = False,
    retrain: RetrainSettings | None = None,
    progress: bool = False,
) -> list[ExportedModel]:
    """Export the given trials (or the Pareto front) of the run in ``run_dir``.

    ``target`` names the device profile the TVM library is built for and whose native
    precisions decide how 16-bit layers are stored (fp16 where native); default: the run's.
    ``fold_normalisation`` puts the input normalisation into every format's graph (the model
    then takes pixel values in 0..255). With ``retrain``, each trial is first retrained at those
    settings (:mod:`autoprune.retrain`; kept results are reused) and the retrained weights are
    exported. ``progress`` shows the retraining's progress bars.

    Nothing is written outside ``out_dir``: each trial goes to ``out_dir/trial-NNNN`` (its
    number) under the fixed file names of the registered formats, and links found there are
    replaced, never followed. Everything checkable is checked before anything is written; a
    (trial, format) pair that fails while being produced is skipped (:class:`Skipped`, in the
    result) and the rest are written. Each trial's folder is complete or absent.

    Raises:
        AutopruneError: an unknown format or target, or a trial that cannot be exported at all.
    """
    _check_formats(formats)
    run = RunDir(run_dir)
    chosen = _choose(run, trials, pareto)
    _check(run, chosen)
    profile = load_profile(target or run.config().target)
    data = _data(run, fold_normalisation)
    retrainer = Retrainer(run, retrain, progress=progress) if retrain is not None else None
    out_dir = out_dir or run.export_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob(f"trial-*{_PARTIAL}"):  # left by an export that was killed
        _remove(stale)
    exported = []
    for record in chosen:
        retrained = None
        if retrainer is None:
            model = run.trained_model(record)
        else:
            model, retrained = retrainer.retrain(record)
        folder = out_dir / f"trial-{record.number:04d}"
        partial = folder.with_name(f"{folder.name}.{os.getpid()}{_PARTIAL}")
        partial.mkdir()
        try:
            item = _export_trial(
                run, record, model, partial, formats, profile, data, fold_normalisation, retrained
            )
            _replace(partial, folder)
        finally:
            if partial.exists():
                shutil.rmtree(partial)
        item = ExportedModel(
            trial=record.number,
            folder=folder,
            files=tuple(folder / p.name for p in item.files),
            skipped=item.skipped,
            notes=item.notes,
        )
        _logger.info("trial %d exported to %s", record.number, folder)
        exported.append(item)
    return exported


def _export_trial(
    run: RunDir,
    record: TrialRecord,
    model: nn.Module,
    folder: Path,
    formats: Sequence[str],
    profile: DeviceProfile,
    data: dict[str, Any] | None,
    fold_normalisation: bool,
    retrained: Retrained | None,
) -> ExportedModel:
    """Write one trial into ``folder`` (a temporary one): its files, skips and notes."""
    assert record.candidate is not None
    files = [folder / "candidate.yaml", folder / "model.pt"]
    files[0].write_text(yaml.safe_dump(record.candidate, sort_keys=False))
    torch.save(model.state_dict(), files[1])
    if retrained is not None:
        files.append(folder / "retrain.json")
        files[-1].write_text(json.dumps(retrained.to_dict(), indent=1) + "\n")
    network = model
    if fold_normalisation and data is not None:
        network = _Normalised(model, data["mean"], data["std"]).eval()
    job = ExportJob(network, tuple(record.candidate["input_shape"]), profile)
    written: list[WrittenFile] = []
    skipped = []
    for name in formats:
        try:
            with torch.no_grad():
                written += EXPORT_FORMATS[name].write(job, folder)
        except Exception as error:  # one format failing must not cost the others
            skipped.append(Skipped(record.number, name, _one_line(error)))
            _logger.debug("trial %d: %s failed", record.number, name, exc_info=True)
    info = model_json(
        record,
        data=data,
        folded=fold_normalisation,
        target=run.config().target,
        export_target=profile.name,
        files=written,
        layers=job.layers,
        notes=job.notes,
        retrained=retrained,
    )
    files += [folder / f.name for f in written]
    files.append(folder / "model.json")
    files[-1].write_text(json.dumps(info, indent=1) + "\n")
    files.append(folder / "card.md")
    files[-1].write_text(card_markdown(info, run.path))
    return ExportedModel(record.number, folder, tuple(files), tuple(skipped), tuple(job.notes))
