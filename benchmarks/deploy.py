"""Integer (QDQ) ONNX against float ONNX in onnxruntime: size, latency and test accuracy.

For a run directory (default: the embedded default search, ``autoprune search --target jetson
--budget 2gflops``, run into a fresh folder), exports the Pareto front with ``autoprune export
RUN --pareto --format onnx`` and, for each quantized member (one whose folder holds a
``model.float.onnx``, the fake-quantized graph in float, beside ``model.onnx``, the integer QDQ
model), measures in onnxruntime on this machine's CPU (default session options):

- **size**: bytes of ``model.float.onnx`` and ``model.onnx`` and their ratio; next to them the
  trial's size at its bit-widths (``record.size_bytes``, ``model.json``'s
  ``costs.size_bytes_at_bit_widths``) and the float size its parameters imply (``params x 4``):
  their ratio is the most the member's bit-widths allow (a front mixing 8-, 16- and 32-bit layers
  cannot shrink 4x); where each file's bytes go (initializers by dtype, the exporter's per-node
  metadata, ``value_info``), the ratio without that metadata, and whether ``model.onnx`` stores
  each layer's weights as ``model.json``'s ``layers`` say (int8 bytes, fp16 bytes);
- **latency**: float against QDQ at batch 1 and batch 8: after a warm-up, the two sessions are
  run in turn (so that a change in the host's load hits both), the median (and 10th / 90th
  percentiles) of ``--repeats`` runs each, in ms, with ``time.perf_counter`` around
  ``session.run``;
- **top-1** on the test split (Fashion-MNIST: the published 10,000 images) of the float ONNX and
  of the integer ONNX, the images loaded by autoprune as the run loads them and normalised as
  training did (``autoprune.evaluators.prepare_batch``: ``(x / 255 - mean) / std``, resized to
  the member's input shape), and, as a sanity check, the PyTorch accuracy of the same weights
  (``RunDir.trained_model`` through ``evaluate_accuracy``); the difference integer minus float
  in points, how often the two agree on the class, and the largest logit difference;
- what onnxruntime makes of each graph: the operators of the graph it optimises (a
  ``DequantizeLinear -> Conv`` left as such runs a float kernel; ``QLinearConv`` /
  ``ConvInteger`` / ``MatMulInteger`` are integer kernels) and the warnings it logs.

Per member it says whether the issue's goal holds: "the int8 ONNX of a member is at least 2.5x
smaller than its float ONNX and no more than 0.5 points less accurate". ``--space-bits 8`` runs
a second search with every layer at 8 bits (``--set space.weight_bits=[8] --set
space.activation_bits=[8]``) and measures its front the same way: the int8 path on its own.

A new search whose ``search.timeout_s`` (600 s) stops it short of ``search.trials`` (a busy
host) is invoked again, which continues it (``--search-invocations``, default 3 in all).

The host's load average (1, 5, 15 minutes) is recorded before and after each member: latency
figures taken while other processes ran are to be read with that caveat (their ratios, taken
in turn, less so). Writes ``benchmarks/results/deploy.json`` (with the host, the versions of
torch, onnx and onnxruntime, onnxruntime's providers and thread settings, and the exact
commands with their wall times) and ``benchmarks/results/deploy.md`` (the table printed).

Usage (from the repository root)::

    .venv/bin/python benchmarks/deploy.py                # default search + export, ~6 min idle
    .venv/bin/python benchmarks/deploy.py --space-bits 8 # and an all-8-bit search, ~12 min idle
    .venv/bin/python benchmarks/deploy.py --run-dir runs/X      # an existing run (exported again)
    .venv/bin/python benchmarks/deploy.py --space-bits 8 --run-dir runs/X --bits-run-dir runs/Y
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from _common import code_versions, cpu_name, keyed
from onnx import numpy_helper

from autoprune.evaluators import evaluate_accuracy
from autoprune.evaluators._evaluate import normaliser, prepare_batch, split_batches
from autoprune.search import RunDir, assemble

RESULTS = Path(__file__).resolve().parent / "results" / "deploy.json"
SEARCH = ["search", "--target", "jetson", "--budget", "2gflops"]
#: the issue's goal: the int8 ONNX at least this much smaller than the float ONNX ...
GOAL_RATIO = 2.5
#: ... and at most this many top-1 points less accurate
GOAL_POINTS = 0.5
BATCHES = (1, 8)
INTEGER_OPS = {
    "QLinearConv",
    "QLinearMatMul",
    "ConvInteger",
    "MatMulInteger",
    "MatMulIntegerToFloat",
    "DynamicQuantizeMatMul",
    "QGemm",
}


def _autoprune() -> str:
    beside = Path(sys.executable).with_name("autoprune")
    return str(beside) if beside.exists() else (shutil.which("autoprune") or "autoprune")


def _autoprune_commit() -> dict[str, Any]:
    """The commit of the autoprune that exported (its package folder), and whether the folder
    differed from it."""
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True)
        return done.stdout.strip()

    return {
        "commit": git("rev-parse", "HEAD"),
        "dirty": bool(git("status", "--porcelain", "autoprune")),
    }


def _load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def _command(args: list[str], log: list[dict[str, Any]], *, ok: tuple[int, ...] = (0,)) -> None:
    """Run ``autoprune ARGS``, recording the command, its exit status and wall time."""
    shown = " ".join(["autoprune", *args])
    print(f"$ {shown}", flush=True)
    load = _load()
    started = time.perf_counter()
    done = subprocess.run([_autoprune(), *args], capture_output=True, text=True)
    seconds = time.perf_counter() - started
    log.append(
        {
            "command": shown,
            "exit_status": done.returncode,
            "wall_seconds": round(seconds, 1),
            "load_average_before": load,
            "load_average_after": _load(),
            "stderr": done.stderr.strip().splitlines()[-20:],
        }
    )
    print(f"  exit {done.returncode} in {seconds:.0f} s", flush=True)
    if done.returncode not in ok:
        sys.stderr.write(done.stdout + done.stderr)
        raise SystemExit(f"`{shown}` failed with exit status {done.returncode}")


@contextlib.contextmanager
def _captured_stderr(lines: list[str]) -> Iterator[None]:
    """What onnxruntime's C++ logger writes to file descriptor 2 meanwhile, into ``lines``."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            lines += [x for x in sink.read().decode(errors="replace").splitlines() if x.strip()]


