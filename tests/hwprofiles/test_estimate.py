"""The roofline latency and analytic energy estimate, against answers computed by hand."""

from __future__ import annotations

import json
from typing import Any

import pytest

from autoprune.errors import ConfigError
from autoprune.hwprofiles import (
    DeviceProfile,
    HardwareEstimate,
    estimate_hardware,
    list_profiles,
    load_profile,
)
from autoprune.spaces import CostReport, LayerCost

# A device with round numbers so that every answer can be worked out by hand.
ROUND = DeviceProfile.from_dict(
    {
        "name": "round",
        "description": "hand-checkable test device",
        "kind": "gpu",
        "tvm_target": "llvm",
        "peak_macs_per_s": {"fp32": 1e9, "fp16": 2e9, "int8": 4e9},
        "memory_bandwidth_bytes_per_s": 1e9,
        "native_precisions": ["fp32", "fp16", "int8"],
        "bit_widths": [4, 8, 16, 32],
        "channel_multiple": 8,
        "compute_efficiency": 0.5,
        "memory_efficiency": 0.5,
        "kernel_launch_overhead_us": 10.0,
        "idle_power_w": 1.0,
        "max_power_w": 10.0,
        "energy_scale": 1.0,
        "sources": ["made up for the tests"],
    }
)


def layer(
    op: str = "conv2d",
    *,
    macs: int = 0,
    inputs: int = 0,
    outputs: int = 0,
    weights: int = 0,
    wbits: int = 32,
    abits: int = 32,
    name: str = "l",
) -> LayerCost:
    return LayerCost(
        name=name,
        op=op,
        macs=macs,
        params=weights,
        weight_bits=wbits,
        activation_bits=abits,
        input_elements=inputs,
        output_elements=outputs,
        weight_elements=weights,
    )


