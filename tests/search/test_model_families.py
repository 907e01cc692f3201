"""A 2-trial search, end to end, on one model of every torchvision family, on timm models of
three families and on a user module loaded from a file: any CNN is searchable by name.

Tiny on purpose (32x32 inputs, 64 training images, per-layer estimates): this proves the
pipeline (analysis, surgery, low-rank splits, binary and ternary weights, training, costing,
test split, report) on every family; the figures per model are in ``benchmarks/zoo.py``.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from autoprune.cli import main
from autoprune.search import RunDir, pareto_front
from tests.conftest import write_config

FAMILIES = [
    ("resnet34", 32),
    ("resnext50_32x4d", 32),
    ("vgg11_bn", 48),
    ("alexnet", 96),
    ("squeezenet1_1", 32),
    ("densenet121", 48),
    ("googlenet", 32),
    ("mobilenet_v3_small", 32),
    ("mnasnet0_5", 32),
    ("shufflenet_v2_x0_5", 32),
    ("efficientnet_b0", 32),
    ("regnet_x_400mf", 32),
    ("convnext_tiny", 48),
    ("timm:resnet10t", 32),
    ("timm:mobilenetv3_small_050", 32),
    ("timm:regnetx_002", 32),
]


def _search(folder: Path, model: str, size: int) -> Path:
    config = write_config(
        folder,
        model={"name": model, "num_classes": 10, "in_channels": 1},
        data={"input_shape": [1, size, size]},
        space={
            "resolution_scales": [0.75, 1.0],
            "weight_bits": [1, 2, 8, 32],
            "activation_bits": [32],
            "rank_ratios": [0.5, 1.0],
        },
        training={"samples": 64, "batch_size": 32},
        search={"trials": 2},
        hardware={"estimator": "layers"},
    )
    run_dir = folder / "run"
    assert main(["search", "--config", str(config), "--run-dir", str(run_dir), "--quiet"]) == 0
    records = RunDir(run_dir).records()
    assert [r.state for r in records] == ["complete", "complete"], [r.error for r in records]
    assert all(r.trained and r.accuracy is not None and r.macs for r in records)
    assert pareto_front(records)
    return run_dir


@pytest.mark.slow
@pytest.mark.parametrize(("model", "size"), FAMILIES, ids=[m for m, _ in FAMILIES])
def test_two_trial_search_on_every_family(tmp_path: Path, model: str, size: int) -> None:
    run_dir = _search(tmp_path, model, size)
    base, candidate = RunDir(run_dir).records()
    assert base.candidate_hash != candidate.candidate_hash
    assert base.macs >= candidate.macs and base.size_bytes > candidate.size_bytes
    assert candidate.candidate["ranks"], "the sampled candidate splits some layers"
    assert {1, 2} & set(candidate.candidate["weight_bits"].values()), "binary or ternary layers"


@pytest.mark.slow
def test_a_user_module_from_a_file_searches_reports_and_exports(tmp_path: Path, capsys) -> None:
    path = tmp_path / "mynet.py"
    path.write_text(
        textwrap.dedent(
            """
            import torch
            from torch import nn
            import torch.nn.functional as F

            class Block(nn.Module):
                def __init__(self, c):
                    super().__init__()
                    self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
                    self.bn1 = nn.BatchNorm2d(c)
                    self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
                    self.bn2 = nn.BatchNorm2d(c)
                def forward(self, x):
                    y = F.relu(self.bn1(self.conv1(x)))
                    return F.relu(x + self.bn2(self.conv2(y)))

            class Net(nn.Module):
                def __init__(self, num_classes, in_channels):
                    super().__init__()
                    self.stem = nn.Conv2d(in_channels, 32, 3, padding=1)
                    self.blocks = nn.Sequential(Block(32), Block(32), Block(32))
                    self.head = nn.Linear(32, num_classes)
                def forward(self, x):
                    x = self.blocks(F.relu(self.stem(x)))
                    return self.head(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))

            def build(*, num_classes, in_channels):
                return Net(num_classes, in_channels)
            """
        )
    )
    run_dir = _search(tmp_path, f"{path}:build", 28)
    config = (run_dir / "config.yaml").read_text()
    assert f"{path}:build" in config
    capsys.readouterr()
    assert main(["report", str(run_dir), "--format", "json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["pareto"]
    out = tmp_path / "export"
    assert main(["export", str(run_dir), "--pareto", "--format", "onnx", "--out", str(out)]) == 0
    assert list(out.rglob("*.onnx"))