def _session(path: Path, warnings: list[str]) -> ort.InferenceSession:
    with _captured_stderr(warnings):
        return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _optimised_ops(path: Path, folder: Path) -> dict[str, int]:
    """Operator counts of the graph onnxruntime runs (default optimisation level)."""
    options = ort.SessionOptions()
    target = folder / f"{path.stem}.optimised.onnx"
    options.optimized_model_filepath = str(target)
    with _captured_stderr([]):
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return dict(sorted(Counter(n.op_type for n in onnx.load(str(target)).graph.node).items()))


_STORAGE_BYTES = {"int8": 1, "uint8": 1, "int16": 2, "uint16": 2, "fp16": 2, "fp32": 4}
_DTYPE_STORAGE = {"int8": "int8", "uint8": "uint8", "int16": "int16", "float16": "fp16"}


def _file_breakdown(path: Path) -> dict[str, Any]:
    """Where an ONNX file's bytes go: initializers by dtype, the exporter's per-node metadata
    (``pkg.torch.onnx.stack_trace`` and the like), ``value_info``; and its size without these
    two (what a deployer could strip with ``onnx`` without changing the computation)."""
    proto = onnx.load(str(path))
    by_dtype: Counter[str] = Counter()
    for tensor in proto.graph.initializer:
        array = numpy_helper.to_array(tensor)
        by_dtype[str(array.dtype)] += int(array.nbytes)
    metadata = sum(len(p.SerializeToString()) for n in proto.graph.node for p in n.metadata_props)
    value_info = sum(len(v.SerializeToString()) for v in proto.graph.value_info)
    for node in proto.graph.node:
        del node.metadata_props[:]
    del proto.graph.value_info[:]
    return {
        "bytes": path.stat().st_size,
        "initializer_bytes": sum(by_dtype.values()),
        "initializer_bytes_by_dtype": dict(sorted(by_dtype.items())),
        "node_metadata_bytes": metadata,
        "value_info_bytes": value_info,
        "bytes_without_node_metadata_and_value_info": len(proto.SerializeToString()),
    }


