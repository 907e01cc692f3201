"""A new evaluator is one class with one decorator: registered here, it runs a whole search."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import yaml
from torch import nn

from autoprune.cli import main
from autoprune.config import require
from autoprune.evaluators import EpochHook, EvalResult, Evaluator, register_evaluator
from autoprune.search import RunDir
from autoprune.spaces import Candidate, build_model
from tests.conftest import write_config


@register_evaluator("subset")
class Subset(Evaluator):
    """From scratch on a subset of the training images, one epoch: a quick, rough ranking."""

    @dataclass(frozen=True)
    class Settings:
        samples: int = 128

        def __post_init__(self) -> None:
            require(self.samples >= 1, "evaluator.subset.samples", self.samples, "an int >= 1")

    def evaluate(
        self, candidate: Candidate, *, seed: int, on_epoch: EpochHook | None = None
    ) -> tuple[nn.Module, EvalResult]:
        model = build_model(candidate, seed=seed)
        fidelity = dataclasses.replace(self.fidelity, samples=self.settings.samples, epochs=1)
        return model, self._train(model, candidate, seed=seed, fidelity=fidelity, on_epoch=on_epoch)


def test_a_registered_evaluator_runs_a_search_with_its_own_settings(tmp_path: Path, capsys) -> None:
    config = write_config(tmp_path, search={"trials": 3})
    run_dir = tmp_path / "run"
    argv = ["search", "--config", str(config), "--run-dir", str(run_dir), "--quiet"]
    assert main([*argv, "--evaluator", "subset", "--set", "evaluator.subset.samples=64"]) == 0
    records = RunDir(run_dir).records()
    assert [r.state for r in records] == ["complete"] * 3
    trained = [r for r in records[1:] if r.cached_from is None]  # trial 0 is the trained base
    assert trained and {r.evaluator for r in trained} == {"subset"}
    assert all(r.fidelity.startswith("64 samples x 1 epoch") for r in trained)
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["evaluator"] == {"name": "subset", "subset": {"samples": 64}}
    capsys.readouterr()
    code = main([*argv[:-1], "--evaluator", "subset", "--set", "evaluator.subset.samples=0"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.endswith("evaluator.subset.samples must be an int >= 1, but got 0")
