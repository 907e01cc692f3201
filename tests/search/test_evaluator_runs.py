"""Searches under each kind of evaluator, end to end through the CLI (tiny real runs)."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest

from autoprune.cli import main
from autoprune.search import RunDir
from tests.conftest import write_config


def search(tmp_path: Path, *flags: str, trials: int = 3, epochs: int = 1) -> Path:
    config = write_config(tmp_path, search={"trials": trials}, training={"epochs": epochs})
    run_dir = tmp_path / "run"
    argv = ["search", "--config", str(config), "--run-dir", str(run_dir), "--quiet", *flags]
    assert main(argv) == 0
    return run_dir


def test_distill_trains_the_base_once_and_uses_it_as_teacher(tmp_path: Path, capsys) -> None:
    run_dir = search(tmp_path, "--evaluator", "distill")
    assert (run_dir / "base" / "model.pt").is_file() and (run_dir / "base" / "eval.json").is_file()
    records = RunDir(run_dir).records()
    assert [r.state for r in records] == ["complete"] * 3
    assert records[0].evaluator == "scratch-e"  # the reference trial is the trained base itself
    assert {r.evaluator for r in records[1:] if r.cached_from is None} == {"distill"}
    assert all(r.metric == "accuracy" and 0 <= r.accuracy <= 1 for r in records)
    # The hypervolume of the distilled trials' front, against one computed here by
    # inclusion-exclusion over the boxes each feasible trained trial dominates.
    reference, history = RunDir(run_dir).hypervolume()
    base = records[0]
    assert reference.scales == (1.0, base.latency_ms, base.energy_mj)
    assert reference.point == (1.0, 1.1, 1.1)
    counted = [r for r in records if r.feasible and r.trained]
    assert base in counted and len(counted) >= 2
    assert [n for n, _ in history] == [r.number for r in records]
    volumes = [v for _, v in history]
    assert volumes == sorted(volumes)
    assert volumes[-1] == pytest.approx(_union_of_boxes(counted, reference.point), rel=1e-9)
    assert volumes[0] == pytest.approx(_union_of_boxes([base], reference.point), rel=1e-9)
    assert volumes[0] > 0


def _union_of_boxes(records: list, point: tuple[float, ...]) -> float:
    """Volume of the union of the boxes [normalised record, ``point``], by inclusion-exclusion:
    error ``1 - accuracy``, costs over the base's (trial 0's) costs."""
    base = min(records, key=lambda r: r.number)
    corners = [
        (1 - r.accuracy, r.latency_ms / base.latency_ms, r.energy_mj / base.energy_mj)
        for r in records
    ]
    total = 0.0
    for size in range(1, len(corners) + 1):
        for subset in itertools.combinations(corners, size):
            box = math.prod(max(0.0, p - max(c[d] for c in subset)) for d, p in enumerate(point))
            total += (-1) ** (size + 1) * box
    return total


def test_proxy_scores_candidates_and_the_report_says_so(tmp_path: Path, capsys) -> None:
    run_dir = search(tmp_path, "--evaluator", "proxy")
    assert not (run_dir / "base").exists()  # nothing is trained
    records = RunDir(run_dir).records()
    assert [r.state for r in records] == ["complete"] * 3
    assert {r.metric for r in records} == {"log_synflow"}
    assert all(r.test_accuracy is None for r in records)  # no test figure for an untrained net
    assert RunDir(run_dir).hypervolume() is None
    capsys.readouterr()
    assert main(["report", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "(log_synflow)" in out and "hypervolume:" not in out


def test_an_unknown_evaluator_is_one_line_exit_2(tmp_path: Path, capsys) -> None:
    config = write_config(tmp_path)
    code = main(
        [
            "search",
            "--config",
            str(config),
            "--run-dir",
            str(tmp_path / "r"),
            "--evaluator",
            "hydra",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "unknown evaluator 'hydra'" in err and "scratch-b" in err
    assert not (tmp_path / "r").exists()


def test_lottery_rewinds_to_an_epoch_the_base_kept(tmp_path: Path) -> None:
    flags = ("--evaluator", "lottery", "--set", "evaluator.lottery.rewind_epoch=1")
    run_dir = search(tmp_path, *flags, trials=2, epochs=2)
    assert (run_dir / "base" / "epoch1.pt").is_file()  # kept while the base trained
    records = RunDir(run_dir).records()
    assert [r.state for r in records] == ["complete"] * 2
    assert {r.evaluator for r in records[1:] if r.cached_from is None} == {"lottery"}


def test_lottery_past_the_base_training_is_one_line_exit_2(tmp_path: Path, capsys) -> None:
    config = write_config(tmp_path, training={"epochs": 1})
    argv = ["search", "--config", str(config), "--run-dir", str(tmp_path / "r"), "--quiet"]
    code = main([*argv, "--evaluator", "lottery", "--set", "evaluator.lottery.rewind_epoch=1"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "rewind_epoch is 1, but the base trains for 1 epochs; rewind to 0..0" in err
    assert not (tmp_path / "r").exists()