def _expected_storage(model: torch.nn.Module, layers: list[dict[str, Any]]) -> dict[str, int]:
    """Bytes of the quantized layers' weights at the storage ``model.json`` names per layer."""
    modules = dict(model.named_modules())
    out: Counter[str] = Counter()
    for layer in layers:
        numel = modules[layer["layer"]].weight.numel()
        out[layer["weights"]] += numel * _STORAGE_BYTES[layer["weights"]]
    return dict(sorted(out.items()))


def _graph_ops(path: Path) -> dict[str, int]:
    return dict(sorted(Counter(n.op_type for n in onnx.load(str(path)).graph.node).items()))


def _predict(session: ort.InferenceSession, batches: list[np.ndarray]) -> np.ndarray:
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: x})[0] for x in batches])


def _percentile(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 4)


def _latency(
    sessions: dict[str, ort.InferenceSession], shape: list[int], *, repeats: int, warmup: int
) -> dict[str, Any]:
    """Per batch size: each session's run time, the sessions taken in turn."""
    out: dict[str, Any] = {}
    rng = np.random.default_rng(0)
    for batch in BATCHES:
        x = rng.standard_normal((batch, *shape)).astype(np.float32)
        feeds = {k: {s.get_inputs()[0].name: x} for k, s in sessions.items()}
        for _ in range(warmup):
            for key, session in sessions.items():
                session.run(None, feeds[key])
        times: dict[str, list[float]] = {key: [] for key in sessions}
        order = list(sessions)
        for i in range(repeats):
            for key in order if i % 2 == 0 else order[::-1]:
                start = time.perf_counter()
                sessions[key].run(None, feeds[key])
                times[key].append(1000 * (time.perf_counter() - start))
        row: dict[str, Any] = {}
        for key, values in times.items():
            row[key] = {
                "median_ms": _percentile(values, 50),
                "p10_ms": _percentile(values, 10),
                "p90_ms": _percentile(values, 90),
                "min_ms": round(min(values), 4),
            }
        row["qdq_over_float"] = round(row["qdq"]["median_ms"] / row["float"]["median_ms"], 3)
        out[str(batch)] = row
    return out


def _storage(model: torch.nn.Module, layers: list[dict[str, Any]]) -> dict[str, Any]:
    """How many conv / linear layers store their weights and quantize their inputs how
    (``model.json`` lists the quantized layers; the rest are float)."""
    listed = {x["layer"] for x in layers}
    unlisted = [
        name
        for name, m in model.named_modules()
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) and name not in listed
    ]
    pairs = Counter(f"w {x['weights']} / in {x['activations']}" for x in layers)
    weights = Counter(x["weights"] for x in layers)
    inputs = Counter(x["activations"] for x in layers)
    if unlisted:
        pairs["w fp32 / in fp32 (not quantized)"] += len(unlisted)
        weights["fp32"] += len(unlisted)
        inputs["fp32"] += len(unlisted)
    return {
        "layers": len(layers) + len(unlisted),
        "weights": dict(sorted(weights.items())),
        "inputs": dict(sorted(inputs.items())),
        "pairs": dict(sorted(pairs.items())),
    }


