"""Reports of a run: the Pareto front as a table, JSON and CSV records, and a plot.

Every accuracy is printed with its split and training fidelity; every latency and energy with
its source (``measured`` or ``estimated``). JSON and CSV field names carry units
(``macs``, ``size_bytes``, ``latency_ms``, ``energy_mj``). The JSON also gives each member's
``architecture`` (:func:`architecture_of`); the CSV keeps flat columns only. A run started from your
trained weights (``model.weights``) also shows them, unpruned, as the reference
(:func:`weights_reference`).
"""

from __future__ import annotations

import copy
import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from autoprune._files import write_atomic
from autoprune.evaluators import TrainedBase
from autoprune.search import HypervolumeReference, RunDir, TrialRecord

#: A run's hypervolume: its reference and ``(trial number, hypervolume)`` after each trial.
Hypervolume = tuple[HypervolumeReference, list[tuple[int, float]]]

__all__ = [
    "architecture_of",
    "format_front_table",
    "format_hypervolume",
    "hypervolume_payload",
    "format_reference",
    "front_records",
    "reference_row",
    "summary",
    "weights_reference",
    "write_report_files",
]

_CSV_FIELDS = (
    "trial",
    "accuracy",
    "accuracy_metric",
    "accuracy_split",
    "evaluator",
    "fidelity",
    "test_accuracy",
    "test_fidelity",
    "macs",
    "params",
    "size_bytes",
    "latency_ms",
    "latency_source",
    "latency_expected_error",
    "energy_mj",
    "energy_source",
    "input_shape",
    "candidate_hash",
)


def architecture_of(record: TrialRecord) -> dict[str, Any] | None:
    """The trial's architecture: a copy of its candidate as the trial stored it
    (:meth:`Candidate.to_dict <autoprune.spaces.Candidate.to_dict>`); ``None`` without one.

    Keys: ``model``, ``num_classes``, ``in_channels``; ``input_shape``, the deploy resolution
    ``[C, H, W]`` in pixels; ``channels``, the widths (channel group -> output channels kept);
    ``blocks``, the depths (stage -> blocks kept, the first ones of the stage); ``weight_bits`` and
    ``activation_bits`` (conv/linear layer -> bit-width of its weights, of its input; 32 = float;
    1 = binary weights); ``ranks``, only when some layer is split in two low-rank ones (layer ->
    percent of its narrower side). Counts are absolute; a group, stage or layer that is not
    listed is as in the base model (full width, all blocks, float, whole).
    ``Candidate.from_dict(architecture).hash`` is the trial's ``candidate_hash``.

    Example:
        >>> from autoprune.spaces import Candidate
        >>> record = RunDir("runs/demo").records()[0]  # trial 0: the unpruned base
        >>> architecture_of(record)["blocks"], architecture_of(record)["input_shape"]
        ({'layer1': 3, 'layer2': 3, 'layer3': 3}, [1, 16, 16])
        >>> Candidate.from_dict(architecture_of(record)).hash == record.candidate_hash
        True
    """
    return copy.deepcopy(record.candidate) if record.candidate else None


def front_records(front: Sequence[TrialRecord]) -> list[dict[str, Any]]:
    """Machine-readable Pareto members with units in the field names, and each member's
    ``architecture`` (:func:`architecture_of`), a nested object the CSV leaves out."""
    return [
        {
            "trial": r.number,
            "accuracy": r.accuracy,
            "accuracy_metric": r.metric,
            "accuracy_split": r.accuracy_split,
            "evaluator": r.evaluator,
            "fidelity": r.fidelity,
            "test_accuracy": r.test_accuracy,
            "test_fidelity": r.test_fidelity,
            "macs": r.macs,
            "params": r.params,
            "size_bytes": r.size_bytes,
            "latency_ms": r.latency_ms,
            "latency_source": r.latency_source,
            "latency_expected_error": r.latency_expected_error,
            "energy_mj": r.energy_mj,
            "energy_source": r.energy_source,
            "input_shape": r.resolution,
            "candidate_hash": r.candidate_hash,
            "architecture": architecture_of(r),
        }
        for r in front
    ]


def weights_reference(run_dir: str | Path) -> dict[str, Any] | None:
    """The unpruned base with your ``model.weights`` as the run measured it (``base/eval.json``):
    ``label`` (``'unpruned, your weights (PATH)'``), ``weights``, ``weights_sha256``,
    ``val_accuracy`` and ``test_accuracy`` (fractions, at the deploy input shape), ``macs``,
    ``params``, ``input_shape``; ``None`` for a run without them.

    Example:
        >>> reference = weights_reference("runs/demo")  # a run given model.weights
        >>> reference["input_shape"], 0 <= reference["val_accuracy"] <= 1
        ('1x16x16', True)
    """
    return TrainedBase.reference(RunDir(run_dir).base_dir)


