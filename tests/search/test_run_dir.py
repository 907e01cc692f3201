"""Continuing a run: which config changes a run directory accepts, and which it refuses."""

from __future__ import annotations

import multiprocessing
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml

from autoprune.config import load_config
from autoprune.errors import RunDirError
from autoprune.search import RunDir
from autoprune.search._run_config import create_tables


def test_a_run_from_before_a_new_setting_continues_at_its_default(tmp_path: Path) -> None:
    config = load_config()
    url = RunDir(tmp_path).prepare(config, None)
    old = config.to_dict()
    del old["hardware"]["tuning_trials_per_task"]  # as written before the key existed
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(old))
    run = RunDir(tmp_path)
    assert run.prepare(config, None) == url
    assert yaml.safe_load((tmp_path / "config.yaml").read_text()) == old  # nothing written yet
    with run.lock():  # as the search records it: holding the lock
        run.record_config(config)
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
    RunDir(tmp_path).prepare(load_config(), None)
    RunDir(tmp_path).prepare(load_config(overrides=[override]), None)


def test_another_training_fidelity_is_refused_with_the_setting_named(tmp_path: Path) -> None:
    default = load_config()
    RunDir(tmp_path).prepare(default, None)
    epochs = default.training.epochs
    with pytest.raises(
        RunDirError, match=rf"training\.epochs: {epochs} there, {epochs + 1} now.*--run-dir"
    ):
        RunDir(tmp_path).prepare(load_config(overrides=[f"training.epochs={epochs + 1}"]), None)


def test_a_new_run_has_its_tables_before_run_json(tmp_path: Path) -> None:
    # A reader that waits for run.json (``autoprune report``, a Ray worker) then only reads
    # the storage, instead of racing the search to create Optuna's tables.
    url = RunDir(tmp_path / "run").prepare(load_config(), None)
    assert (tmp_path / "run" / "run.json").exists()
    with sqlite3.connect(url.removeprefix("sqlite:///")) as db:
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master")}
    assert {"studies", "trials", "version_info"} <= tables


def _open_after(barrier: Any, url: str, outcomes: Any) -> None:
    barrier.wait()
    try:
        create_tables(url)
        outcomes.put("ok")
    except RunDirError as exc:
        outcomes.put(str(exc))


def test_a_new_storage_opened_by_several_processes_at_once_opens_for_each(tmp_path: Path) -> None:
    # SQLAlchemy checks for a table and then creates it: two processes opening a new study
    # at once (a search and a report polling it) clash on "table ... already exists" or on
    # Optuna's version row. Unhandled, 24 of 40 openings failed so (10 rounds of 4).
    context = multiprocessing.get_context("fork")
    failures = []
    for round_ in range(5):
        url = f"sqlite:///{tmp_path / f'study{round_}.db'}"
        barrier, outcomes = context.Barrier(4), context.Queue()
        openers = [
            context.Process(target=_open_after, args=(barrier, url, outcomes)) for _ in range(4)
        ]
        for opener in openers:
            opener.start()
        failures += [outcomes.get(timeout=60) for _ in openers]
        for opener in openers:
            opener.join(timeout=60)
    assert failures == ["ok"] * 20


def test_a_storage_that_cannot_be_opened_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(RunDirError, match=r"cannot open the storage 'nodb://x'.*--storage"):
        RunDir(tmp_path / "run").prepare(load_config(), "nodb://x")
    assert not (tmp_path / "run").exists()


def test_a_run_directory_of_an_older_autoprune_continues(tmp_path: Path) -> None:
    # Written before each evaluator had its own settings section: the flat evaluator keys.
    config = load_config()
    RunDir(tmp_path).prepare(config, None)
    old = config.to_dict()
    old["evaluator"] = {
        "name": "scratch-e",
        "scratch_b_cap": 2.0,
        "finetune_epochs": None,
        "finetune_lr": 0.01,
        "distill_temperature": 4.0,
        "distill_weight": 0.9,
        "proxy": "log_synflow",
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(old))
    RunDir(tmp_path).prepare(config, None)
    with pytest.raises(RunDirError, match=r"evaluator\.name: 'scratch-e' there, 'distill' now"):
        RunDir(tmp_path).prepare(load_config(overrides=["evaluator=distill"]), None)


def test_the_layout_is_known_in_one_place(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    assert run.trial_dir(7) == tmp_path / "trials" / "0007"
    assert run.weights_file(7) == tmp_path / "trials" / "0007" / "model.pt"
    assert run.tuning_dir("host") == tmp_path / "tuning" / "host"
    assert not run.exists()
    with pytest.raises(RunDirError, match="not an autoprune run directory"):
        run.records()


def test_a_copied_run_reads_and_writes_its_own_study(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    run.prepare(load_config(), None)
    run.open_study(optuna.samplers.RandomSampler(seed=0))
    shutil.copytree(tmp_path / "run", tmp_path / "copy")
    copy = RunDir(tmp_path / "copy")
    assert copy.storage_url == f"sqlite:///{(tmp_path / 'copy' / 'study.db').resolve()}"
    copy.open_study(optuna.samplers.RandomSampler(seed=0)).enqueue_trial({})
    assert len(copy.load_study().get_trials()) == 1
    assert run.load_study().get_trials() == []