def measure_member(
    run: RunDir,
    record: Any,
    folder: Path,
    data: Any,
    test: tuple[dict[tuple[int, int], list[np.ndarray]], np.ndarray],
    *,
    repeats: int,
    warmup: int,
    scratch: Path,
) -> dict[str, Any]:
    """Size, latency and accuracy of one quantized member's two ONNX files."""
    info = json.loads((folder / "model.json").read_text())
    shape = [int(s) for s in record.candidate["input_shape"]]
    float_path, qdq_path = folder / "model.float.onnx", folder / "model.onnx"
    load_before = _load()
    float_bytes, qdq_bytes = float_path.stat().st_size, qdq_path.stat().st_size
    params, at_bits = int(record.params), int(record.size_bytes)
    size = {
        "float_onnx_bytes": float_bytes,
        "qdq_onnx_bytes": qdq_bytes,
        "ratio_float_over_qdq": round(float_bytes / qdq_bytes, 3),
        "params": params,
        "float_bytes_params_x4": 4 * params,
        "size_bytes_at_bit_widths": at_bits,
        "model_json_size_bytes_at_bit_widths": info["costs"]["size_bytes_at_bit_widths"],
        "best_ratio_bit_widths_allow": round(4 * params / at_bits, 3),
    }
    warnings: dict[str, list[str]] = {"float": [], "qdq": []}
    sessions = {
        "float": _session(float_path, warnings["float"]),
        "qdq": _session(qdq_path, warnings["qdq"]),
    }
    # accuracy: the same normalised images through both graphs and through PyTorch
    images, labels = test
    hw = (shape[1], shape[2])
    with _captured_stderr(warnings["float"]):
        float_logits = _predict(sessions["float"], images[hw])
    with _captured_stderr(warnings["qdq"]):
        qdq_logits = _predict(sessions["qdq"], images[hw])
    model = run.trained_model(record)
    torch_accuracy = evaluate_accuracy(
        model, data, split="test", input_shape=tuple(shape), resolution_scale=1.0
    )
    with torch.no_grad():
        torch_logits = np.concatenate([model(torch.from_numpy(x)).numpy() for x in images[hw]])
    float_pred, qdq_pred = float_logits.argmax(1), qdq_logits.argmax(1)
    float_acc = float((float_pred == labels).mean())
    qdq_acc = float((qdq_pred == labels).mean())
    points = round(100 * (qdq_acc - float_acc), 2)
    accuracy = {
        "split": "test",
        "images": int(labels.shape[0]),
        "float_onnx_top1": float_acc,
        "qdq_onnx_top1": qdq_acc,
        "qdq_minus_float_points": points,
        "pytorch_top1": torch_accuracy,
        "pytorch_top1_same_batches": float((torch_logits.argmax(1) == labels).mean()),
        "float_onnx_minus_pytorch_points": round(100 * (float_acc - torch_accuracy), 2),
        "search_test_accuracy": record.test_accuracy,
        "search_test_fidelity": record.test_fidelity,
        "model_json_test_accuracy": info["accuracy"]["test"],
        "qdq_agrees_with_float": float((float_pred == qdq_pred).mean()),
        "max_abs_logit_difference_qdq_float": float(np.abs(qdq_logits - float_logits).max()),
        "max_abs_logit_difference_float_pytorch": float(np.abs(float_logits - torch_logits).max()),
    }
    files = {"float": _file_breakdown(float_path), "qdq": _file_breakdown(qdq_path)}
    expected = _expected_storage(model, info["layers"])
    found = files["qdq"]["initializer_bytes_by_dtype"]
    stored_as_named = {
        kind: found.get(dtype, 0) >= expected.get(kind, 0)
        for dtype, kind in _DTYPE_STORAGE.items()
        if kind in expected
    }
    # fp16 weights not found as float16 are float32 (the exporter folded their cast): 2 bytes
    # per weight more than model.json says, as many bytes as are missing at float16
    fp16_excess = max(0, expected.get("fp16", 0) - found.get("float16", 0))
    stripped = {k: f["bytes_without_node_metadata_and_value_info"] for k, f in files.items()}
    size["files"] = files
    size["qdq_weight_bytes_model_json_implies"] = expected
    size["qdq_weights_stored_as_model_json_says"] = stored_as_named
    size["ratio_without_node_metadata_and_value_info"] = round(
        stripped["float"] / stripped["qdq"], 3
    )
    size["fp16_weight_bytes_stored_as_float32_instead"] = 2 * fp16_excess
    size["ratio_projected_without_metadata_and_fp16_weights_as_fp16"] = round(
        stripped["float"] / (stripped["qdq"] - fp16_excess), 3
    )
    latency = _latency(sessions, shape, repeats=repeats, warmup=warmup)
    optimised = {
        "float": _optimised_ops(float_path, scratch),
        "qdq": _optimised_ops(qdq_path, scratch),
    }
    ratio_ok = size["ratio_float_over_qdq"] >= GOAL_RATIO
    accuracy_ok = points >= -GOAL_POINTS
    return {
        "trial": record.number,
        "folder": str(folder),
        "input_shape": shape,
        "candidate_hash": record.candidate_hash,
        "macs": record.macs,
        "weight_bits": record.candidate.get("weight_bits"),
        "activation_bits": record.candidate.get("activation_bits"),
        "layer_storage": _storage(model, info["layers"]),
        "size": size,
        "accuracy": accuracy,
        "latency": latency,
        "onnx_ops": {"float": _graph_ops(float_path), "qdq": _graph_ops(qdq_path)},
        "onnxruntime_optimised_ops": optimised,
        "onnxruntime_integer_kernels_in_qdq": {
            op: n for op, n in optimised["qdq"].items() if op in INTEGER_OPS
        },
        "onnxruntime_integer_layers_of": sum(
            n for op, n in _graph_ops(qdq_path).items() if op in ("Conv", "Gemm", "MatMul")
        ),
        "onnxruntime_warnings": {k: sorted(set(v)) for k, v in warnings.items()},
        "goal": {
            "ratio_at_least_2_5": ratio_ok,
            "at_most_0_5_points_less_accurate": accuracy_ok,
            "holds": ratio_ok and accuracy_ok,
            "ratio_attainable_at_its_bit_widths": size["best_ratio_bit_widths_allow"] >= GOAL_RATIO,
        },
        "load_average_before": load_before,
        "load_average_after": _load(),
    }