def report(*layers: LayerCost) -> CostReport:
    return CostReport(
        input_shape=(1, 28, 28),
        macs=sum(x.macs for x in layers),
        params=sum(x.params for x in layers),
        size_bytes=sum(x.weight_elements * x.weight_bits // 8 for x in layers),
        layers=tuple(layers),
    )


def conv3x3(wbits: int = 32, abits: int = 32, name: str = "layer1.0.conv1") -> LayerCost:
    # 64 -> 64 channels, 3x3, 56x56: a compute-bound conv on every profile.
    return layer(
        macs=56 * 56 * 64 * 64 * 9,
        inputs=64 * 56 * 56,
        outputs=64 * 56 * 56,
        weights=64 * 64 * 9,
        wbits=wbits,
        abits=abits,
        name=name,
    )


def fc(wbits: int = 32, abits: int = 32) -> LayerCost:
    # 4096 -> 4096 linear at batch 1: one MAC per weight, memory-bound on every profile.
    return layer("linear", macs=4096 * 4096, inputs=4096, outputs=4096, weights=4096 * 4096,
                 wbits=wbits, abits=abits, name="fc")  # fmt: skip


def one(cost: LayerCost, profile: DeviceProfile = ROUND) -> Any:
    return estimate_hardware(report(cost), profile).layers[0]


def test_compute_bound_layer_by_hand() -> None:
    est = one(layer(macs=1_000_000, inputs=1000, outputs=1000, weights=1000))
    # compute: 1e6 MAC / (1e9 MAC/s * 0.5) = 2 ms
    # memory: 3000 elements * 4 B / (1e9 B/s * 0.5) = 0.024 ms
    assert est.precision == "fp32" and est.bound == "compute"
    assert est.compute_ms == pytest.approx(2.0)
    assert est.memory_ms == pytest.approx(0.024)
    assert est.latency_ms == pytest.approx(2.0 + 0.010)  # + 10 us launch overhead
    # energy: 1e6 * (3.7 + 0.9) pJ + 2e6 SRAM reads * 5 pJ + 12000 B * 160 pJ/B, plus 1 W * 2.01 ms
    dynamic_pj = 1e6 * 4.6 + 2e6 * 5.0 + 12_000 * 160.0
    assert est.dram_energy_mj == pytest.approx(12_000 * 160.0 * 1e-9)
    assert est.static_energy_mj == pytest.approx(2.01)
    assert est.energy_mj == pytest.approx(dynamic_pj * 1e-9 + 2.01)


def test_memory_bound_layer_by_hand() -> None:
    est = one(layer("pool", inputs=1_000_000, outputs=250_000))
    # 1.25e6 elements * 4 B = 5e6 B / (1e9 B/s * 0.5) = 10 ms, + 10 us launch; no MACs
    assert est.bound == "memory"
    assert est.compute_ms == 0.0
    assert est.latency_ms == pytest.approx(10.01)
    assert est.dram_energy_mj == pytest.approx(5e6 * 160.0 * 1e-9)  # 0.8 mJ
    assert est.energy_mj == pytest.approx(0.8 + 10.01)


def test_launch_overhead_charged_per_kernel_but_not_for_fused_elementwise() -> None:
    elements = {"inputs": 1000, "outputs": 1000}
    tiny_conv = one(layer(macs=10, **elements))
    pool = one(layer("pool", **elements))
    relu = one(layer("relu", **elements))
    bn = one(layer("batchnorm", weights=4, **elements))
    memory_ms = 8000 / 5e8 * 1e3  # 0.016 ms
    assert relu.latency_ms == pytest.approx(memory_ms)
    assert bn.latency_ms == pytest.approx((8000 + 16) / 5e8 * 1e3)
    assert pool.latency_ms == pytest.approx(memory_ms + 0.010)
    assert tiny_conv.latency_ms == pytest.approx(memory_ms + 0.010)


def test_model_totals_are_sums_over_layers_and_labelled_estimated() -> None:
    costs = report(conv3x3(), layer("batchnorm", inputs=200_704, outputs=200_704, weights=128),
                   layer("relu", inputs=200_704, outputs=200_704), fc())  # fmt: skip
    est = estimate_hardware(costs, load_profile("jetson"))
    assert est.latency_source == "estimated" and est.energy_source == "estimated"
    assert est.method == "per-layer roofline over profile jetson-orin-nano"
    assert est.profile == "jetson-orin-nano"
    assert [x.name for x in est.layers] == [x.name for x in costs.layers]
    assert est.latency_ms == pytest.approx(sum(x.latency_ms for x in est.layers))
    assert est.energy_mj == pytest.approx(sum(x.energy_mj for x in est.layers))
    assert all(x.latency_ms > 0 and x.energy_mj > 0 for x in est.layers)


def test_estimate_round_trips_through_json() -> None:
    est = estimate_hardware(report(conv3x3(8, 8), fc()), load_profile("raspberry-pi-4"))
    again = HardwareEstimate.from_dict(json.loads(json.dumps(est.to_dict())))
    assert again == est


@pytest.mark.parametrize(
    ("profile", "wbits", "abits", "expected"),
    [
        ("jetson-orin-nano", 32, 32, "fp32"),
        ("jetson-orin-nano", 16, 16, "fp16"),
        ("jetson-orin-nano", 8, 8, "int8"),
        ("jetson-orin-nano", 4, 8, "int8"),
        ("jetson-orin-nano", 8, 16, "fp16"),
        ("jetson-orin-nano", 8, 32, "fp32"),  # weight-only int8 still computes in fp32
        ("jetson-nano", 8, 8, "fp16"),  # no int8 path: next wider native precision
        ("jetson-nano", 4, 4, "fp16"),
        ("raspberry-pi-4", 16, 16, "fp32"),  # no fp16 on the A72
        ("raspberry-pi-4", 8, 8, "int8"),
    ],
)
def test_precision_is_the_narrowest_native_one_that_covers_the_bits(
    profile: str, wbits: int, abits: int, expected: str
) -> None:
    assert one(conv3x3(wbits, abits), load_profile(profile)).precision == expected


def test_int8_faster_than_fp32_on_orin_nano_but_not_on_jetson_nano() -> None:
    orin, nano = load_profile("jetson-orin-nano"), load_profile("jetson-nano")
    orin_ms = {b: one(conv3x3(b, b), orin).latency_ms for b in (32, 16, 8)}
    nano_ms = {b: one(conv3x3(b, b), nano).latency_ms for b in (32, 16, 8)}
    assert orin_ms[8] < orin_ms[16] < orin_ms[32]
    compute_ms = {b: one(conv3x3(b, b), orin).compute_ms for b in (32, 8)}
    assert compute_ms[32] / compute_ms[8] > 10  # CUDA-core fp32 vs tensor-core int8
    # Jetson Nano: int8 runs at fp16, so it gains nothing over fp16 (fp16 is 2x fp32 on sm_53,
    # times the ratio of the efficiencies each precision's rows were fitted to).
    assert nano_ms[8] == pytest.approx(nano_ms[16])
    assert nano.peak_macs_per_s["fp16"] == 2 * nano.peak_macs_per_s["fp32"]
    nano_compute = {b: one(conv3x3(b, b), nano).compute_ms for b in (32, 16)}
    efficiency = nano.compute_efficiency
    assert nano_compute[32] / nano_compute[16] == pytest.approx(
        2.0 * efficiency["fp16"] / efficiency["fp32"]
    )


@pytest.mark.parametrize("profile", list_profiles(), ids=lambda p: p.name)
def test_four_bits_no_faster_than_eight_but_smaller_energy(profile: DeviceProfile) -> None:
    for make in (conv3x3, fc):
        four, eight = one(make(4, 4), profile), one(make(8, 8), profile)
        assert four.latency_ms == pytest.approx(eight.latency_ms)
        assert four.precision == eight.precision
        # Packed 4-bit tensors cross the DRAM bus in half the bytes: modelled energy only.
        assert four.dram_energy_mj < eight.dram_energy_mj
        assert four.energy_mj < eight.energy_mj
        assert one(make(4, 8), profile).latency_ms == pytest.approx(eight.latency_ms)


def test_memory_bound_layer_energy_is_positive_and_dominated_by_dram() -> None:
    est = one(fc(), load_profile("jetson-orin-nano"))
    assert est.bound == "memory"
    dynamic = est.energy_mj - est.static_energy_mj
    assert est.energy_mj > 0 and dynamic > 0
    assert est.dram_energy_mj > 0.9 * dynamic
    # 4096*4096 weights + 8192 activations, 4 B each, 160 pJ/B at 45 nm, scaled by 0.18 (8 nm)
    expected_dram_mj = (4096 * 4096 + 8192) * 4 * 160e-12 * 1e3 * 0.18
    assert est.dram_energy_mj == pytest.approx(expected_dram_mj)


def test_int8_uses_less_energy_than_fp32_for_a_compute_bound_conv() -> None:
    orin = load_profile("jetson-orin-nano")
    assert one(conv3x3(8, 8), orin).energy_mj < one(conv3x3(16, 16), orin).energy_mj
    assert one(conv3x3(16, 16), orin).energy_mj < one(conv3x3(32, 32), orin).energy_mj


@pytest.mark.parametrize("bits", [0, 33, 64])
def test_bit_width_out_of_range_is_a_config_error(bits: int) -> None:
    with pytest.raises(ConfigError, match=rf"layer 'layer1.0.conv1': weight_bits={bits}"):
        one(conv3x3(wbits=bits))
