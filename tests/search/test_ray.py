"""Trials on Ray: the recording path gives the local records; a real two-node cluster on
loopback survives a worker killed mid-trial without losing or double counting a trial."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from ray.tune.search import Searcher

from autoprune.cli import main
from autoprune.config import load_config
from autoprune.search import OBJECTIVES, RecordedTrial, RunDir, _optuna, apply_recording, assemble
from autoprune.search._ray import StudySearch
from tests.conftest import write_config
from tests.search.cluster import LoopbackCluster


def _study(folder: Path) -> optuna.Study:
    folder.mkdir(parents=True, exist_ok=True)
    return optuna.create_study(
        storage=f"sqlite:///{folder / 'study.db'}",
        study_name="autoprune",
        directions=[direction for _, direction in OBJECTIVES],
    )


def _without_timing(trial: optuna.trial.FrozenTrial, run_dir: Path) -> dict:
    record = dataclasses.replace(RunDir(run_dir).record(trial), train_seconds=None).to_dict()
    constraints = {k: v for k, v in trial.system_attrs.items() if k.startswith("constraints")}
    return {"record": record, "constraints": constraints, "values": trial.values}


def test_recorded_trial_applied_on_the_driver_gives_the_local_records(tmp_path: Path) -> None:
    # A MACs budget the largest candidate breaks, no repair: one trained, one infeasible, and
    # the trained architecture again (reused from the study, not trained twice; on Ray, the
    # driver finds it before it would dispatch the trial).
    config = load_config(
        write_config(
            tmp_path,
            training={"samples": 64},
            search={"repair": False},
            budgets=["0.01gflops"],
        )
    )
    local_dir, remote_dir = tmp_path / "local", tmp_path / "remote"
    local, remote = _study(local_dir), _study(remote_dir)
    local_objective = assemble(config, run=RunDir(local_dir)).objective(RunDir(local_dir))
    remote_objective = assemble(config, run=RunDir(remote_dir)).objective(RunDir(remote_dir))
    space = local_objective.space
    smallest = {d.name: min(d.choices) for d in space.decisions}
    largest = {d.name: max(d.choices) for d in space.decisions}
    distributions = {
        d.name: optuna.distributions.CategoricalDistribution(d.choices) for d in space.decisions
    }
    driver = StudySearch(  # what a Ray driver asks before it dispatches a trial
        space=distributions,
        sampler=optuna.samplers.RandomSampler(seed=0),
        storage=_optuna.storage_of(remote),
        study_name="autoprune",
        run=RunDir(remote_dir),
        max_failures=0,
        n_trials=1,
        objective=remote_objective,
    )
    for params in (smallest, largest, smallest):
        local.enqueue_trial(params)
        local.optimize(local_objective, n_trials=1)

        if params is smallest and remote.get_trials():  # trained before: told on the driver
            remote.enqueue_trial(params)
            assert driver.suggest("tune-trial") == Searcher.FINISHED and driver.reused == 1
            continue
        remote.enqueue_trial(params)
        trial = remote.ask(distributions)
        recorded = RecordedTrial(
            number=trial.number,
            params=trial.params,
            user_attrs=trial.user_attrs,
            load_study=lambda: optuna.load_study(
                study_name="autoprune", storage=f"sqlite:///{remote_dir}/study.db"
            ),
        )
        values = remote_objective(recorded)
        recording = json.loads(json.dumps(recorded.recording(values)))  # as through Tune
        remote.tell(trial, apply_recording(trial, recording))

    local_trials, remote_trials = local.get_trials(), remote.get_trials()
    assert [t.user_attrs.get("trained") for t in remote_trials] == [True, False, True]
    assert remote_trials[2].user_attrs["cached_from"] == 0
    # The budget's violation reached the study, as the list optuna-dashboard reads.
    violation = remote_trials[1].user_attrs["violations"]["0.01gflops"]
    assert violation > 0 and remote_trials[1].system_attrs["constraints"] == [violation]
    for a, b in zip(local_trials, remote_trials, strict=True):
        assert _without_timing(a, local_dir) == _without_timing(b, remote_dir)
    assert (remote_dir / "trials" / "0000" / "model.pt").is_file()


def test_apply_recording_refuses_another_trials_recording(tmp_path: Path) -> None:
    study = _study(tmp_path)
    trial = study.ask({"w": optuna.distributions.CategoricalDistribution((1, 2))})
    recording = RecordedTrial(number=trial.number + 1, params=trial.params, study=study).recording(
        None
    )
    with pytest.raises(ValueError, match="does not belong to trial 0"):
        apply_recording(trial, recording)


# -- a real cluster ----------------------------------------------------------------------------


@pytest.fixture
def ray_cluster(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A head and a second node, one CPU each, on loopback; stopped at teardown."""
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    cluster = LoopbackCluster(Path(f"/tmp/ap-ray-{os.getpid()}"))
    try:
        address = cluster.start_head(cpus=1)
        cluster.add_worker(cpus=1)
        yield address
    finally:
        cluster.stop()