def _test_batches(
    data: Any, shapes: set[tuple[int, int]], batch: int = 500
) -> tuple[dict[tuple[int, int], list[np.ndarray]], np.ndarray]:
    """The test split, normalised as training does, at each input resolution: float32 batches."""
    mean, std = normaliser(data, torch.device("cpu"))
    by_hw: dict[tuple[int, int], list[np.ndarray]] = {hw: [] for hw in shapes}
    labels = []
    for images, target in split_batches(data.test, batch):
        labels.append(target.numpy())
        for hw in shapes:
            by_hw[hw].append(np.ascontiguousarray(prepare_batch(images, mean, std, hw).numpy()))
    return by_hw, np.concatenate(labels)


def measure_run(
    name: str, run_dir: Path, commands: list[dict[str, Any]], args: argparse.Namespace
) -> dict[str, Any]:
    """Export ``run_dir``'s front as ONNX and measure every quantized member."""
    out = run_dir / "export-deploy-benchmark"
    _command(
        ["export", str(run_dir), "--pareto", "--format", "onnx", "--out", str(out), "--quiet"],
        commands,
        ok=(0, 3),  # 3: some (trial, format) pairs skipped; recorded
    )
    run = RunDir(run_dir)
    config = run.config()
    records = {r.number: r for r in run.records()}
    data = assemble(config).load_data()
    data_json = json.loads(run.data_file.read_text())
    folders = sorted(p for p in out.glob("trial-*") if p.is_dir() and p.name[6:].isdigit())
    members = [(records[int(p.name[6:])], p) for p in folders]
    quantized = [(r, p) for r, p in members if (p / "model.float.onnx").exists()]
    shapes = {
        (int(r.candidate["input_shape"][1]), int(r.candidate["input_shape"][2]))
        for r, _ in quantized
    }
    test = _test_batches(data, shapes)
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        for record, folder in quantized:
            print(f"{name}: trial {record.number}", flush=True)
            results.append(
                measure_member(
                    run,
                    record,
                    folder,
                    data,
                    test,
                    repeats=args.repeats,
                    warmup=args.warmup,
                    scratch=Path(scratch),
                )
            )
    return {
        "name": name,
        "run_dir": str(run_dir),
        "export_dir": str(out),
        "space": {
            "weight_bits": list(config.space.weight_bits),
            "activation_bits": list(config.space.activation_bits),
            "resolution_scales": list(config.space.resolution_scales),
        },
        "training": {
            "samples": config.training.samples,
            "epochs": config.training.epochs,
            "resolution_scale": config.training.resolution_scale,
        },
        "dataset": data.name,
        "test_images": len(data.test),
        "normalisation": {"mean": list(data.mean), "std": list(data.std)},
        "normalisation_matches_data_json": (
            list(data.mean) == data_json["mean"] and list(data.std) == data_json["std"]
        ),
        "trials": len(records),
        "trials_reusing_an_earlier_training": {
            str(r.number): r.cached_from for r in records.values() if r.cached_from is not None
        },
        "front": [
            {
                "trial": r.number,
                "quantized": (p / "model.float.onnx").exists(),
                "accuracy_val": r.accuracy,
                "accuracy_test": r.test_accuracy,
                "macs": r.macs,
                "size_bytes_at_bit_widths": r.size_bytes,
                "latency_ms_on_target": r.latency_ms,
            }
            for r, p in members
        ],
        "members": results,
    }


