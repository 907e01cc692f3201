"""The search's estimate: a candidate lowered through TVM, bit-widths put back per kernel."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from torch import nn

from autoprune.hwprofiles import (
    KernelCost,
    _lowered,
    estimate_from_kernels,
    estimate_with_tvm,
    fused_kernels,
    import_to_relax,
    kernel_bits,
    load_profile,
)
from autoprune.spaces import (
    LayerCost,
    QuantConv2d,
    SearchSpace,
    build_model,
    count_costs,
    create_model,
)

SPACE = SearchSpace(
    model="resnet20",
    num_classes=10,
    in_channels=1,
    input_shape=(1, 16, 16),
    width_ratios=(0.5, 1.0),
    depth=False,
    resolution_scales=(1.0,),
    weight_bits=(8, 32),
    activation_bits=(8, 32),
    channel_multiple=8,
)


@pytest.fixture(scope="module")
def largest_kernels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A kernel cache holding the largest architecture, lowered once for the module: its float
    and int8 candidates share it, so the estimates below are cache hits (nothing writes to it)."""
    folder = tmp_path_factory.mktemp("kernels")
    largest = SPACE.largest()
    estimate_with_tvm(largest, largest.input_shape, load_profile("jetson"), cache_dir=folder)
    assert len(list(folder.glob("kernels-*.json"))) == 1
    return folder


def test_float_candidate_is_the_kernel_estimate_of_its_module(largest_kernels: Path) -> None:
    candidate = SPACE.largest()
    profile = load_profile("jetson")
    estimate = estimate_with_tvm(
        candidate, candidate.input_shape, profile, cache_dir=largest_kernels
    )
    # the module lowered here, afresh, against the kernels the estimate used
    module = build_model(candidate, seed=0)
    kernels = fused_kernels(import_to_relax(module, candidate.input_shape))
    assert (
        estimate.method
        == f"per fused TVM kernel ({len(kernels)} kernels) over profile jetson-orin-nano"
    )
    assert estimate.latency_ms == pytest.approx(estimate_from_kernels(kernels, profile).latency_ms)


def test_int8_candidate_runs_its_kernels_at_int8_where_the_device_has_int8(
    largest_kernels: Path,
) -> None:
    float_candidate = SPACE.largest()
    int8 = SPACE.candidate(
        {d.name: (8 if "bits" in d.name else max(d.choices)) for d in SPACE.decisions}
    )
    for name, precision in (("jetson-orin-nano", "int8"), ("jetson-nano", "fp16")):
        profile = load_profile(name)
        f = estimate_with_tvm(
            float_candidate, float_candidate.input_shape, profile, cache_dir=largest_kernels
        )
        q = estimate_with_tvm(int8, int8.input_shape, profile, cache_dir=largest_kernels)
        assert "not matched" not in q.method
        assert {row.precision for row in q.layers} == {precision}  # Nano: no fast int8 path
        assert q.latency_ms < f.latency_ms
        compute_ratio = sum(r.compute_ms for r in q.layers) / sum(r.compute_ms for r in f.layers)
        fp32, low = (
            profile.peak_macs_per_s[p] * profile.efficiency(p) for p in ("fp32", precision)
        )
        assert compute_ratio == pytest.approx(fp32 / low)


def test_kernel_bits_follow_the_layer_with_the_same_macs_and_give_up_on_a_stranger() -> None:
    conv = KernelCost("fused_conv2d_add_relu", 0, 100, 4, 4, 4, "float32")
    pool = KernelCost("max_pool2d", 0, 0, 4, 4, 0, "float32")
    fc = KernelCost("matmul", 0, 10, 4, 4, 4, "float32")
    layers = [
        LayerCost("fc", "linear", 10, 1, 4, 8, 1, 1, 1),
        LayerCost("conv", "conv2d", 100, 1, 8, 16, 1, 1, 1),
    ]
    assert kernel_bits([conv, pool, fc], layers) == [(8, 16), (16, 16), (4, 8)]
    stranger = dataclasses.replace(fc, macs=11)
    assert kernel_bits([conv, stranger], layers) is None