def _kill_first_attempt(run_dir: Path, killed: list[int], stop: threading.Event) -> None:
    """SIGKILL the Ray worker of the first trial that starts, as soon as its attempt is recorded
    (attempts.jsonl names the worker; the attempt then still has its data, build and training
    ahead, and no model.pt is written before they end)."""
    while not stop.wait(0.05):
        for path in sorted(run_dir.glob("trials/*/attempts.jsonl")):
            lines = path.read_text().splitlines()
            if lines and lines[0].endswith("}"):
                if not (path.parent / "model.pt").exists():  # else: no kill, and the test fails
                    os.kill(json.loads(lines[0])["pid"], signal.SIGKILL)
                    killed.append(int(path.parent.name))
                return


@pytest.mark.slow
def test_search_on_a_cluster_survives_a_killed_worker(
    ray_cluster: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Per-layer estimates, no TVM: the subject is the killed worker's trial.
    config = write_config(tmp_path, training={"samples": 512}, hardware={"estimator": "layers"})
    run_dir = tmp_path / "run"
    killed: list[int] = []
    stop = threading.Event()
    killer = threading.Thread(target=_kill_first_attempt, args=(run_dir, killed, stop))
    killer.start()
    ctrl_c = signal.getsignal(signal.SIGINT)
    try:
        status = main(
            [
                "search",
                "--config",
                str(config),
                "--ray-address",
                ray_cluster,
                "--workers",
                "2",
                "--trials",
                "4",
                "--run-dir",
                str(run_dir),
                "--quiet",
            ]
        )
    finally:
        stop.set()
        killer.join()
    assert status == 0
    assert killed, "no worker was killed mid-trial"
    assert signal.getsignal(signal.SIGINT) is ctrl_c  # Ray and Tune's handlers are gone

    records = RunDir(run_dir).records()
    assert [r.number for r in records] == [0, 1, 2, 3]
    assert all(r.state == "complete" and r.trained for r in records)
    attempts = (run_dir / "trials" / f"{killed[0]:04d}" / "attempts.jsonl").read_text()
    assert len(attempts.splitlines()) == 2  # killed once, re-run once, counted once
    assert (run_dir / "trials" / f"{killed[0]:04d}" / "model.pt").is_file()

    capsys.readouterr()
    assert main(["report", str(run_dir), "--format", "json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["summary"]["proposals"] == 4


def test_bad_ray_settings_are_one_line_errors(tmp_path: Path, capsys) -> None:
    config = write_config(tmp_path)
    for flags, message in (
        (["--ray-address", "head-without-port"], "search.ray_address must be auto or HOST:PORT"),
        (["--workers", "0"], "search.workers must be an int >= 1"),
        (["--cpus-per-trial", "0"], "search.cpus_per_trial must be a positive number"),
        (["--gpus-per-trial", "-1"], "search.gpus_per_trial must be a number of GPUs >= 0"),
    ):
        argv = ["search", "--config", str(config), "--run-dir", str(tmp_path / "run"), *flags]
        assert main(argv) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
