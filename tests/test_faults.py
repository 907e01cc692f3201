"""Faults: kill -9 at chosen moments, a full disk, damaged files, two searches, NaN, no memory.

The faults strike a real search (the tiny synthetic one of ``conftest.py``) in a subprocess,
through ``tests/faults_driver.py``, which patches the function where each fault lands (a write,
the storage's commit, the test-split evaluation, an export) to SIGKILL the process at its n-th
call, or sets a real resource limit. One search, run once for the module, is copied per test.
(A tuned run's damaged tuning database: ``tests/test_tuned_host.py``.)
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
import pytest

from autoprune.cli import main
from autoprune.errors import DamagedFileError
from autoprune.hwprofiles._database import RECORDS_NAME, WORKLOADS_NAME, load_database
from autoprune.search import RunDir, pareto_front
from tests.conftest import write_config

ROOT = Path(__file__).resolve().parents[1]
#: RLIMIT_FSIZE of the module's search: above its study (about 160 kB) and the small trials'
#: weights, below the unpruned base's weights (1.1 MB), written first.
FILE_LIMIT = 640 * 1024


def _driver(*faults: str) -> list[str]:
    return [sys.executable, str(ROOT / "tests" / "faults_driver.py"), *faults, "--"]


def _search_args(config: Path, run_dir: Path, *more: str) -> list[str]:
    return ["search", "--config", str(config), "--run-dir", str(run_dir), "--quiet", *more]


def _run(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, **kwargs)


def _trials(run_dir: Path) -> list[optuna.trial.FrozenTrial]:
    study = RunDir(run_dir).load_study()
    assert study is not None
    return study.get_trials()


def _snapshot(trial: optuna.trial.FrozenTrial) -> tuple[Any, ...]:
    return (trial.number, trial.state, trial.params, trial.values, trial.user_attrs)


@pytest.fixture(scope="module")
def faulted_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """A 3-trial search whose disk fills up at the first weights (the unpruned base's, trial 0)
    and whose second training (trial 1) finds no memory: ``(run dir, config, its output)``."""
    folder = tmp_path_factory.mktemp("faulted")
    config = write_config(folder, search={"trials": 3})
    run_dir = folder / "run"
    faults = (f"fsize-at-weights:{FILE_LIMIT}", "memory:2:1")
    done = _run([*_driver(*faults), *_search_args(config, run_dir)])
    assert done.returncode == 0, done.stderr[-3000:]
    return run_dir, config, done.stdout + done.stderr


def _copy(run_dir: Path, to: Path) -> Path:
    """A plain copy of a run: run.json names the study relatively, so it is the copy's."""
    shutil.copytree(run_dir, to)
    return to


@pytest.mark.slow  # the module's search, in its set-up
def test_a_full_disk_and_no_memory_fail_one_trial_each_and_the_search_goes_on(
    faulted_run: tuple[Path, Path, str],
) -> None:
    run_dir, _, output = faulted_run
    records = RunDir(run_dir).records()
    assert [r.state for r in records] == ["failed", "failed", "complete"]
    assert "File too large" in records[0].error and "ulimit -f" in records[0].error
    # Out of memory in PyTorch's allocator, or in oneDNN building a kernel (then the next trials
    # train without oneDNN, which cannot build kernels in that process any more).
    assert any(e in records[1].error for e in ("can't allocate memory", "create a primitive"))
    assert not any((run_dir / "trials" / "0000").iterdir())  # no part of the weights left
    assert "Traceback" not in output
    assert f"trial 0 failed: OSError: [Errno 27] cannot write {run_dir}" in output


@pytest.mark.slow
def test_kill_9_at_each_write_then_resume_keeps_every_finished_trial_once(
    faulted_run: tuple[Path, Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = _copy(faulted_run[0], tmp_path / "run")
    config = faulted_run[1]
    more = _search_args(config, run_dir, "--trials", "4")
    kept = {t.number: _snapshot(t) for t in _trials(run_dir)}

    # 1. A second search while the first holds the run: refused in one line. Then the first is
    # killed halfway through writing trial 3's weights.
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    log = tmp_path / "first.log"
    with log.open("w") as output:
        first = subprocess.Popen(
            [*_driver(f"pause-weights:{ready_w}:{go_r}", "kill-writing:model.pt:1"), *more],
            env=env,
            pass_fds=(ready_w, go_r),
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    os.close(ready_w)
    os.close(go_r)
    with os.fdopen(ready_r, "rb") as ready:
        paused = ready.read()  # end of file without the word: the first search died
    assert paused == b"paused", log.read_text()[-3000:]
    recorded = (run_dir / "config.yaml").read_bytes()
    assert main(_search_args(config, run_dir, "--trials", "5")) == 2
    refused = capsys.readouterr().err
    assert refused.count("\n") == 1 and "is in use by another autoprune process" in refused
    assert (run_dir / "config.yaml").read_bytes() == recorded  # the refused one wrote nothing
    os.close(go_w)  # the first goes on, into the weights write where it dies
    assert first.wait(timeout=600) == -signal.SIGKILL
    half = list((run_dir / "trials" / "0003").glob("model.pt.*.tmp"))
    assert len(half) == 1 and not (run_dir / "trials" / "0003" / "model.pt").exists()

    # 2. Killed in the storage's commit of the retried trial's result (not committed), then
    # 3. just after the commit of the next retry's result (committed: a finished trial).
    for fault in ("kill-commit:1", "kill-committed:1"):
        assert _run([*_driver(fault), *more]).returncode == -signal.SIGKILL
        assert not half[0].exists()  # the resumed search removed the killed write's part
    finished = [t for t in _trials(run_dir) if t.state == optuna.trial.TrialState.COMPLETE]
    kept |= {t.number: _snapshot(t) for t in finished}
    assert len(finished) == 2  # trial 2, and the retry committed just before the kill

    # 4. Killed in the test-split evaluation of the front (as if never measured).
    front = pareto_front(RunDir(run_dir).records())
    for member in front:
        RunDir(run_dir).trial_dir(member.number).joinpath("test.json").unlink(missing_ok=True)
    fault = f"kill-test-eval:{min(2, len(front))}"
    assert _run([*_driver(fault), *more]).returncode == -signal.SIGKILL

    assert main(more) == 0
    trials = _trials(run_dir)
    assert {t.number: _snapshot(t) for t in trials if t.number in kept} == kept
    assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in trials) == 2
    assert RunDir.finished(RunDir(run_dir).load_study()) == 4  # type: ignore[arg-type]
    interrupted = [t for t in trials if t.user_attrs.get("interrupted")]
    retries = [t.user_attrs["retry_of"] for t in trials if "retry_of" in t.user_attrs]
    assert sorted(retries) == [t.number for t in interrupted]  # each retried exactly once
    params = {json.dumps(t.params, sort_keys=True) for t in trials if t.number >= 3}
    assert len(params) == 1  # every retry is the killed trial's candidate
    assert not list(run_dir.rglob("*.tmp"))
    for record in pareto_front(RunDir(run_dir).records()):
        assert record.test_accuracy is not None


@pytest.mark.slow
def test_an_export_killed_halfway_leaves_no_folder_that_looks_complete(
    faulted_run: tuple[Path, Path, str], tmp_path: Path
) -> None:
    run_dir = _copy(faulted_run[0], tmp_path / "run")
    out = tmp_path / "out"
    export = ["export", str(run_dir), "--trial", "2", "--format", "torchscript", "--out", str(out)]
    assert _run([*_driver("kill-export:1"), *export]).returncode == -signal.SIGKILL
    assert not (out / "trial-0002").exists()  # only the partial folder, by its name
    assert [p.name.endswith(".partial") for p in out.iterdir()] == [True]
    assert main(export) == 0
    assert sorted(p.name for p in out.iterdir()) == ["trial-0002"]
    assert (out / "trial-0002" / "model.json").is_file()


@pytest.mark.parametrize(
    ("damaged", "how"),
    [
        ("study.db", "truncated"),
        ("study.db", "corrupted"),
        ("run.json", "truncated"),
        ("trials/0002/model.pt", "truncated"),
        ("trials/0002/model.pt", "corrupted"),  # the zip is whole: its recorded SHA-256 differs
        ("trials/0002/test.json", "truncated"),
    ],
)
def test_a_damaged_file_is_named_in_one_line_and_left_as_it_is(
    faulted_run: tuple[Path, Path, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    damaged: str,
    how: str,
) -> None:
    run_dir = _copy(faulted_run[0], tmp_path / "run")
    path = run_dir / damaged
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    else:  # garbage at the start of a page in the middle (SQLite's pages are 4 kB)
        middle = len(data) // 2 // 4096 * 4096
        path.write_bytes(data[:middle] + b"\xff\x13" * 512 + data[middle + 1024 :])
    before = path.read_bytes()
    if damaged.endswith("model.pt"):  # only export reads the weights of a measured trial
        commands = [["export", str(run_dir), "--trial", "2", "--format", "onnx"]]
    else:
        commands = [
            ["report", str(run_dir)],
            ["export", str(run_dir), "--pareto", "--format", "onnx"],
            _search_args(faulted_run[1], run_dir),
        ]
    for command in commands:
        assert main(command) == 2, command
        error = capsys.readouterr().err
        assert error.count("\n") == 1 and str(path) in error and "damaged" in error, error
        assert path.read_bytes() == before
    assert not (run_dir / "export" / "trial-0002").exists()


def test_a_damaged_tuning_database_is_named_and_left_as_it_is(tmp_path: Path) -> None:
    (tmp_path / WORKLOADS_NAME).write_text('["a workload cut sh')
    (tmp_path / RECORDS_NAME).write_text("")
    before = (tmp_path / WORKLOADS_NAME).read_bytes()
    with pytest.raises(DamagedFileError, match=f"{WORKLOADS_NAME}.*line 1 is not JSON"):
        load_database(tmp_path)
    assert (tmp_path / WORKLOADS_NAME).read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [RECORDS_NAME, WORKLOADS_NAME]


@pytest.mark.slow
def test_a_nan_loss_fails_the_trial_and_the_search_goes_on(
    faulted_run: tuple[Path, Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A learning rate so high that the loss overflows to NaN within the first epoch.
    config = write_config(tmp_path, training={"lr": 1e12}, search={"trials": 2})
    run_dir = tmp_path / "run"
    # The same candidates as the module's run: their latencies are in its cache.
    shutil.copytree(faulted_run[0] / "hw-cache", run_dir / "hw-cache")
    assert main(_search_args(config, run_dir)) == 0
    records = RunDir(run_dir).records()
    assert [r.state for r in records] == ["failed", "failed"]
    assert all("training diverged: loss nan" in r.error for r in records)
    err = capsys.readouterr().err
    assert "Traceback" not in err and "trial 1 failed: TrainingDiverged" in err
