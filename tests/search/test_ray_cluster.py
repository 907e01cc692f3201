"""A search on a Ray cluster whose worker nodes share nothing with the driver but Ray: separate
``ray start`` nodes on 127.0.0.1, the workers with temporary folders of their own, in mount
namespaces where the driver's folders (the run directory's among them) are empty and read-only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from autoprune.cli import main
from autoprune.search import RunDir
from tests.conftest import write_config
from tests.search.cluster import LoopbackCluster, can_hide_folders

pytestmark = pytest.mark.slow


@pytest.mark.skipif(not can_hide_folders(), reason="needs root and unshare --mount")
def test_workers_that_cannot_read_the_run_directory_complete_the_search(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    run_dir = tmp_path / "run"
    config = write_config(
        tmp_path, training={"samples": 1024}, search={"early_stopping": "dominated"}
    )
    cluster = LoopbackCluster(Path(f"/tmp/ap-nfs-{tmp_path.name[-6:]}"))
    try:
        address = cluster.start_head(cpus=0)  # trials can only run on the worker nodes
        hidden = tmp_path.parent.parent  # pytest's folder for this session's tests
        workers = [cluster.add_worker(cpus=1, hidden=hidden) for _ in range(2)]
        assert all(not w.sees(config) for w in workers)
        status = main(
            [
                "search",
                "--config",
                str(config),
                "--ray-address",
                address,
                "--workers",
                "2",
                "--trials",
                "5",
                "--run-dir",
                str(run_dir),
                "--quiet",
            ]
        )
        assert status == 0
        scratch = [p for w in workers for p in w.temp_dir.glob("autoprune-run-*")]
        assert all(not w.sees(run_dir) for w in workers) and run_dir.is_dir()
    finally:
        cluster.stop()

    records = RunDir(run_dir).records()
    assert [r.number for r in records] == [0, 1, 2, 3, 4]
    assert all(r.state in ("complete", "pruned") for r in records)
    trained = [r for r in records if r.trained and r.cached_from is None]
    assert trained
    for record in trained:  # trained on a worker node, written by the driver's node
        weights = run_dir / "trials" / f"{record.number:04d}" / "model.pt"
        assert weights.is_file(), weights
        attempts = (weights.parent / "attempts.jsonl").read_text().splitlines()
        assert [json.loads(a)["attempt"] for a in attempts] == [1]
    assert scratch, "the workers kept their kernel lists and base model in their own folders"
    assert main(["report", str(run_dir), "--format", "json"]) == 0
