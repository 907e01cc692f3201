"""What a runtime and a deployer need to know about an exported trial: ``model.json`` (machine
readable) and ``card.md`` (the same, for people).

``model.json`` (``format_version`` 1) holds:

* ``input``: tensor name, shape (``"batch"`` first), layout ``NCHW``, dtype ``float32``, and the
  normalisation: ``(x / 255 - mean) / std`` per channel for pixel values ``x`` in 0..255, done by
  the caller, or in the graph when exported with ``--fold-normalisation`` (then the input is the
  pixel values themselves);
* ``output``: tensor name, shape, and meaning (logits: unnormalised class scores);
* ``class_names`` (index order of the logits), ``architecture`` (the candidate: widths, depths,
  input shape, per-layer bit-widths), ``layers`` (per quantized layer, how the integer model
  stores its weights and quantizes its input);
* ``accuracy`` of the exported weights (validation and test, their fidelity, and whether the
  weights are the search's or retrained), ``costs`` on the search's target, ``files`` (format,
  form, batch) and ``notes``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from autoprune.export._formats import INPUT_NAME, OUTPUT_NAME, WrittenFile
from autoprune.export._integer import LayerPrecision
from autoprune.hwprofiles import latency_label
from autoprune.retrain import Retrained
from autoprune.search import TrialRecord

__all__ = ["card_markdown", "model_json"]

FORMAT_VERSION = 1


def _accuracy(record: TrialRecord, retrained: Retrained | None) -> dict[str, Any]:
    if retrained is not None:
        return {
            "weights": "retrained",
            "validation": retrained.val_accuracy,
            "test": retrained.test_accuracy,
            "fidelity": retrained.fidelity,
            "evaluator": retrained.evaluator,
            "seed": retrained.seed,
            "seconds": retrained.seconds,
            "search": {
                "validation": record.accuracy,
                "test": record.test_accuracy,
                "fidelity": record.fidelity,
            },
        }
    return {
        "weights": "search",
        "validation": record.accuracy,
        "test": record.test_accuracy,
        "fidelity": record.test_fidelity or record.fidelity,
        "evaluator": record.evaluator,
    }


def model_json(
    record: TrialRecord,
    *,
    data: dict[str, Any] | None,
    folded: bool,
    target: str,
    export_target: str,
    files: list[WrittenFile],
    layers: list[LayerPrecision],
    notes: list[str],
    retrained: Retrained | None = None,
) -> dict[str, Any]:
    """The ``model.json`` of one exported trial (module doc). ``data`` is the run's
    ``data.json`` (``None`` for runs from before it existed: no normalisation or class names);
    ``target`` the profile the costs refer to (the search's), ``export_target`` the one the
    files were built for."""
    candidate = record.candidate or {}
    channels, height, width = candidate["input_shape"]
    normalisation: dict[str, Any] | None = None
    if data is not None:
        normalisation = {
            "mean": data["mean"],
            "std": data["std"],
            "formula": "(x / 255 - mean) / std per channel, x = pixel values in 0..255",
            "in_graph": folded,
        }
    return {
        "format_version": FORMAT_VERSION,
        "trial": record.number,
        "candidate_hash": record.candidate_hash,
        "base_model": candidate.get("model"),
        "input": {
            "name": INPUT_NAME,
            "shape": ["batch", channels, height, width],
            "layout": "NCHW",
            "dtype": "float32",
            "values": "pixel values in 0..255" if folded else "normalised (see normalisation)",
            "normalisation": normalisation,
        },
        "output": {
            "name": OUTPUT_NAME,
            "shape": ["batch", candidate.get("num_classes")],
            "meaning": "logits: unnormalised class scores, in class_names order; softmax gives "
            "probabilities",
        },
        "class_names": None if data is None else data["class_names"],
        "architecture": candidate,
        "layers": [layer.to_dict() for layer in layers],
        "accuracy": _accuracy(record, retrained),
        "costs": {
            "target": target,
            "macs": record.macs,
            "params": record.params,
            "size_bytes_at_bit_widths": record.size_bytes,
            "latency_ms": record.latency_ms,
            "latency_source": record.latency_source,
            "latency_expected_error": record.latency_expected_error,
            "energy_mj": record.energy_mj,
            "energy_source": record.energy_source,
        },
        "export_target": export_target,
        "files": [f.to_dict() for f in files],
        "notes": notes,
    }


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f} %"


def card_markdown(info: dict[str, Any], run_dir: Path) -> str:
    """``card.md``: ``info`` (a :func:`model_json` payload) for people."""
    accuracy, costs, source, output = info["accuracy"], info["costs"], info["input"], info["output"]
    if accuracy["weights"] == "retrained":
        search = accuracy["search"]
        figures = [
            f"- test accuracy: {_pct(accuracy['test'])} (retrained)",
            f"- validation accuracy: {_pct(accuracy['validation'])} (retrained)",
            f"- retrained: {accuracy['evaluator']} at {accuracy['fidelity']}, seed "
            f"{accuracy['seed']}, in {accuracy['seconds']:.0f} s",
            f"- in the search: validation {_pct(search['validation'])}, test "
            f"{_pct(search['test'])} ({search['fidelity']})",
        ]
        trained = "Weights are the retrained ones (retrain.json holds the figures above)."
    else:
        figures = [
            f"- validation accuracy: {_pct(accuracy['validation'])}; test accuracy: "
            f"{_pct(accuracy['test'])} ({accuracy['fidelity']})"
        ]
        trained = (
            "Weights were trained from scratch at the fidelity above; retrain at full fidelity "
            "(`autoprune export --retrain`) before deployment figures are quoted as final."
        )
    normalisation = source["normalisation"]
    if normalisation is None:
        feed = "normalisation: not recorded by this run (it predates data.json)"
    elif normalisation["in_graph"]:
        feed = "pixel values in 0..255 (the normalisation is folded into the graph)"
    else:
        feed = (
            f"normalised pixels, (x / 255 - mean) / std with mean {normalisation['mean']}, "
            f"std {normalisation['std']}"
        )
    formats = [
        f"- `{f['file']}`: {f['format']}, {f['form']}, batch {f['batch']}" for f in info["files"]
    ]
    storage: dict[str, int] = {}
    for layer in info["layers"]:
        key = f"weights {layer['weights']}, inputs {layer['activations']}"
        storage[key] = storage.get(key, 0) + 1
    precision = [f"- {count} layer(s): {key}" for key, count in sorted(storage.items())]
    lines = [
        f"# autoprune trial {info['trial']} ({info['candidate_hash']})",
        "",
        f"- run: `{run_dir}`",
        f"- base model: {info['base_model']}; input `{source['name']}` "
        f"{source['shape']} ({source['layout']}, {source['dtype']}): {feed}",
        f"- output `{output['name']}` {output['shape']}: {output['meaning']}",
        *figures,
        f'- MACs: {costs["macs"]:,} ("FLOPs" = multiply-accumulates)',
        f"- parameters: {costs['params']:,}; size at its bit-widths: "
        f"{costs['size_bytes_at_bit_widths']:,} bytes",
        f"- on {costs['target']}: latency {costs['latency_ms']:.4g} ms "
        f"({latency_label(costs['latency_source'], costs['latency_expected_error'])}), "
        f"energy {costs['energy_mj']:.4g} mJ per inference "
        f"({costs['energy_source']})",
        "",
        trained,
        "",
        f"## Files (built for {info['export_target']})",
        "",
        *formats,
        "",
    ]
    if precision:
        lines += ["## Precision of the integer model (model.onnx)", "", *precision, ""]
    if info["notes"]:
        lines += ["## Notes", "", *[f"- {note}" for note in info["notes"]], ""]
    lines += ["`model.json` holds all of this for programs (class names included).", ""]
    return "\n".join(lines)