def test_kernel_lists_are_cached_per_architecture(tmp_path: Path, monkeypatch) -> None:
    candidate = SPACE.smallest()
    profile = load_profile("jetson")
    first = estimate_with_tvm(candidate, candidate.input_shape, profile, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("kernels-*.json"))) == 1

    def no_tvm(*args, **kwargs):
        raise AssertionError("lowered again despite the cache")

    monkeypatch.setattr(_lowered, "fused_kernels", no_tvm)
    again = estimate_with_tvm(candidate, candidate.input_shape, profile, cache_dir=tmp_path)
    assert again == first


def test_kernel_lists_are_shared_between_runs_and_an_unwritable_shared_folder_is_skipped(
    tmp_path: Path, monkeypatch, caplog
) -> None:
    candidate, profile = SPACE.smallest(), load_profile("jetson")
    shared, first_run, second_run = tmp_path / "shared", tmp_path / "run1", tmp_path / "run2"
    first = estimate_with_tvm(
        candidate, candidate.input_shape, profile, cache_dir=first_run, shared_cache_dir=shared
    )
    assert len(list(shared.glob("kernels-*.json"))) == len(list(first_run.glob("*"))) == 1

    lowered: list[object] = []
    real = _lowered.fused_kernels
    monkeypatch.setattr(_lowered, "fused_kernels", lambda mod: lowered.append(mod) or real(mod))
    again = estimate_with_tvm(
        candidate, candidate.input_shape, profile, cache_dir=second_run, shared_cache_dir=shared
    )
    assert again == first and not lowered  # another run: read from the shared folder
    assert len(list(second_run.glob("kernels-*.json"))) == 1  # and kept in the run's own

    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the shared folder would be")
    third = estimate_with_tvm(
        candidate, candidate.input_shape, profile, cache_dir=None, shared_cache_dir=blocked
    )
    assert third == first and len(lowered) == 1
    assert "cannot keep the kernel list" in caplog.text
    assert blocked.read_text() == "a file where the shared folder would be"


def test_a_model_tvm_cannot_import_falls_back_to_the_layer_estimate_and_says_so() -> None:
    model = nn.Sequential(QuantConv2d(1, 8, 3, weight_bits=8, activation_bits=8), nn.ReLU())
    estimate = estimate_with_tvm(model, (1, 8, 8), load_profile("jetson"))
    assert "TVM lowering failed" in estimate.method
    assert estimate.latency_ms > 0 and estimate.latency_source == "estimated"
    assert count_costs(model, (1, 8, 8)).macs > 0


@pytest.mark.parametrize(
    ("model", "shape"), [("resnet20", (1, 16, 16)), ("mobilenet_v2", (3, 32, 32))]
)
def test_kernels_imported_without_decompositions_cost_what_the_decomposed_import_does(
    model: str, shape: tuple[int, int, int], monkeypatch
) -> None:
    module = create_model(model, num_classes=10, in_channels=shape[0]).eval()
    fast = _lowered.lowered_kernels(module, shape)
    decomposed = fused_kernels(import_to_relax(module, shape))
    assert len(fast) == len(decomposed) > 10
    unnamed = [dataclasses.replace(k, name="") for k in fast]
    assert unnamed == [dataclasses.replace(k, name="") for k in decomposed]
    assert [k.name for k in fast] != [k.name for k in decomposed]  # the other import did run
    if model != "resnet20":
        return  # the fallback once, on the small model

    real_export, real_translate = _lowered.export_program, _lowered.translate
    exports = []

    def export_program(module, shape):
        exports.append(shape)
        return real_export(module, shape)

    def untranslatable(exported, *, decompose=True):
        if not decompose:
            raise AssertionError("Unsupported function types ['an_op_without_a_converter']")
        return real_translate(exported, decompose=True)

    monkeypatch.setattr(_lowered, "export_program", export_program)
    monkeypatch.setattr(_lowered, "translate", untranslatable)
    assert _lowered.lowered_kernels(module, shape) == decomposed  # decomposed, then translated
    assert exports == [shape]  # exported once, translated twice
