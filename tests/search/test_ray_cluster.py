"""Searches on a Ray cluster of separate ``ray start`` nodes on 127.0.0.1: a head without CPUs
(trials run on worker nodes only) and worker nodes with temporary folders of their own, in mount
namespaces where this machine's test folders (the run directory's among them) are empty and
read-only. Nothing is shared with the driver but Ray; a node lost mid-trial, a driver killed and
a node joining mid-run lose no trial and count none twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest

from autoprune.cli import main
from autoprune.search import RunDir
from tests.conftest import write_config
from tests.search.cluster import LoopbackCluster, Node, can_hide_folders

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not can_hide_folders(), reason="needs root and unshare --mount"),
]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopbackCluster]:
    os.environ["RAY_AUTH_MODE"] = "disabled"
    cluster = LoopbackCluster(Path(f"/tmp/ap-cluster-{os.getpid()}"))
    try:
        cluster.start_head(cpus=0)
        yield cluster
    finally:
        cluster.stop()
        os.environ.pop("RAY_AUTH_MODE", None)


#: Per-layer estimates, no TVM, where the subject is a trial surviving a fault.
PER_LAYER = {"estimator": "layers"}


def _workers(cluster: LoopbackCluster, hidden: Path, count: int) -> list[Node]:
    """``count`` live worker nodes that do not see ``hidden`` (started where missing)."""
    alive = [n for n in cluster.nodes[1:] if any(p.name() == "raylet" for p in n.processes())]
    while len(alive) < count:
        alive.append(cluster.add_worker(cpus=1, hidden=hidden))
    return alive


def _search(config: Path, run_dir: Path, address: str, trials: int) -> list[str]:
    return [
        "search",
        "--config",
        str(config),
        "--ray-address",
        address,
        "--workers",
        "3",
        "--trials",
        str(trials),
        "--run-dir",
        str(run_dir),
        "--quiet",
    ]


def _attempts(run_dir: Path) -> dict[int, list[dict]]:
    found = {}
    for path in sorted(run_dir.glob("trials/*/attempts.jsonl")):
        lines = path.read_text().splitlines()
        found[int(path.parent.name)] = [json.loads(line) for line in lines if line]
    return found


def _node_of(pid: int, nodes: list[Node]) -> Node | None:
    return next((n for n in nodes if pid in {p.pid for p in n.processes()}), None)


def test_a_node_lost_mid_trial_and_a_node_joining_mid_run(
    cluster: LoopbackCluster, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    # Trials long enough (1024 samples, TVM's kernel estimates) that the node which joins after
    # the kill is up before the surviving node has run them all.
    config = write_config(tmp_path, training={"samples": 1024})
    hidden = tmp_path.parent.parent
    # First in this module: the only worker nodes, one CPU each, so that the node that joins
    # after the kill is needed to run 3 trials at once.
    workers = [cluster.add_worker(cpus=1, hidden=hidden) for _ in range(2)]
    seen: dict[tuple[int, int], Node | None] = {}  # (trial, attempt) -> the node that ran it
    events: dict[str, object] = {}
    stop = threading.Event()

    def watch() -> None:
        """Kill the node of the first attempt as soon as it is recorded (its data, build and
        training still ahead), then add a node; note each attempt's node while its process
        lives."""
        while not stop.is_set():
            for number, attempts in _attempts(run_dir).items():
                for a in attempts:
                    if (number, a["attempt"]) not in seen:
                        seen[number, a["attempt"]] = _node_of(a["pid"], cluster.nodes)
            if "killed" not in events and seen:
                (number, _), node = next(iter(seen.items()))
                if node is not None and not (run_dir / f"trials/{number:04d}/model.pt").exists():
                    cluster.kill(node)
                    events["killed"] = (number, node)
                    events["joined"] = cluster.add_worker(cpus=1, hidden=hidden)
            time.sleep(0.2)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        status = main(_search(config, run_dir, cluster.address, 6))
    finally:
        stop.set()
        watcher.join()
    assert status == 0
    assert "killed" in events, f"no node was killed mid-trial; attempts: {seen}"
    killed_trial, killed_node = events["killed"]
    assert killed_node in workers

    records = RunDir(run_dir).records()
    assert [r.number for r in records] == list(range(6))  # each trial told once
    assert all(r.state == "complete" and r.trained for r in records)
    retried = _attempts(run_dir)[killed_trial]
    assert [a["attempt"] for a in retried] == [1, 2]
    assert seen[killed_trial, 2] not in (None, killed_node)  # re-run on a live node
    assert (run_dir / f"trials/{killed_trial:04d}/model.pt").is_file()
    assert events["joined"] in seen.values(), f"the joined node ran no trial: {seen}"


def test_workers_that_cannot_read_the_run_directory_complete_the_search(
    cluster: LoopbackCluster, tmp_path: Path
) -> None:
    """... and a trial that asks for a GPU runs only where Ray has one to give it."""
    run_dir = tmp_path / "run"
    config = write_config(
        tmp_path, training={"samples": 512}, search={"early_stopping": "dominated"}
    )
    hidden = tmp_path.parent.parent
    # The one node with GPUs (declared to Ray, not real): 2 trials at once there, 1 GPU each.
    workers = [cluster.add_worker(cpus=2, gpus=2, hidden=hidden)]
    assert all(not w.sees(config) for w in workers)

    search = _search(config, run_dir, cluster.address, 5)
    assert main([*search, "--gpus-per-trial", "1"]) == 0
    assert all(not w.sees(run_dir) for w in workers) and run_dir.is_dir()

    records = RunDir(run_dir).records()
    assert [r.number for r in records] == [0, 1, 2, 3, 4]
    assert all(r.state in ("complete", "pruned") for r in records)
    trained = [r for r in records if r.trained and r.cached_from is None]
    assert trained
    for record in trained:  # trained on a worker node, written by the driver's node
        weights = run_dir / "trials" / f"{record.number:04d}" / "model.pt"
        assert weights.is_file(), weights
        (attempt,) = _attempts(run_dir)[record.number]
        assert attempt["attempt"] == 1 and attempt["gpus"] in (["0"], ["1"])
    scratch = [p for w in workers for p in w.temp_dir.glob("autoprune-run-*")]
    assert scratch, "the workers keep their kernel lists and base model in their own folders"
    assert main(["report", str(run_dir), "--format", "json"]) == 0


def test_a_killed_driver_resumes_with_the_same_command(
    cluster: LoopbackCluster, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    trials = 5
    config = write_config(tmp_path, training={"samples": 512}, hardware=PER_LAYER)
    _workers(cluster, tmp_path.parent.parent, 2)
    command = [
        sys.executable,
        "-m",
        "autoprune.cli",
        *_search(config, run_dir, cluster.address, trials),
    ]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    log = tmp_path / "driver.log"
    with log.open("w") as output:
        driver = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT)
    storage = f"sqlite:///{run_dir / 'study.db'}"
    states: list[optuna.trial.TrialState] = []
    deadline = time.time() + 300
    while time.time() < deadline and driver.poll() is None:
        time.sleep(0.5)
        if not (run_dir / "run.json").exists():  # the driver has not made its tables yet
            continue
        try:
            study = optuna.load_study(study_name="autoprune", storage=storage)
            states = [t.state for t in study.get_trials()]
        except Exception:  # noqa: BLE001 - the driver is still creating the study
            continue
        if states.count(optuna.trial.TrialState.COMPLETE) >= 1 and len(states) < trials:
            if optuna.trial.TrialState.RUNNING in states:
                break
    assert driver.poll() is None, f"the search ended before its driver was killed: {states}"
    driver.send_signal(signal.SIGKILL)
    driver.wait(timeout=60)
    killed = optuna.load_study(study_name="autoprune", storage=storage).get_trials()
    finished = {
        t.number: t.datetime_complete for t in killed if t.state == optuna.trial.TrialState.COMPLETE
    }
    assert finished

    resumed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    study = optuna.load_study(study_name="autoprune", storage=storage)
    complete = [t for t in study.get_trials() if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == trials
    assert {t.number: t.datetime_complete for t in complete if t.number in finished} == finished