def reference_row(reference: dict[str, Any]) -> dict[str, Any]:
    """:func:`weights_reference` as a CSV row (``trial`` is ``"reference"``)."""
    row: dict[str, Any] = dict.fromkeys(_CSV_FIELDS)
    row.update(
        trial="reference",
        accuracy=reference["val_accuracy"],
        accuracy_metric="accuracy",
        accuracy_split="val",
        evaluator="your weights",
        fidelity=reference["label"],
        test_accuracy=reference.get("test_accuracy"),
        test_fidelity=reference["label"] if reference.get("test_accuracy") is not None else None,
        macs=reference["macs"],
        params=reference["params"],
        input_shape=reference["input_shape"],
    )
    return row


def format_reference(reference: dict[str, Any]) -> str:
    """One line: ``reference: unpruned, your weights (PATH): val acc ..., test acc ..., MACs,
    params, input``."""
    return (
        f"reference: {reference['label']}: val acc {_percent(reference['val_accuracy'])}, "
        f"test acc {_percent(reference.get('test_accuracy'))}, "
        f"{reference['macs'] / 1e6:.2f} MMACs, {reference['params']:,} params, "
        f"input {reference['input_shape']}"
    )


def summary(records: Sequence[TrialRecord]) -> dict[str, int]:
    """Counts of trials by outcome. ``proposals``: candidates proposed and costed;
    ``feasible``: those within every budget as trained; ``repaired``: those of them that were
    shrunk to fit (``feasible - repaired`` were feasible as proposed)."""
    costed = [r for r in records if r.feasible is not None]
    return {
        "trials": len(records),
        "proposals": len(costed),
        "feasible": sum(bool(r.feasible) for r in costed),
        "repaired": sum(bool(r.feasible) and bool(r.repair_steps) for r in costed),
        "trained": sum(r.trained and r.cached_from is None for r in records),
        "cached": sum(r.cached_from is not None for r in records),
        "infeasible": sum(r.state == "complete" and r.feasible is False for r in records),
        "failed": sum(r.state == "failed" for r in records),
        "stopped": sum(r.state == "pruned" for r in records),
    }


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f} %"


def _score(record: TrialRecord) -> str:
    """The validation accuracy as a percentage, or a proxy evaluator's score with its name."""
    if record.metric == "accuracy" or record.accuracy is None:
        return _percent(record.accuracy)
    return f"{record.accuracy:.4g} ({record.metric})"


def _axis_value(record: TrialRecord) -> float:
    """Where a record sits on the plots' vertical axis: accuracy in %, or the proxy's score."""
    assert record.accuracy is not None
    return 100 * record.accuracy if record.metric == "accuracy" else record.accuracy


def hypervolume_payload(hypervolume: Hypervolume) -> dict[str, Any]:
    """JSON-ready hypervolume: reference, final value and the value after each trial."""
    reference, history = hypervolume
    return {
        "reference": reference.to_dict(),
        "final": history[-1][1] if history else 0.0,
        "history": [{"trial": number, "hypervolume": value} for number, value in history],
    }


def format_hypervolume(hypervolume: Hypervolume) -> str:
    """One line: the final hypervolume, after how many trials, and what it is measured against."""
    reference, history = hypervolume
    names = ", ".join(
        f"{'1 - ' if d == 'maximize' else ''}{n}{'' if s == 1.0 else f' / {s:.4g}'}"
        for (n, d), s in zip(reference.objectives, reference.scales, strict=True)
    )
    point = ", ".join(f"{p:g}" for p in reference.point)
    final = history[-1][1] if history else 0.0
    return (
        f"hypervolume: {final:.4f} after {len(history)} trials "
        f"(minimised: {names}; reference point ({point}))"
    )