def _finished(run_dir: Path) -> tuple[int, int]:
    """Trials of the run that count toward ``search.trials``, and ``search.trials``."""
    run = RunDir(run_dir)
    study = run.load_study()
    return (0 if study is None else run.finished(study)), run.config().search.trials


def _search(
    run_dir: Path, extra: list[str], commands: list[dict[str, Any]], invocations: int
) -> dict[str, Any]:
    """The search, invoked again (it continues the study) while ``search.timeout_s`` stopped it
    short of ``search.trials``, up to ``invocations`` times in all."""
    for _ in range(invocations):
        _command([*SEARCH, "--run-dir", str(run_dir), *extra, "--quiet"], commands)
        done, wanted = _finished(run_dir)
        if done >= wanted:
            break
        print(f"  {done} of {wanted} trials within search.timeout_s: continuing", flush=True)
    return {"trials_finished": done, "trials_wanted": wanted}


def _mix(counts: dict[str, int]) -> str:
    return " ".join(f"{n} {k}" for k, n in sorted(counts.items(), key=lambda kv: -kv[1]))


def table(runs: list[dict[str, Any]]) -> str:
    """One row per quantized member: sizes, accuracies, latencies (medians) and the goal."""
    head = (
        "| run | trial | input | weights (layers) | float KB | QDQ KB | ratio | ratio w/o "
        "metadata | bit-widths allow | float top-1 | QDQ top-1 | QDQ - float pts | torch top-1 | "
        "int kernels | b1 float / QDQ ms | b8 float / QDQ ms | goal (>= 2.5x, >= -0.5 pts) |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for run in runs:
        for m in run["members"]:
            s, a, lat, g = m["size"], m["accuracy"], m["latency"], m["goal"]
            failed = [
                x
                for x, ok in (
                    ("size", g["ratio_at_least_2_5"]),
                    ("accuracy", g["at_most_0_5_points_less_accurate"]),
                )
                if not ok
            ]
            verdict = "holds" if g["holds"] else "fails: " + ", ".join(failed)
            b1, b8 = lat["1"], lat["8"]
            lines.append(
                f"| {run['name']} | {m['trial']} | {'x'.join(map(str, m['input_shape']))} | "
                f"{_mix(m['layer_storage']['weights'])} | {s['float_onnx_bytes'] / 1e3:.1f} | "
                f"{s['qdq_onnx_bytes'] / 1e3:.1f} | {s['ratio_float_over_qdq']:.2f} | "
                f"{s['ratio_without_node_metadata_and_value_info']:.2f} | "
                f"{s['best_ratio_bit_widths_allow']:.2f} | "
                f"{100 * a['float_onnx_top1']:.2f} | {100 * a['qdq_onnx_top1']:.2f} | "
                f"{a['qdq_minus_float_points']:+.2f} | {100 * a['pytorch_top1']:.2f} | "
                f"{sum(m['onnxruntime_integer_kernels_in_qdq'].values())} of "
                f"{m['onnxruntime_integer_layers_of']} | "
                f"{b1['float']['median_ms']:.3f} / {b1['qdq']['median_ms']:.3f} | "
                f"{b8['float']['median_ms']:.3f} / {b8['qdq']['median_ms']:.3f} | {verdict} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, help="an existing run (default: search anew)")
    parser.add_argument(
        "--space-bits", type=int, help="also search with every layer at these bits, e.g. 8"
    )
    parser.add_argument("--bits-run-dir", type=Path, help="an existing run for --space-bits")
    parser.add_argument(
        "--work",
        type=Path,
        help="where new runs go, under a folder named by the code's key: a run that other code "
        "made is never continued (default: a fresh tmp dir)",
    )
    parser.add_argument(
        "--search-invocations",
        type=int,
        default=3,
        help="run a new search's command up to this many times while its search.timeout_s "
        "(600 s) stops it short of search.trials (a busy host)",
    )
    parser.add_argument("--repeats", type=int, default=200, help="timed runs per session")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    started = time.perf_counter()
    load_start = _load()
    work = keyed(args.work) if args.work else Path(tempfile.mkdtemp(prefix="autoprune-deploy-"))
    commands: list[dict[str, Any]] = []
    plan = [("default", args.run_dir, [])]
    if args.space_bits is not None:
        bits = f"[{args.space_bits}]"
        extra = ["--set", f"space.weight_bits={bits}", "--set", f"space.activation_bits={bits}"]
        plan.append((f"all-{args.space_bits}-bit", args.bits_run_dir, extra))
    runs = []
    for name, given, extra in plan:
        run_dir = given
        searched = None
        if run_dir is None:
            run_dir = work / name
            searched = _search(run_dir, extra, commands, args.search_invocations)
        runs.append({**measure_run(name, run_dir, commands, args), "search": searched})
    members = [m for r in runs for m in r["members"]]
    out = {
        "benchmark": "deploy",
        "goal": f"the int8 ONNX of a member is at least {GOAL_RATIO}x smaller than its float "
        f"ONNX and no more than {GOAL_POINTS} points less accurate",
        "host": platform.node(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "autoprune": _autoprune_commit(),
        "code": code_versions(),
        "onnx": onnx.__version__,
        "onnxruntime": ort.__version__,
        "onnxruntime_providers_available": ort.get_available_providers(),
        "onnxruntime_provider_used": "CPUExecutionProvider",
        "onnxruntime_session_options": "defaults (intra_op_num_threads 0: onnxruntime's "
        f"default, one thread per physical core = {_physical_cores()} here; "
        "graph_optimization_level ORT_ENABLE_ALL)",
        "onnxruntime_intra_op_num_threads": ort.SessionOptions().intra_op_num_threads,
        "torch_threads": torch.get_num_threads(),
        "latency_method": f"per batch size ({', '.join(map(str, BATCHES))}), a fixed random "
        f"float32 input; {args.warmup} warm-up runs of each session, then {args.repeats} timed "
        "runs of each, float and QDQ in turn (the order alternating), time.perf_counter around "
        "InferenceSession.run; median, 10th / 90th percentile and min in ms",
        "accuracy_method": "test split loaded by autoprune.search.assemble(run config)."
        "load_data(), batches of 500 through autoprune.evaluators.prepare_batch (x/255, "
        "(x - mean) / std with the training split's statistics, antialiased bilinear resize to "
        "the member's input shape), argmax of the logits; PyTorch: RunDir.trained_model(record) "
        "through evaluate_accuracy at the same shape",
        "load_average_start": load_start,
        "load_average_end": _load(),
        "busy_note": "load averages are os.getloadavg() (1, 5, 15 min) on a "
        f"{os.cpu_count()}-CPU host; above ~{os.cpu_count()} other processes shared the CPUs "
        "and absolute latencies are inflated (the float/QDQ ratios, measured in turn, less so)",
        "work_dir": str(work),
        "commands": commands,
        "wall_seconds": round(time.perf_counter() - started, 1),
        "summary": {
            "quantized_members": len(members),
            "goal_holds": [
                f"{r['name']}/{m['trial']}"
                for r in runs
                for m in r["members"]
                if m["goal"]["holds"]
            ],
            "ratio_holds": sum(m["goal"]["ratio_at_least_2_5"] for m in members),
            "accuracy_holds": sum(m["goal"]["at_most_0_5_points_less_accurate"] for m in members),
            "members_with_integer_kernels": sum(
                bool(m["onnxruntime_integer_kernels_in_qdq"]) for m in members
            ),
            "qdq_slower_than_float_at_batch_1": sum(
                m["latency"]["1"]["qdq_over_float"] > 1 for m in members
            ),
            "qdq_slower_than_float_at_batch_8": sum(
                m["latency"]["8"]["qdq_over_float"] > 1 for m in members
            ),
        },
        "runs": runs,
    }
    text = table(runs)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(
        f"# {__doc__.splitlines()[0]}\n\nonnxruntime {ort.__version__} (CPU), "
        f"{cpu_name()}, load average {load_start} -> {out['load_average_end']}; "
        f"`{args.out.name}` holds every figure.\n\n{text}\n"
    )
    print(text)
    print(json.dumps(out["summary"], indent=1))
    print(f"wrote {args.out} in {out['wall_seconds']:.0f} s")


def _physical_cores() -> int | None:
    try:
        import psutil

        return psutil.cpu_count(logical=False)
    except ImportError:
        return None


if __name__ == "__main__":
    main()
