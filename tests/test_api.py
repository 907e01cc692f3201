"""The Python API: the README's example runs as it stands, on the CLI's code path."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

import autoprune
from autoprune.cli import main
from autoprune.errors import ConfigError

README = Path(__file__).resolve().parents[1] / "README.md"


def _readme_example() -> str:
    section = README.read_text().split("## Python API", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, flags=re.S)
    assert match, "the README's Python API section has a python block"
    return match.group(1)


@pytest.mark.slow
def test_readme_example_runs_and_the_cli_reads_its_run(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    exec(compile(_readme_example(), "README.md", "exec"), {})
    run_dir = tmp_path / "runs" / "api-demo"
    run = autoprune.open_run(run_dir)
    assert len(run.records) == 3 and run.pareto
    assert all(r.macs <= 20e6 for r in run.pareto)  # the budget held
    assert list((run_dir / "export").rglob("*.onnx"))
    assert main(["report", str(run_dir)]) == 0
    assert "Pareto front" in capsys.readouterr().out


def test_a_module_object_and_bad_input(tmp_path: Path) -> None:
    images, labels = torch.rand(64, 1, 16, 16), torch.arange(64) % 2
    data = TensorDataset(images, labels)
    net = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 2),
    )
    run = autoprune.search(
        model=net,
        train=data,
        val=data,
        trials=2,
        run_dir=tmp_path / "run",
        settings={"training.samples": 32, "hardware.estimator": "layers"},
        progress=False,
    )
    assert [r.state for r in run.records] == ["complete", "complete"]
    assert run.records[0].candidate["model"].startswith("python:Sequential-")
    with pytest.raises(ConfigError, match="give both `train` and `val`"):
        autoprune.search(model=net, train=data, run_dir=tmp_path / "other")
    with pytest.raises(ConfigError, match="holds no autoprune run"):
        autoprune.open_run(tmp_path / "nothing")
    assert not (tmp_path / "other").exists()
