"""Tests that share one tuned search on this host (tuning takes minutes): its measured latency,
``profile --measure`` on its tuning database, its TVM library, and its database damaged.

They live in one module so that the tuned run is made once, by one test process.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from autoprune.cli import main
from autoprune.hwprofiles._database import WORKLOADS_NAME
from autoprune.search import RunDir
from tests.conftest import write_config


@pytest.fixture(scope="module")
def tuned_host_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A finished 2-trial search of the tiny config on ``host``, and what it printed: latency
    measured on TVM code whose kernels were first tuned (one MetaSchedule trial each) into the
    run's database, ``<run>/tuning/host``.

    Tuning takes minutes, so the tests that need a tuned host run share this one: they read it,
    and copy what they would write to (the tuning database). Its space holds depth only: the
    candidate drops blocks of the base, so its kernels are the base's, tuned once (tuning a new
    candidate's kernels is ``tests/hwprofiles/test_hwprofiles_tune.py``'s)."""
    folder = tmp_path_factory.mktemp("host-run")
    space = {"width_ratios": [1.0], "resolution_scales": [1.0], "weight_bits": [32]}
    config = write_config(
        folder,
        space={**space, "activation_bits": [32]},
        search={"trials": 2},
        target="host",
        hardware={"tuning_trials_per_task": 1},
    )
    run_dir = folder / "run"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["search", "--config", str(config), "--run-dir", str(run_dir), "--quiet"]) == 0
    return run_dir, printed.getvalue()


@pytest.mark.slow
def test_profile_measures_tvm_and_pytorch_beside_the_estimate(
    tuned_host_run: tuple[Path, str], tmp_path: Path, capsys
) -> None:
    # A copy of the shared host run's database: its base trial is this model at this input, so
    # its kernels are tuned already (tuning them here would take minutes).
    run_dir, _ = tuned_host_run
    shutil.copytree(
        run_dir / "tuning" / "host", tmp_path / "tuning", ignore=shutil.ignore_patterns("logs")
    )
    args = [
        "profile",
        "--target",
        "host",
        "--model",
        "resnet20",
        "--input",
        "1x28x28",
        "--num-classes",
        "10",
        "--measure",
        "--tuning-trials",
        "1",
        "--tuning-dir",
        str(tmp_path / "tuning"),
        "--format",
        "json",
    ]
    capsys.readouterr()
    assert main(args) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["latency_source"] == "estimated"
    tvm_run, torch_run = record["measured"]
    assert (tvm_run["backend"], torch_run["backend"]) == ("tvm", "pytorch")
    assert tvm_run["tuned"] and (tmp_path / "tuning" / "database_tuning_record.json").exists()
    for run in (tvm_run, torch_run):
        assert run["error"] is None and run["latency_ms"] > 0 and run["source"] == "measured"
        assert run["protocol"]["repeat"] == len(run["runs_ms"])


@pytest.mark.slow
def test_host_search_uses_measured_latency_and_jetson_estimated(
    tuned_host_run: tuple[Path, str],
) -> None:
    run_dir, table = tuned_host_run  # the tiny config on host, 2 trials, 1 tuning trial a kernel
    records = [r for r in RunDir(run_dir).records() if r.state == "complete"]
    assert len(records) == 2
    assert all(r.latency_source == "measured" for r in records)
    assert "(measured)" in table and "(estimated)" in table  # latency measured, energy estimated
    # Kernels were tuned into the run's one database, and the measurements used them.
    assert (run_dir / "tuning" / "host" / "database_tuning_record.json").stat().st_size > 0
    cached = [json.loads(p.read_text()) for p in (run_dir / "hw-cache").glob("tvm-*.json")]
    assert len(cached) == len({r.candidate_hash for r in records})
    assert all(c["measurement"]["tuned"] for c in cached)


@pytest.mark.slow
def test_host_library_runs_here_and_matches_pytorch(
    tuned_host_run: tuple[Path, str], tmp_path: Path
) -> None:
    import tvm

    run_dir, _ = tuned_host_run  # a host run (shared: it tunes), read only; trial 0 is float
    out = tmp_path / "export"
    assert main(["export", str(run_dir), "--trial", "0", "--format", "tvm", "--out", str(out)]) == 0
    library = out / "trial-0000" / "model.so"
    assert library.is_file()
    info = json.loads((out / "trial-0000" / "model.json").read_text())
    assert info["export_target"] == "host" and info["files"][0]["form"] == "float"

    record = RunDir(run_dir).records()[0]
    model = RunDir(run_dir).trained_model(record)
    x = torch.randn(1, *record.candidate["input_shape"])
    with torch.no_grad():
        expected = model(x).numpy()
    device = tvm.cpu()
    vm = tvm.relax.VirtualMachine(tvm.runtime.load_module(str(library)), device)
    result = vm["main"](tvm.runtime.tensor(x.numpy(), device))
    got = (result[0] if not hasattr(result, "numpy") else result).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_a_search_refuses_a_damaged_tuning_database_in_one_line(
    tuned_host_run: tuple[Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(tuned_host_run[0], run_dir)  # run.json names the study relatively
    workloads = run_dir / "tuning" / "host" / WORKLOADS_NAME
    data = workloads.read_bytes()
    workloads.write_bytes(data[: len(data) // 2])  # cut in the middle of a line
    before = {p: p.read_bytes() for p in workloads.parent.iterdir() if p.is_file()}
    config = tuned_host_run[0].parent / "tiny.yaml"
    assert main(["search", "--config", str(config), "--run-dir", str(run_dir), "--quiet"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and str(workloads) in error and "damaged" in error, error
    assert {p: p.read_bytes() for p in workloads.parent.iterdir() if p.is_file()} == before
