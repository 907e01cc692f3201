"""Continuing a run: which config changes a run directory accepts, and which it refuses."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import yaml

from autoprune.config import load_config
from autoprune.errors import RunDirError
from autoprune.search._study import prepare_run_dir


def test_a_run_from_before_a_new_setting_continues_at_its_default(tmp_path: Path) -> None:
    config = load_config()
    url = prepare_run_dir(tmp_path, config, None)
    old = config.to_dict()
    del old["hardware"]["tuning_trials_per_task"]  # as written before the key existed
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(old))
    assert prepare_run_dir(tmp_path, config, None) == url
    assert yaml.safe_load((tmp_path / "config.yaml").read_text()) == config.to_dict()


@pytest.mark.parametrize(
    "override",
    [
        "search.trials=50",
        "hardware.tuning_trials_per_task=16",
        "search.timeout_s=60",
        "search.workers=4",
        "search.ray_address=auto",
        "search.cpus_per_trial=2",
        "search.gpus_per_trial=0.5",
        "search.max_failures=5",
        "data.download=true",
        "data.num_workers=0",
    ],
)
def test_budgets_may_grow_on_a_continued_run(tmp_path: Path, override: str) -> None:
    prepare_run_dir(tmp_path, load_config(), None)
    prepare_run_dir(tmp_path, load_config(overrides=[override]), None)


def test_another_training_fidelity_is_refused_with_the_setting_named(tmp_path: Path) -> None:
    default = load_config()
    prepare_run_dir(tmp_path, default, None)
    epochs = default.training.epochs
    with pytest.raises(
        RunDirError, match=rf"training\.epochs: {epochs} there, {epochs + 1} now.*--run-dir"
    ):
        prepare_run_dir(tmp_path, load_config(overrides=[f"training.epochs={epochs + 1}"]), None)


def test_a_new_run_has_its_tables_before_run_json(tmp_path: Path) -> None:
    # A reader that waits for run.json (``autoprune report``, a Ray worker) then only reads
    # the storage, instead of racing the search to create Optuna's tables.
    url = prepare_run_dir(tmp_path / "run", load_config(), None)
    assert (tmp_path / "run" / "run.json").exists()
    with sqlite3.connect(url.removeprefix("sqlite:///")) as db:
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master")}
    assert {"studies", "trials", "version_info"} <= tables


def test_a_storage_that_cannot_be_opened_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(RunDirError, match=r"cannot open the storage 'nodb://x'.*--storage"):
        prepare_run_dir(tmp_path / "run", load_config(), "nodb://x")
    assert not (tmp_path / "run").exists()
