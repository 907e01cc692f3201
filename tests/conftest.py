"""Shared fixtures: a tiny, real search configuration (synthetic data, resnet20, 1 epoch), and a
tiny seeded CNN. (The tuned search on this host is ``tests/test_tuned_host.py``'s.)"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

TINY_CONFIG = {
    "model": {"name": "resnet20", "num_classes": 10, "in_channels": 1},
    "data": {"dataset": "synthetic", "root": None, "val_samples": 200, "input_shape": [1, 28, 28]},
    "space": {
        "width_ratios": [0.25, 0.5, 1.0],
        "depth": True,
        "resolution_scales": [0.75, 1.0],
        "weight_bits": [8, 32],
        "activation_bits": [8, 32],
    },
    "training": {
        "samples": 256,
        "epochs": 1,
        "resolution_scale": 1.0,
        "batch_size": 64,
        "lr": 0.05,
        "momentum": 0.9,
        "weight_decay": 0.0005,
    },
    "search": {
        "controller": "nsga2",
        "trials": 4,
        "timeout_s": None,
        "seed": 0,
        "population_size": 4,
    },
    "target": "jetson",
    "budgets": [],
}


def tiny_cnn(init_seed: int = 0) -> nn.Sequential:
    """A two-convolution CNN for 1x28x28 inputs and 10 classes (3,866 parameters), seeded."""
    torch.manual_seed(init_seed)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(4),
        nn.Flatten(),
        nn.Linear(256, 10),
    )


def write_config(folder: Path, **sections: dict) -> Path:
    """Write the tiny config, with ``sections`` merged in, and return its path."""
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in TINY_CONFIG.items()}
    for key, value in sections.items():
        if isinstance(value, dict):
            data[key] = {**data.get(key, {}), **value}
        else:
            data[key] = value
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def tiny_config(tmp_path: Path) -> Path:
    return write_config(tmp_path)
