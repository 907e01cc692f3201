"""The shipped resnet50-imagenet config searches an image folder streamed, not held in memory."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib
import numpy as np
import pytest
from PIL import Image

from autoprune.cli import main
from autoprune.search import RunDir

CLASSES = ("ant", "bee", "cat")


def write_folder(root: Path) -> Path:
    """ImageNet's layout (train/ and val/), a few dozen PNG and JPEG images of several sizes."""
    rng = np.random.default_rng(0)
    for split, n in (("train", 10), ("val", 3)):
        for k, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                h, w = (224, 224) if i % 3 == 0 else (40 + 8 * i, 56)
                pixels = rng.integers(0, 120, size=(h, w, 3))
                pixels[..., k] += 120
                image = Image.fromarray(pixels.astype(np.uint8))
                image.save(folder / (f"{i}.JPEG" if i % 2 else f"{i}.png"))
    return root


@pytest.mark.slow
def test_resnet50_imagenet_config_trains_on_a_streamed_image_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = write_folder(tmp_path / "imagenet")
    # the decoded-image and statistics caches go under the cache home; matplotlib's stays put
    monkeypatch.setenv("MPLCONFIGDIR", matplotlib.get_cachedir())
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    run_dir = tmp_path / "run"
    small = {
        "data.root": root,
        "data.val_samples": 6,
        "data.num_workers": 2,
        "model.num_classes": 3,
        "training.samples": 8,
        "training.epochs": 1,
        "training.batch_size": 4,
        "training.resolution_scale": 0.25,
        "space.weight_bits": "[32]",
        "space.activation_bits": "[32]",
        "space.resolution_scales": "[0.714]",
        "search.trials": 1,
        "search.include_base": "false",  # one candidate, not the unpruned ResNet-50 as well
        "hardware.latency": "estimated",  # no TVM tuning
        "budgets": "[]",  # no estimates of the space's extremes before the run
    }
    overrides = [arg for key, value in small.items() for arg in ("--set", f"{key}={value}")]
    argv = ["search", "--config", "resnet50-imagenet", "--run-dir", str(run_dir), "--quiet"]
    assert main(argv + overrides) == 0

    (record,) = RunDir(run_dir).records()
    assert record.trained and record.accuracy is not None and record.test_accuracy is not None
    assert record.candidate is not None and record.candidate["input_shape"] == [3, 160, 160]
    # streamed: no decoded images were cached (or held), only the sampled statistics
    cached = sorted(p.name for p in (tmp_path / "cache" / "autoprune" / "imagefolder").iterdir())
    assert len(cached) == 1 and cached[0].startswith("imagefolder-stats-")
    data = json.loads((run_dir / "data.json").read_text())
    assert data["name"] == "imagefolder" and data["input_shape"] == [3, 224, 224]
    assert data["class_names"] == list(CLASSES) and data["num_classes"] == 3
    assert len(data["mean"]) == len(data["std"]) == 3 and all(0 < s < 1 for s in data["std"])
