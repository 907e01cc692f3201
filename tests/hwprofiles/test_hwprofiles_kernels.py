"""Per-fused-kernel costs from TVM's Relax fusion, checked against analytic counts."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from autoprune.errors import UnknownNameError
from autoprune.hwprofiles import DeviceProfile, HardwareEstimate, import_to_relax, load_profile
from autoprune.hwprofiles._kernels import KernelCost, estimate_from_kernels, fused_kernels
from autoprune.spaces import count_costs, create_model

F32 = 4  # bytes per float32 element

# Round numbers so that the roofline can be worked out by hand (as in test_estimate.py).
ROUND = DeviceProfile.from_dict(
    {
        "name": "round",
        "description": "hand-checkable test device",
        "kind": "gpu",
        "tvm_target": "llvm",
        "peak_macs_per_s": {"fp32": 1e9, "fp16": 2e9, "int8": 4e9},
        "memory_bandwidth_bytes_per_s": 1e9,
        "native_precisions": ["fp32", "fp16", "int8"],
        "bit_widths": [8, 16, 32],
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


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def _kernels(model: nn.Module, shape: tuple[int, int, int]) -> list[KernelCost]:
    torch.manual_seed(0)
    return fused_kernels(import_to_relax(model, shape))


@pytest.fixture(scope="module")
def resnet20_16() -> tuple[nn.Module, list[KernelCost]]:
    model = create_model("resnet20", num_classes=10, in_channels=1)
    return model, _kernels(model, (1, 16, 16))


# --------------------------------------------------------------------------------------------
# counting one kernel
# --------------------------------------------------------------------------------------------


def test_grouped_conv_macs_and_bytes_match_the_analytic_counts() -> None:
    conv = nn.Conv2d(4, 8, 3, stride=2, padding=1, groups=2, bias=False)
    (kernel,) = _kernels(conv, (4, 9, 9))
    out_elements = 8 * 5 * 5
    assert kernel.macs == out_elements * (4 // 2) * 3 * 3
    assert kernel.bytes_in == 4 * 9 * 9 * F32
    assert kernel.bytes_out == out_elements * F32
    assert kernel.bytes_weights == 8 * 2 * 3 * 3 * F32
    assert kernel.bytes_moved == kernel.bytes_in + kernel.bytes_out + kernel.bytes_weights
    assert kernel.dtype == "float32"
    assert kernel.op == "conv2d"
    # TVM counts a MAC as two FLOPs; this kernel has nothing else.
    assert kernel.flops == 2 * kernel.macs


def test_depthwise_conv_and_linear_macs() -> None:
    depthwise = nn.Conv2d(6, 6, 3, padding=1, groups=6, bias=False)
    (kernel,) = _kernels(depthwise, (6, 7, 7))
    assert kernel.macs == 6 * 7 * 7 * 1 * 3 * 3

    linear = nn.Sequential(nn.Flatten(), nn.Linear(2 * 3 * 3, 5))
    kernels = _kernels(linear, (2, 3, 3))
    assert sum(k.macs for k in kernels) == 18 * 5
    # weight and bias are constants of the one matmul+bias kernel
    assert sum(k.bytes_weights for k in kernels) == (18 * 5 + 5) * F32


@pytest.mark.parametrize(
    ("conv", "expected"),
    [
        (nn.Conv2d(4, 8, 3, padding=1, bias=False), "conv3x3"),
        (nn.Conv2d(4, 8, 3, stride=2, padding=1, bias=False), "conv"),
        (nn.Conv2d(4, 8, 3, padding=1, groups=2, bias=False), "conv"),
        (nn.Conv2d(4, 8, 5, padding=2, bias=False), "conv"),
        (nn.Conv2d(4, 4, 3, padding=1, groups=4, bias=False), "depthwise"),
        (nn.Conv2d(4, 8, 1, bias=False), "pointwise"),
        (nn.Sequential(nn.Flatten(), nn.Linear(4 * 8 * 8, 5)), "fc"),
    ],
)
def test_each_kernel_has_the_class_its_efficiency_factor_goes_by(
    conv: nn.Module, expected: str
) -> None:
    # conv3x3: dense and stride 1, the convolutions runtimes run by Winograd's algorithm
    kernels = [k for k in _kernels(conv, (4, 8, 8)) if k.macs]
    assert [k.kernel_class for k in kernels] == [expected]


def test_pooling_and_elementwise_kernels_have_no_macs() -> None:
    net = nn.Sequential(nn.ReLU(), nn.AvgPool2d(2), nn.MaxPool2d(2))
    kernels = _kernels(net, (3, 8, 8))
    assert kernels
    assert all(k.macs == 0 for k in kernels)
    # ... but the average pool's adds and the ReLU's max are still FLOPs
    assert sum(k.flops for k in kernels) > 0


def test_conv_bn_relu_fuse_into_one_kernel() -> None:
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
    (kernel,) = _kernels(net, (3, 8, 8))
    assert kernel.name.startswith("fused_conv2d") and kernel.name.endswith("relu")
    assert kernel.macs == 8 * 8 * 8 * 3 * 3 * 3
    # input and output once each: the conv's result never goes back to memory before the BN
    assert kernel.bytes_in == 3 * 8 * 8 * F32
    assert kernel.bytes_out == 8 * 8 * 8 * F32
    # conv weights plus the four batchnorm vectors (mean, var, gamma, beta)
    assert kernel.bytes_weights == (8 * 3 * 3 * 3 + 4 * 8) * F32
    assert kernel.flops > 2 * kernel.macs  # the fused epilogue counts too


def test_weights_passed_as_main_inputs_still_count_as_weights() -> None:
    from tvm.relax.frontend.torch import from_exported_program

    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
    exported = torch.export.export(net.eval(), (torch.randn(1, 3, 8, 8),))
    # weights become parameters of main after its `num_input` activations
    (kernel,) = fused_kernels(from_exported_program(exported, keep_params_as_input=True))
    assert kernel.bytes_in == 3 * 8 * 8 * F32
    assert kernel.bytes_weights == (8 * 3 * 3 * 3 + 4 * 8) * F32


def test_model_left_unmodified_and_module_not_mutated() -> None:
    conv = nn.Conv2d(1, 2, 3)
    mod = import_to_relax(conv, (1, 5, 5))
    before = mod.script()
    first = fused_kernels(mod)
    assert mod.script() == before
    assert fused_kernels(mod) == first


# --------------------------------------------------------------------------------------------
# whole networks
# --------------------------------------------------------------------------------------------


def test_resnet20_has_far_fewer_kernels_than_layers(
    resnet20_16: tuple[nn.Module, list[KernelCost]],
) -> None:
    model, kernels = resnet20_16
    layers = count_costs(model, (1, 16, 16)).layers
    convs = sum(layer.op == "conv2d" for layer in layers)
    # one kernel per conv (BN, ReLU and the residual add fused in), global mean pool, classifier
    assert sum(k.op == "conv2d" for k in kernels) == convs == 21
    assert [k.op for k in kernels[-2:]] == ["mean", "matmul"]
    assert len(kernels) == convs + 2 <= len(layers) // 3


def test_resnet20_total_macs_match_count_costs(
    resnet20_16: tuple[nn.Module, list[KernelCost]],
) -> None:
    model, kernels = resnet20_16
    expected = count_costs(model, (1, 16, 16)).macs
    assert sum(k.macs for k in kernels) == pytest.approx(expected, rel=0.01)


def test_torchvision_resnet18_total_macs_match_count_costs() -> None:
    model = create_model("resnet18", num_classes=10, in_channels=3)
    kernels = _kernels(model, (3, 32, 32))
    expected = count_costs(model, (3, 32, 32)).macs
    assert sum(k.macs for k in kernels) == pytest.approx(expected, rel=0.01)
    assert len(kernels) < len(count_costs(model, (3, 32, 32)).layers) // 2


def test_kernel_cost_round_trips_through_json(
    resnet20_16: tuple[nn.Module, list[KernelCost]],
) -> None:
    _, kernels = resnet20_16
    for kernel in kernels[:3]:
        assert KernelCost.from_dict(json.loads(json.dumps(kernel.to_dict()))) == kernel


# --------------------------------------------------------------------------------------------
# the estimate
# --------------------------------------------------------------------------------------------

# 1e6 MACs, 1e5 bytes: compute 1e6 / (1e9 * 0.5) = 2 ms, memory 1e5 / (1e9 * 0.5) = 0.2 ms.
CONV = KernelCost(
    name="fused_conv2d_add_relu",
    flops=2_000_000 + 2_000,
    macs=1_000_000,
    bytes_in=40_000,
    bytes_out=40_000,
    bytes_weights=20_000,
    dtype="float32",
)
# 0 MACs, 8e5 bytes: memory 1.6 ms. A standalone ReLU is a launch of its own.
RELU = KernelCost(
    name="fused_relu",
    flops=100_000,
    macs=0,
    bytes_in=400_000,
    bytes_out=400_000,
    bytes_weights=0,
    dtype="float32",
)


def test_roofline_per_kernel_by_hand() -> None:
    est = estimate_from_kernels([CONV, RELU], ROUND)
    conv, relu = est.layers
    assert conv.bound == "compute" and conv.compute_ms == pytest.approx(2.0)
    assert conv.memory_ms == pytest.approx(0.2)
    assert conv.latency_ms == pytest.approx(2.0 + 0.01)
    assert relu.bound == "memory" and relu.latency_ms == pytest.approx(1.6 + 0.01)
    assert est.latency_ms == pytest.approx(2.01 + 1.61)
    assert est.method == "per fused TVM kernel (2 kernels) over profile round"
    assert (est.latency_source, est.energy_source) == ("estimated", "estimated")
    # energy: the Horowitz model of _estimate.py, 45 nm, energy_scale 1: MACs at fp32 (3.7 +
    # 0.9 pJ) and two 4-byte SRAM reads each (5 pJ), 160 pJ per DRAM byte, 1 W idle.
    conv_pj = 1e6 * (4.6 + 2 * 5.0) + 1e5 * 160.0
    assert conv.energy_mj == pytest.approx(conv_pj * 1e-9 + 1.0 * conv.latency_ms)


def test_lower_precision_moves_fewer_bytes_and_runs_faster() -> None:
    fp32 = estimate_from_kernels([CONV, RELU], ROUND)
    int8 = estimate_from_kernels([CONV, RELU], ROUND, precision="int8")
    assert int8.layers[1].memory_ms == pytest.approx(fp32.layers[1].memory_ms / 4)
    assert int8.layers[0].compute_ms == pytest.approx(fp32.layers[0].compute_ms / 4)
    assert {row.precision for row in int8.layers} == {"int8"}
    assert int8.latency_ms < fp32.latency_ms and int8.energy_mj < fp32.energy_mj


def test_unknown_precision_names_the_valid_ones() -> None:
    with pytest.raises(UnknownNameError, match=r"'bf16'.*fp16, fp32, int8"):
        estimate_from_kernels([CONV], ROUND, precision="bf16")


def test_resnet20_estimate_is_positive_labelled_and_round_trips(
    resnet20_16: tuple[nn.Module, list[KernelCost]],
) -> None:
    _, kernels = resnet20_16
    est = estimate_from_kernels(kernels, load_profile("jetson"))
    assert est.latency_ms > 0 and est.energy_mj > 0
    assert all(row.latency_ms > 0 for row in est.layers)
    assert (est.latency_source, est.energy_source) == ("estimated", "estimated")
    assert est.method == "per fused TVM kernel (23 kernels) over profile jetson-orin-nano"
    assert [row.name for row in est.layers] == [k.name for k in kernels]
    assert HardwareEstimate.from_dict(json.loads(json.dumps(est.to_dict()))) == est


# --------------------------------------------------------------------------------------------
# constant folding without compiling
# --------------------------------------------------------------------------------------------


class _TableBias(nn.Module):
    """A constant gathered by a constant index (as Swin's relative position bias), indices made
    in ``forward`` and a linear layer (a transposed weight): constant kernels that FoldConstant
    computes."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.table = nn.Parameter(torch.randn(15, 8))
        self.register_buffer("index", (torch.arange(8)[:, None] + torch.arange(8)).reshape(-1))
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.conv(x)))  # (1, 8, 8, 8)
        bias = self.table[self.index].reshape(8, 8, 8).permute(2, 0, 1)
        rolled = (torch.arange(8) + 3) % 8  # constant indices made in forward (Swin's shift)
        return self.fc((x + bias)[:, :, rolled].mean(dim=(2, 3)))


@pytest.mark.parametrize("name", ["table", "resnet20"])
def test_folding_constant_shapes_gives_tvms_kernel_list(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tvm import relax

    from autoprune.hwprofiles import _kernels

    torch.manual_seed(0)
    if name == "table":
        model, shape = _TableBias().eval(), (3, 8, 8)
    else:
        model, shape = create_model("resnet20", num_classes=10, in_channels=1).eval(), (1, 16, 16)
    mod = import_to_relax(model, shape)
    ours = fused_kernels(mod)
    passes = _kernels._fusion_passes
    tvms = [
        relax.transform.FoldConstant() if p.info.name == "FoldConstantShapes" else p
        for p in passes()
    ]
    assert len(tvms) == len(passes()) and any(p.info.name == "FoldConstant" for p in tvms)
    monkeypatch.setattr(_kernels, "_fusion_passes", lambda: tvms)
    assert fused_kernels(mod) == ours
    assert all(k.macs > 0 or k.bytes_in > 0 for k in ours)  # nothing of constants only is left
