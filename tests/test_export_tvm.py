"""``autoprune export --format tvm``: a library for the run's target. (The library of a tuned host
run, loaded and run here: ``tests/test_tuned_host.py``.)"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from autoprune.cli import main
from autoprune.search import RunDir
from tests.conftest import write_config

FLOAT_SPACE = {"weight_bits": [32], "activation_bits": [32], "resolution_scales": [1.0]}


def _base_run(folder: Path, target: str) -> Path:
    config = write_config(folder, space=FLOAT_SPACE, search={"trials": 1}, target=target)
    run_dir = folder / "run"
    assert main(["search", "--config", str(config), "--run-dir", str(run_dir), "--quiet"]) == 0
    return run_dir


@pytest.mark.slow
def test_jetson_library_is_cross_built_for_aarch64_with_cuda(tmp_path: Path) -> None:
    if shutil.which("nvcc") is None:
        pytest.skip("nvcc (CUDA) is needed to build kernels for the Jetson GPU")
    run_dir = _base_run(tmp_path, "jetson")
    out = tmp_path / "export"
    assert main(["export", str(run_dir), "--trial", "0", "--format", "tvm", "--out", str(out)]) == 0
    folder = out / "trial-0000"
    if shutil.which("aarch64-linux-gnu-g++"):
        data = (folder / "model.so").read_bytes()
        assert data[:4] == b"\x7fELF" and int.from_bytes(data[18:20], "little") == 183  # aarch64
        # The CUDA module is embedded beside the host code, with the GPU kernels of the model.
        assert b"cuda" in data and b"conv2d_kernel" in data
    else:
        assert (folder / "model.tar").is_file()


@pytest.mark.slow
def test_a_jetson_run_exported_for_host_runs_in_tvm_and_matches_pytorch(
    tmp_path: Path, capsys
) -> None:
    """``--target host`` builds a run's quantized trial for this machine: TVM's library computes
    the fake-quantized graph in float kernels (TVM 0.27 imports no quantize ops) and says so."""
    import tvm

    config = write_config(
        tmp_path, space={"weight_bits": [8], "activation_bits": [8]}, search={"trials": 1}
    )
    run_dir = tmp_path / "run"
    assert main(["search", "--config", str(config), "--run-dir", str(run_dir), "--quiet"]) == 0
    out = tmp_path / "export"
    args = ["export", str(run_dir), "--trial", "0", "--format", "tvm", "--target", "host"]
    capsys.readouterr()
    assert main([*args, "--out", str(out)]) == 0
    assert "float kernels" in capsys.readouterr().out
    folder = out / "trial-0000"
    info = json.loads((folder / "model.json").read_text())
    assert info["export_target"] == "host" and info["files"][0]["form"] == "fake-quantized"

    record = RunDir(run_dir).records()[0]
    model = RunDir(run_dir).trained_model(record)
    assert any(getattr(m, "weight_bits", 32) == 8 for m in model.modules())
    x = torch.randn(1, *record.candidate["input_shape"])
    with torch.no_grad():
        expected = model(x).numpy()
    device = tvm.cpu()
    vm = tvm.relax.VirtualMachine(tvm.runtime.load_module(str(folder / "model.so")), device)
    result = vm["main"](tvm.runtime.tensor(x.numpy(), device))
    got = (result[0] if not hasattr(result, "numpy") else result).numpy()
    # TVM's kernels sum in another order: a value on a rounding boundary may move one level,
    # which moves a logit by about a level's step times its weight (seen on an AVX2 CPU: up to
    # 4.8e-3, median 1.2e-3, on logits of up to 0.46).
    np.testing.assert_allclose(got, expected, atol=1e-2)
    assert np.median(np.abs(got - expected)) < 5e-3
    assert got.argmax() == expected.argmax()
