"""Every torchvision classification model through autoprune: costs, decisions, a 1-trial search.

Per model of ``torchvision.models.list_models(module=torchvision.models)``:

* **costs**: MACs and parameters counted by ``autoprune.spaces.count_costs`` on the ``meta``
  device at the model's evaluation crop (``weights.transforms().crop_size``), 1000 classes,
  against torchvision's own weight metadata (``meta["_ops"]`` in GMACs, ``meta["num_params"]``);
* **decisions**: the kinds and counts of decisions its search space has at that crop (width,
  depth, wbits), or the one line a refused model (a transformer) gets;
* **search** (``--search``): a 1-trial search through the CLI (the unpruned base at 1x64x64,
  1x96x96 for inception_v3, on the ``synthetic`` data set's 64 training images, per-layer
  estimates), its report, and an ONNX export of trial 0 checked with ``onnx.checker``.

Writes ``benchmarks/results/zoo.json`` after every model, keeping the entries of models not
re-run when the same code wrote them (``benchmarks/_common.py``: other code's are dropped), with
the counts the tracking issue asks for (within 1 % on MACs and params; searchable).

Usage (from the repository root)::

    .venv/bin/python benchmarks/zoo.py                     # costs and decisions, ~1 minute
    .venv/bin/python benchmarks/zoo.py --search            # plus the searches, ~30-60 minutes
    .venv/bin/python benchmarks/zoo.py --search resnet34   # some models only
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import platform
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import onnx
import torch
import torchvision
import yaml
from _common import code_key, code_versions

from autoprune.cli import main as cli
from autoprune.errors import AutopruneError
from autoprune.search import RunDir
from autoprune.spaces import SearchSpace, count_costs, create_model

RESULTS = Path(__file__).resolve().parent / "results" / "zoo.json"

SEARCH_CONFIG: dict[str, Any] = {
    "model": {"num_classes": 10, "in_channels": 1},
    "data": {"dataset": "synthetic", "val_samples": 200, "input_shape": [1, 64, 64]},
    "space": {"resolution_scales": [1.0], "weight_bits": [8, 32], "activation_bits": [32]},
    "training": {"samples": 64, "epochs": 1, "batch_size": 32},
    "search": {"trials": 1, "seed": 0},
    "hardware": {"estimator": "layers"},
    "target": "jetson",
    "budgets": [],
}


def _metadata(name: str) -> tuple[int, float, int]:
    weights = list(torchvision.models.get_model_weights(name))[0]
    crop = weights.transforms().crop_size[0]
    return int(crop), float(weights.meta["_ops"]), int(weights.meta["num_params"])


def _costs(name: str) -> dict[str, Any]:
    crop, gmacs, params = _metadata(name)
    if name.startswith("vit_") and crop != 224:  # torchvision builds these weights' ViT so
        with torch.device("meta"):
            model = torchvision.models.get_model(name, weights=None, image_size=crop)
    else:
        model = create_model(name, num_classes=1000, in_channels=3, device="meta")
    report = count_costs(model, (3, crop, crop))
    return {
        "crop": crop,
        "gmacs": report.macs / 1e9,
        "gmacs_torchvision": gmacs,
        "macs_error": report.macs / 1e9 / gmacs - 1.0,
        "params": report.params,
        "params_torchvision": params,
        "params_error": report.params / params - 1.0,
    }


def _decisions(name: str, crop: int) -> dict[str, Any]:
    try:
        space = SearchSpace(
            model=name,
            num_classes=1000,
            in_channels=3,
            input_shape=(3, crop, crop),
            width_ratios=(0.25, 0.5, 0.75, 1.0),
            depth=True,
            resolution_scales=(0.75, 1.0),
            weight_bits=(8, 32),
            activation_bits=(8, 32),
            channel_multiple=8,
        )
    except AutopruneError as exc:
        return {"refused": str(exc)}
    kinds: dict[str, int] = {}
    for decision in space.decisions:
        kind = decision.name.split("/")[0]
        kinds[kind] = kinds.get(kind, 0) + 1
    return {"decisions": kinds, "stages": [list(s) for s in space.stages]}


# Models whose stem and pooling need a larger input than 64x64 (inception_v3: at least 75x75).
_SEARCH_SIDE = {"inception_v3": 96}


def _search(name: str) -> dict[str, Any]:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        side = _SEARCH_SIDE.get(name, 64)
        config = {
            **SEARCH_CONFIG,
            "model": {**SEARCH_CONFIG["model"], "name": name},
            "data": {**SEARCH_CONFIG["data"], "input_shape": [1, side, side]},
        }
        path = Path(folder) / "config.yaml"
        path.write_text(yaml.safe_dump(config))
        run_dir = Path(folder) / "run"
        quiet = io.StringIO()
        with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
            searched = cli(["search", "--config", str(path), "--run-dir", str(run_dir), "--quiet"])
            reported = searched == 0 and cli(["report", str(run_dir)]) == 0
            out = Path(folder) / "export"
            exported = reported and (
                cli(["export", str(run_dir), "--trial", "0", "--format", "onnx", "--out", str(out)])
                == 0
            )
        onnx_ok = False
        if exported:
            files = list(out.rglob("*.onnx"))
            onnx.checker.check_model(str(files[0]))
            onnx_ok = True
        records = RunDir(run_dir).records() if searched == 0 else []
        return {
            "input": [1, side, side],
            "trained": bool(records and records[0].trained),
            "accuracy": records[0].accuracy if records else None,
            "reported": bool(reported),
            "onnx": onnx_ok,
            "seconds": round(time.perf_counter() - started, 1),
            "error": None if searched == 0 else quiet.getvalue().strip().splitlines()[-1:],
        }


def _summary(models: dict[str, dict[str, Any]]) -> dict[str, Any]:
    costs = [m for m in models.values() if "macs_error" in m]
    within = [m for m in costs if abs(m["macs_error"]) <= 0.01 and abs(m["params_error"]) <= 0.01]
    cnns = [m for m in models.values() if "decisions" in m]
    searched = [m for m in cnns if m.get("search", {}).get("onnx")]
    return {
        "models": len(models),
        "macs_within_1pct": sum(abs(m["macs_error"]) <= 0.01 for m in costs),
        "params_within_1pct": sum(abs(m["params_error"]) <= 0.01 for m in costs),
        "both_within_1pct": len(within),
        "both_within_1pct_fraction": len(within) / len(costs) if costs else None,
        "refused_for_search": sorted(n for n, m in models.items() if "refused" in m),
        "cnns": len(cnns),
        "cnns_searched_reported_exported": len(searched),
        "cnns_searched_of": sum("search" in m for m in cnns),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", help="model names (default: all of torchvision's)")
    parser.add_argument("--search", action="store_true", help="also run the 1-trial searches")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.getLogger("autoprune").setLevel(logging.ERROR)
    torch.set_num_threads(2)
    names = args.models or sorted(torchvision.models.list_models(module=torchvision.models))
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    if results.get("code", {}).get("key") != code_key():  # entries by other code are not kept
        results = {}
    models: dict[str, dict[str, Any]] = results.get("models", {})
    for name in names:
        entry = {**models.get(name, {}), **_costs(name)}
        entry.pop("refused", None)
        entry.pop("decisions", None)
        entry.update(_decisions(name, entry["crop"]))
        if args.search and "decisions" in entry:
            entry["search"] = _search(name)
        models[name] = entry
        print(name, json.dumps({k: v for k, v in entry.items() if k != "stages"}), flush=True)
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "code": code_versions(),
            "host": platform.node(),
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "summary": _summary(models),
            "models": models,
        }
        RESULTS.write_text(json.dumps(payload, indent=1) + "\n")
    print(json.dumps(_summary(models), indent=1))


if __name__ == "__main__":
    main()
