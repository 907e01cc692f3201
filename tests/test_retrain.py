"""`autoprune export --retrain`: chosen trials retrained at full fidelity, kept, and exported."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from autoprune.cli import main
from autoprune.errors import RunDirError
from autoprune.evaluators import evaluate_accuracy
from autoprune.retrain import Retrainer, RetrainSettings
from autoprune.search import RunDir, pareto_front
from autoprune.spaces import Candidate, build_model
from tests.conftest import write_config

RETRAIN = ["--retrain", "--retrain-samples", "512", "--retrain-epochs", "2", "--quiet"]
SLUG = "scratch-b-512-x2-seed-search"


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("run")
    config = write_config(folder, search={"trials": 3, "population_size": 3})
    run_dir = folder / "run"
    assert main(["search", "--config", str(config), "--run-dir", str(run_dir), "--quiet"]) == 0
    return run_dir


def _export_front(run_dir: Path, out: Path, *flags: str) -> int:
    """``autoprune export`` of the front, in one format: the weights are the subject here."""
    return main(
        ["export", str(run_dir), "--pareto", "--out", str(out), "--format", "torchscript", *flags]
    )


def test_retrained_weights_are_exported_with_their_figures_and_kept(
    finished_run: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "export"
    assert _export_front(finished_run, out, *RETRAIN) == 0
    front = pareto_front(RunDir(finished_run).records())
    retrainer = Retrainer(RunDir(finished_run), RetrainSettings(samples=512, epochs=2))
    for record in front:
        folder = out / f"trial-{record.number:04d}"
        kept = finished_run / "retrain" / SLUG / f"trial-{record.number:04d}"
        figures = json.loads((folder / "retrain.json").read_text())
        assert figures == json.loads((kept / "retrain.json").read_text())
        assert (
            figures["evaluator"] == "scratch-b"
            and figures["candidate_hash"] == record.candidate_hash
        )
        assert figures["fidelity"].startswith("512 samples x ")  # Scratch-B scales the 2 epochs
        exported = torch.load(folder / "model.pt", weights_only=True)
        retrained = torch.load(kept / "model.pt", weights_only=True)
        assert exported.keys() == retrained.keys()
        assert all(torch.equal(exported[k], retrained[k]) for k in exported)
        # The figure is the exported weights' own, on the test split.
        candidate = Candidate.from_dict(record.candidate)
        model = build_model(candidate, seed=0)
        model.load_state_dict(exported)
        test = evaluate_accuracy(
            model.eval(),
            retrainer.parts.load_data(),
            split="test",
            input_shape=candidate.input_shape,
        )
        assert figures["test_accuracy"] == pytest.approx(test)
        card = (folder / "card.md").read_text()
        assert f"{100 * figures['test_accuracy']:.2f} % (retrained)" in card
        assert f"retrained: scratch-b at {figures['fidelity']}" in card

    # The same command again reuses every kept trial: nothing is retrained.
    stamps = {p: p.stat().st_mtime_ns for p in (finished_run / "retrain").rglob("model.pt")}
    assert _export_front(finished_run, out, *RETRAIN) == 0
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps

    # A plain export over it writes the search's weights and drops the retrained figures.
    assert _export_front(finished_run, out) == 0
    for record in front:
        folder = out / f"trial-{record.number:04d}"
        assert not (folder / "retrain.json").exists()
        assert "autoprune export --retrain" in (folder / "card.md").read_text()


def test_a_kept_folder_of_another_architecture_is_refused(finished_run: Path) -> None:
    front = pareto_front(RunDir(finished_run).records())
    retrainer = Retrainer(RunDir(finished_run), RetrainSettings(samples=64, seed=3))
    folder = retrainer.folder / f"trial-{front[0].number:04d}"
    folder.mkdir(parents=True)
    figures = {
        "trial": front[0].number,
        "candidate_hash": "0" * 12,
        "evaluator": "scratch-b",
        "fidelity": "64 samples x 1 epoch @ 28x28",
        "seed": 3,
        "val_accuracy": 0.5,
        "test_accuracy": 0.5,
        "seconds": 1.0,
    }
    (folder / "retrain.json").write_text(json.dumps(figures))
    with pytest.raises(RunDirError, match="was retrained for architecture 000000000000"):
        retrainer.retrain(front[0])


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--retrain-epochs", "3"], "--retrain-epochs applies only with --retrain"),
        (["--retrain", "--retrain-evaluator", "proxy"], "cannot retrain with evaluator 'proxy'"),
        (["--retrain", "--retrain-epochs", "0"], "retrain epochs must be >= 1"),
    ],
)
def test_bad_retrain_options_get_one_line_and_write_nothing(
    finished_run: Path, tmp_path: Path, capsys, argv: list[str], fragment: str
) -> None:
    before = sorted(p.relative_to(finished_run) for p in finished_run.rglob("*"))
    out = tmp_path / "export"
    assert main(["export", str(finished_run), "--pareto", "--out", str(out), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and fragment in err[0], err
    assert not out.exists()
    assert sorted(p.relative_to(finished_run) for p in finished_run.rglob("*")) == before


def test_an_interrupted_retrain_exits_130_and_says_how_to_continue(
    finished_run: Path, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(self: Retrainer, record: object) -> None:
        raise KeyboardInterrupt  # what Ctrl-C raises in the middle of a training

    monkeypatch.setattr(Retrainer, "retrain", interrupted)
    argv = ["export", str(finished_run), "--pareto", "--out", str(tmp_path), "--retrain"]
    assert main(argv) == 130
    err = capsys.readouterr().err
    assert "retrained trials are kept in" in err
    assert "Continue with: autoprune export" in err and "--retrain" in err