def format_front_table(
    front: Sequence[TrialRecord],
    records: Sequence[TrialRecord],
    hypervolume: Hypervolume | None = None,
    reference: dict[str, Any] | None = None,
) -> str:
    """The Pareto front as an aligned text table, with trial counts and the hypervolume under it;
    ``reference`` (:func:`weights_reference`): a line for the unpruned base with your weights."""
    header = (
        "trial",
        "val acc",
        "test acc",
        "fidelity",
        "MMACs",
        "params",
        "size kB",
        "latency ms",
        "energy mJ",
        "input",
    )
    rows = [header]
    for r in front:
        rows.append(
            (
                str(r.number),
                _score(r),
                _percent(r.test_accuracy),
                r.fidelity or "-",
                f"{r.macs / 1e6:.2f}",
                f"{r.params:,}",
                f"{r.size_bytes / 1e3:.1f}",
                f"{r.latency_ms:.4g} ({r.latency_label})",
                f"{r.energy_mj:.4g} ({r.energy_source})",
                r.resolution or "-",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(
            cell.rjust(w) if i in (0, 1, 2, 4, 5, 6) else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    counts = summary(records)
    if not front:
        lines.append("(no feasible trained trial yet)")
    if reference is not None:
        lines.append(format_reference(reference))
    lines.append(
        f"Pareto front: {len(front)} of {counts['trials']} trials "
        f"({counts['trained']} trained, {counts['cached']} repeated architectures, "
        f"{counts['infeasible']} over budget and not trained, {counts['failed']} failed"
        f"{', ' + str(counts['stopped']) + ' stopped early' if counts['stopped'] else ''}). "
        f"val acc: validation split at the search fidelity; test acc: test split, same weights."
    )
    if counts["proposals"]:
        as_proposed = counts["feasible"] - counts["repaired"]
        lines.append(
            f"feasible proposals: {counts['feasible']} of {counts['proposals']} "
            f"({100 * counts['feasible'] / counts['proposals']:.0f} %); "
            f"{as_proposed} as proposed, {counts['repaired']} shrunk to fit the budgets"
        )
    if hypervolume is not None:
        lines.append(format_hypervolume(hypervolume))
    return "\n".join(lines)


def _csv_text(rows: list[dict[str, Any]]) -> str:
    """``rows`` as CSV with the flat :data:`_CSV_FIELDS` columns; other keys (``architecture``)
    are left out."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=_CSV_FIELDS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _plot(
    path: Path, front: Sequence[TrialRecord], records: Sequence[TrialRecord], title: str
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    trained = [r for r in records if r.trained and r.state == "complete"]
    infeasible = [r for r in records if r.state == "complete" and r.feasible is False]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), constrained_layout=True)
    for ax, metric, unit in (
        (axes[0], "latency_ms", "latency (ms)"),
        (axes[1], "energy_mj", "energy per inference (mJ)"),
    ):
        ax.scatter(
            [getattr(r, metric) for r in trained],
            [_axis_value(r) for r in trained],
            s=18,
            c="0.6",
            label="trained trial",
        )
        ordered = sorted(front, key=lambda r: getattr(r, metric))
        ax.plot(
            [getattr(r, metric) for r in ordered],
            [_axis_value(r) for r in ordered],
            "o-",
            c="tab:red",
            ms=6,
            label="Pareto front",
        )
        for r in ordered:
            ax.annotate(
                str(r.number),
                (getattr(r, metric), _axis_value(r)),
                textcoords="offset points",
                xytext=(4, 4),
                fontsize=8,
            )
        if infeasible:
            y0 = min([_axis_value(r) for r in trained], default=0.0)
            ax.scatter(
                [getattr(r, metric) for r in infeasible],
                [y0] * len(infeasible),
                marker="x",
                c="tab:blue",
                label="over budget (not trained)",
            )
        source = {
            getattr(r, metric.replace("_ms", "_source").replace("_mj", "_source"))
            for r in trained + infeasible
        } - {None}
        ax.set_xlabel(f"{unit}, {'/'.join(sorted(source)) or 'n/a'}")
        scores = {r.metric for r in trained} - {"accuracy"}
        ax.set_ylabel(
            f"score at initialisation ({', '.join(sorted(scores))})"
            if scores
            else "validation accuracy (%)"
        )
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    _save_png(fig, path)
    plt.close(fig)


def _plot_hypervolume(path: Path, hypervolume: Hypervolume, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    _, history = hypervolume
    fig, ax = plt.subplots(figsize=(6, 4), constrained_layout=True)
    ax.step(range(1, len(history) + 1), [v for _, v in history], where="post", c="tab:red")
    ax.set_xlabel("finished trials")
    ax.set_ylabel("hypervolume of the feasible front")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.set_title(format_hypervolume(hypervolume).split(" (")[0], fontsize=9)
    fig.suptitle(title, fontsize=10)
    _save_png(fig, path)
    plt.close(fig)


def _save_png(fig: Any, path: Path) -> None:
    """Save a figure as PNG, whole or not at all (a killed search leaves the previous one)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    write_atomic(path, buffer.getbuffer())


def write_report_files(
    folder: Path,
    front: Sequence[TrialRecord],
    records: Sequence[TrialRecord],
    *,
    title: str = "",
    hypervolume: Hypervolume | None = None,
) -> list[Path]:
    """Write ``pareto.json``, ``pareto.csv``, ``pareto.png`` and, with a ``hypervolume``,
    ``hypervolume.png`` into ``folder`` (the CLI: the run directory); their paths. A run
    directory started from ``model.weights`` adds their :func:`weights_reference`: under
    ``reference`` in the JSON, and as the CSV's last row, ``trial`` ``reference``."""
    rows = front_records(front)
    reference = weights_reference(folder)
    payload: dict[str, Any] = {"summary": summary(records), "pareto": rows}
    if reference is not None:
        payload["reference"] = reference
    if hypervolume is not None:
        payload["hypervolume"] = hypervolume_payload(hypervolume)
    paths = [folder / "pareto.json", folder / "pareto.csv", folder / "pareto.png"]
    write_atomic(paths[0], json.dumps(payload, indent=2) + "\n")
    write_atomic(paths[1], _csv_text(rows + ([reference_row(reference)] if reference else [])))
    title = title or f"autoprune run {folder.name}"
    _plot(paths[2], front, records, title)
    if hypervolume is not None:
        paths.append(folder / "hypervolume.png")
        _plot_hypervolume(paths[3], hypervolume, title)
    return paths
