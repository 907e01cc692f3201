"""Fitting a profile to published rows: recovery of known factors, the rows file, overlays."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import pytest
import yaml

from autoprune.errors import ConfigError
from autoprune.hwprofiles import (
    CalibrationRow,
    KernelCost,
    estimate_from_kernels,
    fit_profile,
    load_profile,
    load_rows,
    profile_file,
)
from autoprune.hwprofiles._calibrate import predict_latency_ms
from autoprune.hwprofiles._registry import overlay_path

TRUE = {
    "compute_efficiency.fp16": 0.3,
    "memory_efficiency": 0.5,
    "kernel_launch_overhead_us": 20.0,
    "kernel_class_efficiency.depthwise": 0.4,
    "kernel_class_efficiency.pointwise": 1.5,
    "kernel_class_efficiency.conv3x3": 2.0,
}


def _kernel(rng: random.Random, kind: str, scale: float) -> KernelCost:
    macs = int(rng.uniform(0.2, 3.0) * scale * (0.05 if kind == "depthwise" else 1.0))
    activations = int(rng.uniform(0.5, 4.0) * 1e5)
    weights = int(rng.uniform(0.01, 2.0) * 1e5) if kind != "depthwise" else 3_000
    name = "fused_matmul_add" if kind == "fc" else "fused_conv2d_add_relu"
    return KernelCost(
        name, 2 * macs, macs, 4 * activations, 4 * activations // 2, 4 * weights, "float32", kind
    )


def _synthetic_models(count: int = 10) -> dict[tuple[str, int, tuple[int, int]], list]:
    """Kernel lists from large dense nets to small depthwise ones (compute, memory and launch
    bound kernels all appear)."""
    rng = random.Random(0)
    models = {}
    for m in range(count):
        scale = 10 ** rng.uniform(6.5, 9.0)
        kinds = rng.choice(
            [
                ["conv", "conv3x3", "conv3x3"],
                ["depthwise", "pointwise"] * 4,
                ["conv3x3", "pointwise"],
            ]
        )
        kernels = [_kernel(rng, kind, scale) for kind in kinds * rng.randint(2, 6)]
        kernels.append(_kernel(rng, "fc", 1e6))
        models[(f"net{m}", 1000, (224, 224))] = kernels
    return models


def _row(
    line: int,
    board: str,
    workload: tuple,
    precision: str,
    runtime: str,
    ms: float,
    source: str = "synthetic",
):
    return CalibrationRow(
        line,
        board,
        workload[0],
        workload[1],
        workload[2],
        precision,
        runtime,
        ms,
        None,
        source,
        "generated from known factors",
    )


def _profile_with(values: dict[str, float]):
    base = load_profile("jetson-orin-nano", calibrated=False)
    efficiency = dict(base.compute_efficiency)
    classes = dict(base.kernel_class_efficiency)
    scalars = {}
    for name, value in values.items():
        kind, _, key = name.partition(".")
        if kind == "compute_efficiency":
            efficiency[key] = value
        elif kind == "kernel_class_efficiency":
            classes[key] = value
        else:
            scalars[kind] = value
    return dataclasses.replace(
        base,
        compute_efficiency=efficiency,
        kernel_class_efficiency=classes,
        kernel_class_aliases={},  # every class its own factor, to recover
        runtime="tensorrt",
        **scalars,
    )


def test_the_fast_prediction_is_the_per_kernel_estimate() -> None:
    profile = _profile_with(TRUE)
    for kernels in _synthetic_models(4).values():
        for precision in ("fp32", "fp16", "int8"):
            expected = estimate_from_kernels(kernels, profile, precision=precision).latency_ms
            assert predict_latency_ms(kernels, profile, precision) == pytest.approx(expected)


def test_a_fit_on_synthetic_rows_recovers_the_factors_that_made_them() -> None:
    truth = _profile_with(TRUE)
    models = _synthetic_models()
    rows = []
    for i, (workload, kernels) in enumerate(models.items()):
        ms = predict_latency_ms(kernels, truth, "fp16")
        rows.append(_row(2 + 3 * i, truth.name, workload, "fp16", "tensorrt", ms))
        rows.append(_row(3 + 3 * i, truth.name, workload, "fp16", "pytorch", 2.5 * ms))
        if i % 2:  # a second publisher of the same runtime, 1.4x slower on everything
            rows.append(_row(4 + 3 * i, truth.name, workload, "fp16", "tensorrt", 1.4 * ms, "B"))
    start = _profile_with(
        {
            "compute_efficiency.fp16": 0.1,
            "memory_efficiency": 0.8,
            "kernel_launch_overhead_us": 5.0,
        }
    )
    fit = fit_profile(start, rows, models)
    for name, value in TRUE.items():
        assert fit.fitted[name] == pytest.approx(value, rel=0.05), name
    # 2.5x the whole latency: 2.5x the roofline part and 2.5x the per-kernel overhead
    assert fit.runtime_factors["runtime_factor.pytorch"] == pytest.approx(2.5, rel=0.05)
    assert fit.runtime_factors["runtime_overhead_us.pytorch"] == pytest.approx(50.0, rel=0.05)
    assert fit.reference_setup == "synthetic"
    assert fit.runtime_factors["setup_factor.B"] == pytest.approx(1.4, rel=0.05)
    assert max(abs(r) for r in fit.residuals_percent.values()) < 2.0
    assert fit.cross_validation["median_ape_percent"] < 5.0
    assert fit.cross_validation["kendall_tau"] > 0.9
    assert fit.profile.expected_error == pytest.approx(
        fit.cross_validation["median_ape_percent"] / 100, abs=1e-3
    )
    # no int8 row and no power figure: those factors stay assumed, each with its reason; int8
    # moves as fp16 moved
    assert "compute_efficiency.int8" in fit.not_fitted
    assert fit.derived["compute_efficiency.int8"] / start.compute_efficiency["int8"] == (
        pytest.approx(fit.fitted["compute_efficiency.fp16"] / start.compute_efficiency["fp16"])
    )
    assert "published power" in fit.not_fitted["idle_power_w"]


def test_rows_of_another_runtime_alone_are_refused() -> None:
    models = _synthetic_models(2)
    rows = [_row(2, "b", w, "fp16", "pytorch", 3.0) for w in models]
    with pytest.raises(ConfigError, match="no calibration row of runtime 'tensorrt'"):
        fit_profile(_profile_with({}), rows, models)


def test_the_built_in_rows_parse_and_cite_their_sources() -> None:
    rows = load_rows()
    assert len(rows) >= 200
    assert all(r.source and r.method and r.latency_ms > 0 for r in rows)
    boards = {r.board for r in rows}
    assert "jetson-orin-nano" in boards and "raspberry-pi-4" in boards
    for board in boards:
        load_profile(board)  # every row names a real profile


def test_a_malformed_row_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    header = "board,model,classes,input,batch,precision,runtime,latency_ms,power_w,source,method"
    path.write_text(f"{header}\njetson-nano,resnet18,1000,224x224,1,fp64,tensorrt,3,,s,m\n")
    with pytest.raises(ConfigError, match=r"rows.csv, line 2: precision 'fp64'"):
        load_rows(path)


def test_a_user_profile_gets_its_calibration_from_beside_it(tmp_path: Path) -> None:
    data = yaml.safe_load(profile_file("jetson-orin-nano").read_text())
    data.update(name="mine", aliases=[])
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(data))
    overlay_path(path).write_text(
        yaml.safe_dump(
            {
                "fitted": {"compute_efficiency.fp16": 0.05, "memory_efficiency": 0.33},
                "not_fitted": {"compute_efficiency.int8": "no row runs at int8"},
                "expected_error": 0.12,
                "rows": [2, 3],
            }
        )
    )
    profile = load_profile(path)
    assert profile.compute_efficiency["fp16"] == 0.05 and profile.memory_efficiency == 0.33
    assert profile.expected_error == 0.12 and profile.calibration["rows"] == (2, 3)
    assert "memory_efficiency" not in profile.assumed
    assert "no row runs at int8" in profile.assumed["compute_efficiency.int8"]
    assert load_profile(path, calibrated=False).expected_error is None


@pytest.mark.slow
def test_calibrate_command_writes_the_fit_beside_a_user_profile_and_profile_prints_its_error(
    tmp_path: Path, capsys
) -> None:
    from autoprune.cli import main

    data = yaml.safe_load(profile_file("jetson-orin-nano").read_text())
    data.update(name="mine", aliases=[])
    profile_path = tmp_path / "mine.yaml"
    profile_path.write_text(yaml.safe_dump(data))
    header = "board,model,classes,input,batch,precision,runtime,latency_ms,power_w,source,method"
    published = [
        ("resnet18", 0.9),
        ("mobilenet_v2", 0.7),
        ("squeezenet1_1", 0.5),
        ("resnet34", 1.6),
    ]
    rows = tmp_path / "rows.csv"
    rows.write_text(
        header
        + "\n"
        + "".join(
            f"mine,{m},10,32x32,1,fp16,tensorrt,{ms},,a test,made up\n" for m, ms in published
        )
    )
    args = ["--target", str(profile_path), "--rows", str(rows), "--cache-dir", str(tmp_path / "k")]
    assert main(["calibrate", *args, "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "fitted   compute_efficiency.fp16" in out and "median error" in out
    overlay = yaml.safe_load((tmp_path / "mine.calibration.yaml").read_text())
    assert overlay["rows"] == [2, 3, 4, 5] and overlay["expected_error"] is not None
    error = round(overlay["expected_error"] * 100)

    model = ["--model", "resnet18", "--input", "3x32x32", "--num-classes", "10"]
    assert main(["profile", "--target", str(profile_path), *model, "--precision", "fp16"]) == 0
    assert f"(estimated, +-{error} %" in capsys.readouterr().out

    empty = tmp_path / "none.csv"
    empty.write_text(header + "\n")
    assert main(["calibrate", "--target", str(profile_path), "--rows", str(empty)]) == 2
    assert "no calibration row for mine" in capsys.readouterr().err


def test_every_factor_of_every_built_in_profile_is_fitted_or_assumed_with_a_reason() -> None:
    from autoprune.hwprofiles import list_profiles

    for profile in list_profiles():
        for factor, provenance in profile.factor_provenance().items():
            assert provenance.startswith(("fitted to calibration/rows.csv lines", "assumed: "))
            assert "no reason given" not in provenance, (profile.name, factor)


def test_a_precision_runs_at_the_narrowest_native_one_that_covers_it() -> None:
    from autoprune.hwprofiles import estimate_with_tvm
    from autoprune.spaces import create_model

    model = create_model("resnet18", num_classes=10, in_channels=3).eval()

    def latency(target: str, precision: str) -> tuple[float, set[str]]:
        estimate = estimate_with_tvm(model, (3, 32, 32), load_profile(target), precision=precision)
        return estimate.latency_ms, {layer.precision for layer in estimate.layers}

    # the Nano has no int8: int8 runs at fp16, no faster; the Orin Nano runs int8 natively
    assert latency("jetson-nano", "int8") == latency("jetson-nano", "fp16")
    assert latency("jetson-nano", "int8")[1] == {"fp16"}
    assert latency("jetson-orin-nano", "int8")[0] < latency("jetson-orin-nano", "fp16")[0]
    # the Raspberry Pi 4 has no fp16 arithmetic: fp16 runs at fp32
    assert latency("raspberry-pi-4", "fp16") == latency("raspberry-pi-4", "fp32")
