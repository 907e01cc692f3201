"""A search that starts from your trained weights (``model.weights``), end to end through the CLI:
no base training, the run's identity, one-line refusals, and the report's reference line."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from torch import nn

import autoprune.evaluators._base_model as base_model
import autoprune.evaluators._finetune as finetune_module
from autoprune.cli import main
from autoprune.config import load_config
from autoprune.errors import ConfigError
from autoprune.search import RunDir, assemble
from autoprune.spaces import Candidate, build_model
from tests.conftest import write_config

BASE = Candidate(model="resnet20", num_classes=10, in_channels=1, input_shape=(1, 28, 28))


def save_weights(path: Path, seed: int, **kw: Any) -> dict[str, torch.Tensor]:
    """A resnet20 for the tiny config, saved as a state_dict (``kw``: another network)."""
    state = build_model(Candidate(**{**BASE.to_dict(), **kw}), seed=seed).state_dict()
    torch.save(state, path)
    return state


@pytest.fixture(scope="module")
def finetune_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """``autoprune search --evaluator finetune --set model.weights=PATH``, 2 trials, recording
    the network each candidate inherited from and refusing any base training."""
    folder = tmp_path_factory.mktemp("finetune")
    weights = folder / "resnet20.pt"
    state = save_weights(weights, seed=7)
    inherited_from: list[dict[str, torch.Tensor]] = []

    def spy(candidate: Candidate, trained_base: nn.Module, **kw: Any) -> nn.Module:
        inherited_from.append({k: v.clone() for k, v in trained_base.state_dict().items()})
        return inherit(candidate, trained_base, **kw)

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the base must not be trained when model.weights is given")

    inherit = finetune_module.inherit_weights
    config = write_config(folder, search={"trials": 2})
    run_dir = folder / "run"
    argv = ["search", "--config", str(config), "--run-dir", str(run_dir), "--quiet"]
    argv += ["--evaluator", "finetune", "--set", f"model.weights={weights}"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(finetune_module, "inherit_weights", spy)
        patch.setattr(base_model, "train_model", refuse)
        assert main(argv) == 0
    return {
        "run_dir": run_dir,
        "argv": argv,
        "weights": weights,
        "state": state,
        "inherited_from": inherited_from,
    }


def test_finetune_starts_from_your_weights_and_trains_no_base(finetune_run: dict) -> None:
    run_dir, weights, state = (
        finetune_run["run_dir"],
        finetune_run["weights"],
        finetune_run["state"],
    )
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    records = RunDir(run_dir).records()
    assert [r.state for r in records] == ["complete", "complete"]
    reference, candidate = records
    assert reference.evaluator == "your weights" and candidate.evaluator == "finetune"
    # every candidate was cut from your weights, not from a trained base
    assert len(finetune_run["inherited_from"]) == 1
    saved = finetune_run["inherited_from"][0]
    assert saved.keys() == state.keys() and all(torch.equal(saved[k], state[k]) for k in state)
    assert not (run_dir / "base" / "model.pt").exists()
    kept = json.loads((run_dir / "base" / "eval.json").read_text())
    assert kept["weights"] == str(weights) and kept["weights_sha256"] == digest
    assert kept["reference"]["val_accuracy"] == reference.accuracy
    # the run's identity: config.yaml records the path and the file's SHA-256
    model = yaml.safe_load((run_dir / "config.yaml").read_text())["model"]
    assert model["weights"] == str(weights) and model["weights_sha256"] == digest


def test_the_report_shows_your_weights_as_the_unpruned_reference(
    finetune_run: dict, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir, weights = finetune_run["run_dir"], finetune_run["weights"]
    reference = json.loads((run_dir / "base" / "eval.json").read_text())["reference"]
    label = f"unpruned, your weights ({weights})"
    capsys.readouterr()
    assert main(["report", str(run_dir)]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("reference")]
    assert len(lines) == 1
    assert lines[0].startswith(f"reference: {label}: val acc ")
    assert f"{reference['params']:,} params" in lines[0] and "MMACs" in lines[0]
    assert "test acc -" not in lines[0] and "input 1x28x28" in lines[0]

    assert main(["report", str(run_dir), "--format", "json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["reference"]["label"] == label
    assert 0 <= payload["reference"]["test_accuracy"] <= 1
    assert json.loads((run_dir / "pareto.json").read_text())["reference"] == payload["reference"]

    with open(run_dir / "pareto.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows[-1]["trial"] == "reference" and rows[-1]["fidelity"] == label
    assert float(rows[-1]["accuracy"]) == reference["val_accuracy"]
    assert int(rows[-1]["macs"]) == reference["macs"]
    assert all(row["trial"].isdigit() for row in rows[:-1])


def resume(finetune_run: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str], *extra: str):
    """Run the search again on a copy of the run with ``extra`` options: exit status, stderr."""
    copy = tmp_path / "copy"
    shutil.copytree(finetune_run["run_dir"], copy)
    argv = [a if a != str(finetune_run["run_dir"]) else str(copy) for a in finetune_run["argv"]]
    capsys.readouterr()
    code = main([*argv, *extra])
    assert len(RunDir(copy).records()) == 2  # untouched
    return code, capsys.readouterr().err.strip(), copy


def test_a_resumed_run_with_other_weights_is_refused(
    finetune_run: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "same-content.pt"
    shutil.copy(finetune_run["weights"], other)
    code, err, _ = resume(finetune_run, tmp_path, capsys, "--set", f"model.weights={other}")
    assert code == 2 and len(err.splitlines()) == 1
    assert f"model.weights: '{finetune_run['weights']}' there, '{other}' now" in err


def test_a_resumed_run_whose_weights_file_changed_is_refused(
    finetune_run: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(finetune_run["run_dir"], copy)
    config = yaml.safe_load((copy / "config.yaml").read_text())
    config["model"]["weights_sha256"] = "0" * 64  # as if the file was saved again since
    (copy / "config.yaml").write_text(yaml.safe_dump(config))
    argv = [a if a != str(finetune_run["run_dir"]) else str(copy) for a in finetune_run["argv"]]
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "model.weights: the file's content changed, SHA-256 000000000000 there" in err
    assert len(RunDir(copy).records()) == 2


def test_assembly_pins_the_absolute_path_and_the_content(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    save_weights(tmp_path / "w.pt", seed=0)
    digest = hashlib.sha256((tmp_path / "w.pt").read_bytes()).hexdigest()
    config = load_config(write_config(tmp_path), overrides=["model.weights=w.pt"])
    parts = assemble(config)
    assert parts.config.model.weights == str(tmp_path / "w.pt")
    assert parts.config.model.weights_sha256 == digest
    base = parts.trained_base(tmp_path / "base")
    assert base.weights == tmp_path / "w.pt" and base.weights_sha256 == digest
    # a Ray worker or a retrain assembles the run's config.yaml: the same file, or nothing
    save_weights(tmp_path / "w.pt", seed=1)
    with pytest.raises(ConfigError, match="not the .* that model.weights_sha256 pins"):
        assemble(parts.config)


@pytest.mark.parametrize(
    ("evaluator", "says"),
    [
        ("distill", "distill starts from your weights"),
        ("scratch-e", "scratch-e trains every candidate from scratch, by design"),
        ("proxy", "proxy trains every candidate from scratch, by design"),
    ],
)
def test_one_log_line_says_what_the_evaluator_does_with_them(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, evaluator: str, says: str
) -> None:
    save_weights(tmp_path / "w.pt", seed=0)
    config = load_config(write_config(tmp_path), overrides=[f"model.weights={tmp_path / 'w.pt'}"])
    config = dataclasses.replace(
        config, evaluator=dataclasses.replace(config.evaluator, name=evaluator)
    )
    with caplog.at_level(logging.INFO, logger="autoprune"):
        assemble(config).check()
    lines = [r.getMessage() for r in caplog.records if "your weights" in r.getMessage()]
    assert len(lines) == 1 and lines[0].startswith(says) and str(tmp_path / "w.pt") in lines[0]


def _bad_file(folder: Path, case: str) -> Path:
    path = folder / f"{case}.pt"
    if case == "missing":
        return path
    if case == "directory":
        return folder
    if case == "text":
        path.write_text("conv1.weight: [[0.1, 0.2]]\n")
    elif case == "pickled-module":
        torch.save(build_model(BASE, seed=0), path)  # the whole module: code, not weights
    elif case == "no-state-dict":
        torch.save({"epoch": 3, "optimizer": {"lr": 0.1}}, path)
    elif case == "keys":
        state = build_model(BASE, seed=0).state_dict()
        state.pop("fc.bias")
        state["head.weight"] = torch.zeros(2)
        torch.save(state, path)
    elif case == "classes":
        save_weights(path, seed=0, num_classes=100)
    elif case == "channels":
        save_weights(path, seed=0, in_channels=3, input_shape=(3, 28, 28))
    return path


@pytest.mark.parametrize(
    ("case", "fragment"),
    [
        ("missing", "does not exist; pass the file your trained network's weights were saved"),
        ("directory", "is a directory; pass the file in it that holds the weights"),
        ("text", "is not a PyTorch file that torch.load can read"),
        ("pickled-module", "which torch.load(weights_only=True) refuses to unpickle"),
        ("no-state-dict", "holds no state_dict (a dict with keys epoch, optimizer)"),
        ("keys", "state_dict keys 1 missing (fc.bias), 1 unexpected (head.weight); set model.name"),
        ("classes", "fc.weight is 100x64 there, 10x64 here; model.num_classes and model.in_ch"),
        ("channels", "conv1.weight is 16x3x3x3 there, 16x1x3x3 here; model.num_classes and"),
    ],
)
def test_a_bad_weights_file_is_one_line_exit_2_nothing_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str, fragment: str
) -> None:
    config = write_config(tmp_path)
    weights = _bad_file(tmp_path, case)
    run_dir = tmp_path / "run"
    argv = ["search", "--config", str(config), "--run-dir", str(run_dir), "--quiet"]
    assert main([*argv, "--set", f"model.weights={weights}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and fragment in err[0] and f"model.weights '{weights}'" in err[0], err
    assert not run_dir.exists()
