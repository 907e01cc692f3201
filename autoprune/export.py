"""Export trained candidates of a run: weights, architecture, ONNX, TorchScript, a model card.

Per exported trial, ``OUT/trial-NNNN/`` holds::

    candidate.yaml        the architecture (rebuild with autoprune.spaces.build_model)
    model.pt              the trained state_dict
    model.onnx            ONNX, batch 1 at the deploy input shape (torch.export-based exporter)
    model.torchscript.pt  TorchScript (traced)
    model.so | model.tar  TVM library for the run's target (``--format tvm``): a shared library
                          for this host, or for a board cross-built (CUDA kernels for its GPU
                          through nvcc, aarch64 host code through ``aarch64-linux-gnu-g++``);
                          without the cross compiler, the object files as a tar to link there
    card.md               metrics with their sources and fidelity
    retrain.json          with ``retrain``: how the weights were retrained, and their accuracies

Example:
    >>> [e.trial for e in export_run(Path("runs/default-jetson-2gflops"), pareto=True)]
    [7, 2, 9]
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from autoprune.errors import AutopruneError, RunDirError
from autoprune.hwprofiles import (
    DeviceProfile,
    build_for_target,
    import_to_relax,
    load_profile,
    write_library,
)
from autoprune.retrain import Retrained, Retrainer, RetrainSettings
from autoprune.search import RunDir, TrialRecord, pareto_front

__all__ = ["DEFAULT_FORMATS", "EXPORT_FORMATS", "ExportedModel", "export_run"]

_logger = logging.getLogger("autoprune.export")
EXPORT_FORMATS = ("onnx", "torchscript", "tvm")
DEFAULT_FORMATS = ("onnx", "torchscript")


@dataclass(frozen=True)
class ExportedModel:
    """Where one trial's exported files went."""

    trial: int
    folder: Path
    files: tuple[Path, ...]


def _export_onnx(model: torch.nn.Module, example: torch.Tensor, path: Path) -> None:
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example,),
            str(path),
            dynamo=True,
            external_data=False,
            input_names=["input"],
            output_names=["logits"],
            verbose=False,
        )


def _export_torchscript(model: torch.nn.Module, example: torch.Tensor, path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated in favour of torch.export
        torch.jit.trace(model, example).save(str(path))


def _export_tvm(
    model: torch.nn.Module, input_shape: tuple[int, int, int], folder: Path, profile: DeviceProfile
) -> Path:
    """Build ``model`` with TVM for the profile's target and write the library into ``folder``."""
    if any(
        getattr(m, "weight_bits", 32) < 32 or getattr(m, "activation_bits", 32) < 32
        for m in model.modules()
    ):
        raise AutopruneError(
            "TVM export of fake-quantized layers (bit-widths below 32) is not supported yet: "
            "TVM 0.27 has no importer for them; export onnx or torchscript for this trial"
        )
    spec = profile.tvm_target_spec()
    executable = build_for_target(import_to_relax(model, input_shape), spec)
    return write_library(executable, spec, folder)


def _card(record: TrialRecord, run_dir: Path, retrained: Retrained | None = None) -> str:
    def pct(v: float | None) -> str:
        return "n/a" if v is None else f"{100 * v:.2f} %"

    search = (
        f"- validation accuracy: {pct(record.accuracy)} ({record.fidelity})",
        f"- test accuracy: {pct(record.test_accuracy)} ({record.test_fidelity or record.fidelity})",
    )
    if retrained is None:
        accuracy = search
        weights = (
            "Weights were trained from scratch at the fidelity above; retrain at full fidelity "
            "(`autoprune export --retrain`) before deployment figures are quoted as final."
        )
    else:
        accuracy = (
            f"- test accuracy: {pct(retrained.test_accuracy)} (retrained)",
            f"- validation accuracy: {pct(retrained.val_accuracy)} (retrained)",
            f"- retrained: {retrained.evaluator} at {retrained.fidelity}, seed {retrained.seed}, "
            f"in {retrained.seconds:.0f} s",
            f"- in the search: validation {pct(record.accuracy)}, test "
            f"{pct(record.test_accuracy)} ({record.fidelity})",
        )
        weights = "Weights are the retrained ones (retrain.json holds the figures above)."
    return "\n".join(
        [
            f"# autoprune trial {record.number} ({record.candidate_hash})",
            "",
            f"- run: `{run_dir}`",
            f"- base model: {record.candidate['model']}, deploy input {record.resolution}",
            *accuracy,
            f'- MACs: {record.macs:,} ("FLOPs" = multiply-accumulates)',
            f"- parameters: {record.params:,}; size at its bit-widths: {record.size_bytes:,} bytes",
            f"- latency: {record.latency_ms:.4g} ms ({record.latency_source})",
            f"- energy: {record.energy_mj:.4g} mJ per inference ({record.energy_source})",
            "",
            weights,
            "",
        ]
    )


def export_run(
    run_dir: Path,
    *,
    trials: Sequence[int] = (),
    pareto: bool = False,
    formats: Sequence[str] = DEFAULT_FORMATS,
    out_dir: Path | None = None,
    retrain: RetrainSettings | None = None,
    progress: bool = False,
) -> list[ExportedModel]:
    """Export the given trials (or the Pareto front) of the run in ``run_dir``.

    With ``retrain``, each trial is first retrained at those settings (:mod:`autoprune.retrain`;
    kept results are reused) and the retrained weights are exported, with their accuracies in
    ``card.md`` and ``retrain.json``. ``progress`` shows the retraining's progress bars.
    """
    unknown = sorted(set(formats) - set(EXPORT_FORMATS))
    if unknown:
        raise AutopruneError(
            f"unknown export format {unknown[0]!r}; valid formats: {', '.join(EXPORT_FORMATS)}"
        )
    run = RunDir(run_dir)
    records = {r.number: r for r in run.records()}
    if pareto:
        chosen = pareto_front(list(records.values()))
        if not chosen:
            raise RunDirError(f"run {str(run_dir)!r} has no feasible trained trial to export yet")
    else:
        missing = [n for n in trials if n not in records]
        if missing:
            raise RunDirError(
                f"trial {missing[0]} does not exist in {str(run_dir)!r}; trials: "
                f"0..{max(records, default=-1)}"
            )
        chosen = [records[n] for n in trials]
    retrainer = Retrainer(run, retrain, progress=progress) if retrain is not None else None
    out_dir = out_dir or run.export_dir
    exported = []
    for record in chosen:
        retrained = None
        if retrainer is None:
            model = run.trained_model(record)
        else:
            model, retrained = retrainer.retrain(record)
        folder = out_dir / f"trial-{record.number:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        example = torch.randn(1, *record.candidate["input_shape"])
        files = [folder / "candidate.yaml", folder / "model.pt", folder / "card.md"]
        files[0].write_text(yaml.safe_dump(record.candidate, sort_keys=False))
        torch.save(model.state_dict(), files[1])
        files[2].write_text(_card(record, run_dir, retrained))
        stale = folder / "retrain.json"  # an earlier export's, of other weights
        if retrained is not None:
            files.append(stale)
            stale.write_text(json.dumps(retrained.to_dict(), indent=1) + "\n")
        elif stale.exists():
            stale.unlink()
        if "onnx" in formats:
            files.append(folder / "model.onnx")
            _export_onnx(model, example, files[-1])
        if "torchscript" in formats:
            files.append(folder / "model.torchscript.pt")
            _export_torchscript(model, example, files[-1])
        if "tvm" in formats:
            files.append(
                _export_tvm(
                    model,
                    tuple(record.candidate["input_shape"]),
                    folder,
                    load_profile(run.config().target),
                )
            )
        _logger.info("trial %d exported to %s", record.number, folder)
        exported.append(ExportedModel(trial=record.number, folder=folder, files=tuple(files)))
    return exported
