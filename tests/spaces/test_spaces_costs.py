from __future__ import annotations

import json
import logging

import pytest
import torch
import torch.nn.functional as F
import torchvision.models as tvm
from torch import nn
from torchvision.ops import SqueezeExcitation

from autoprune.spaces import (
    Candidate,
    CostReport,
    QuantConv2d,
    QuantLinear,
    SearchSpace,
    build_model,
    count_costs,
    create_model,
)
from autoprune.spaces._costs import ACTIVATION_OPS

WEIGHTS = {
    "resnet18": tvm.ResNet18_Weights.IMAGENET1K_V1,
    "resnet50": tvm.ResNet50_Weights.IMAGENET1K_V1,
    "mobilenet_v2": tvm.MobileNet_V2_Weights.IMAGENET1K_V1,
    "vgg16_bn": tvm.VGG16_BN_Weights.IMAGENET1K_V1,
}


@pytest.mark.parametrize("name", list(WEIGHTS))
def test_imagenet_models_match_torchvision_metadata(name: str) -> None:
    meta = WEIGHTS[name].meta  # metadata only: nothing is downloaded
    with torch.device("meta"):  # counting needs shapes only
        model = create_model(name, num_classes=1000, in_channels=3)
    report = count_costs(model, (3, 224, 224))
    assert report.params == meta["num_params"]
    assert report.macs == pytest.approx(meta["_ops"] * 1e9, rel=0.01)  # "GFLOPS" = GMACs
    assert report.size_bytes == 4 * meta["num_params"]  # all float32


def tiny_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Dropout(0.5),
        nn.Linear(8, 5),
    )


def test_analytic_ground_truth_on_a_two_layer_net() -> None:
    report = count_costs(tiny_net(), (3, 16, 16))
    conv_out = 8 * 8 * 8  # stride 2 on 16x16 with padding 1
    assert [(r.name, r.op) for r in report.layers] == [
        ("0", "conv2d"),
        ("1", "batchnorm"),
        ("2", "relu"),
        ("3", "pool"),
        ("6", "linear"),
    ]
    conv, bn, relu, pool, fc = report.layers
    assert conv.macs == conv_out * 3 * 3 * 3 and conv.params == 8 * 27 + 8
    assert (conv.input_elements, conv.output_elements, conv.weight_elements) == (768, 512, 216)
    assert bn.macs == 0 and bn.params == 16 and bn.output_elements == conv_out
    assert relu.macs == 0 and relu.params == 0
    assert pool.output_elements == 8
    assert fc.macs == 8 * 5 and fc.params == 45
    assert report.macs == conv_out * 27 + 40
    assert report.params == 224 + 16 + 45
    assert report.size_bytes == 4 * (224 + 16 + 45)


def test_quantized_size_counts_weights_at_their_bits() -> None:
    net = tiny_net()
    float_rows = [
        (r.name, r.op, r.macs, r.input_elements) for r in count_costs(net, (3, 16, 16)).layers
    ]
    net[0] = QuantConv2d.from_float(net[0], weight_bits=4, activation_bits=8)
    net[6] = QuantLinear.from_float(net[6], weight_bits=8, activation_bits=8)
    report = count_costs(net, (3, 16, 16))
    # The fake-quantization arithmetic (div, round, clamp, mul...) makes no rows.
    assert [(r.name, r.op, r.macs, r.input_elements) for r in report.layers] == float_rows
    fc = report.layers[-1]
    assert (fc.weight_bits, fc.activation_bits, fc.weight_elements) == (8, 8, 40)
    net[6] = tiny_net()[6]
    report = count_costs(net, (3, 16, 16))
    conv = report.layers[0]
    assert (conv.op, conv.weight_bits, conv.activation_bits) == ("conv2d", 4, 8)
    # Bias, BN and the learned activation step (LSQ) in float32.
    assert report.size_bytes == 216 * 4 // 8 + 4 * 8 + 4 * 1 + 4 * 16 + 4 * 45
    assert conv.params == 216 + 8 + 1
    assert report.macs == 8 * 8 * 8 * 27 + 40  # bit-widths do not change MACs


@pytest.mark.parametrize("bits", [1, 2])
def test_binary_and_ternary_weights_count_their_packed_bits(bits: int) -> None:
    net = tiny_net()
    net[0] = QuantConv2d.from_float(net[0], weight_bits=bits, activation_bits=32)
    report = count_costs(net, (3, 16, 16))
    conv = report.layers[0]
    assert (conv.weight_bits, conv.macs, conv.params) == (bits, 8 * 8 * 8 * 27, 216 + 8)
    # 216 weights at 1 or 2 bits (27 or 54 bytes), the bias, BN and linear in float32.
    assert report.size_bytes == 216 * bits // 8 + 4 * 8 + 4 * 16 + 4 * 45


def test_depthwise_groups() -> None:
    net = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, groups=4, bias=False))
    assert count_costs(net, (4, 5, 5)).macs == 4 * 25 * 9


@pytest.mark.parametrize(("name", "adds"), [("resnet20", 9), ("resnet18", 8), ("mobilenet_v2", 10)])
def test_residual_adds_get_rows_before_the_final_relu(name: str, adds: int) -> None:
    shape = (3, 32, 32)
    with torch.device("meta"):
        model = create_model(name, num_classes=10, in_channels=3)
    rows = count_costs(model, shape).layers
    add_rows = [i for i, r in enumerate(rows) if r.op == "add"]
    assert len(add_rows) == adds
    for i in add_rows:
        assert rows[i].input_elements == 2 * rows[i].output_elements
        assert rows[i - 1].op in ("batchnorm", "conv2d")  # after the block's last BN...
        if name.startswith("resnet"):  # ...and before the ReLU applied to the sum
            assert rows[i + 1].op == "relu" and rows[i + 1].name.startswith(rows[i].name[:-4])


def test_a_pruned_candidate_costs_less_and_rows_match_the_modules() -> None:
    space = SearchSpace(
        model="resnet20",
        num_classes=10,
        in_channels=1,
        input_shape=(1, 28, 28),
        width_ratios=(0.5, 1.0),
        depth=True,
        resolution_scales=(0.5, 1.0),
        weight_bits=(8, 32),
        activation_bits=(32,),
        channel_multiple=8,
    )
    big, small = space.largest(), space.smallest()
    full = count_costs(build_model(big, seed=0), big.input_shape)
    base = create_model("resnet20", num_classes=10, in_channels=1)
    assert full.params == sum(p.numel() for p in base.parameters())
    model = build_model(small, seed=0)
    pruned = count_costs(model, small.input_shape)
    assert pruned.params == sum(p.numel() for p in model.parameters()) < full.params
    assert pruned.macs < full.macs / 4  # half width and half resolution at least
    assert pruned.size_bytes < full.size_bytes / 4
    conv = next(r for r in pruned.layers if r.name == "layer1.0.conv1")
    module = model.layer1[0].conv1
    assert conv.macs == conv.output_elements * module.in_channels * 9
    assert conv.weight_bits == 8


def test_a_learned_scale_is_a_mul_row_owning_its_parameter(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Scale(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gamma = nn.Parameter(torch.ones(3))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * self.gamma.view(1, -1, 1, 1)

    with caplog.at_level(logging.WARNING, logger="autoprune.spaces"):
        report = count_costs(nn.Sequential(Scale(), nn.Conv2d(3, 2, 1)), (3, 4, 4))
    assert caplog.text == ""
    scale = report.layers[0]
    assert (scale.name, scale.op, scale.macs, scale.params) == ("0", "mul", 0, 3)
    assert (scale.input_elements, scale.output_elements, scale.weight_elements) == (48, 48, 3)
    assert report.params == 3 + 8


def test_an_unknown_op_is_warned_once_and_gets_a_row(caplog: pytest.LogCaptureFixture) -> None:
    class Odd(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.lgamma(torch.lgamma(x + 1))  # in no table of the counter

    with caplog.at_level(logging.WARNING, logger="autoprune.spaces"):
        report = count_costs(Odd(), (2, 3, 3))
    warnings = [r for r in caplog.records if "aten.lgamma" in r.getMessage()]
    assert len(warnings) == 1 and "no cost handle" in warnings[0].getMessage()
    assert [(r.op, r.macs, r.output_elements) for r in report.layers] == [
        ("add", 0, 18),
        ("unknown", 0, 18),
        ("unknown", 0, 18),
    ]


def test_report_round_trips_and_modes_are_restored() -> None:
    c = Candidate(
        model="resnet20",
        num_classes=10,
        in_channels=1,
        input_shape=(1, 28, 28),
        weight_bits={"conv1": 8},
        activation_bits={"conv1": 8},
    )
    model = build_model(c, seed=0)
    model.layer1.eval()
    report = count_costs(model, c.input_shape)
    assert model.training and not model.layer1.training and model.layer2.training
    assert int(model.conv1.calibrated_batches) == 0  # counting is not calibration
    assert CostReport.from_dict(json.loads(json.dumps(report.to_dict()))) == report


def test_meta_build_counts_like_the_real_model() -> None:
    c = Candidate(
        model="mobilenet_v2",
        num_classes=10,
        in_channels=3,
        input_shape=(3, 32, 32),
        channels={"features.2.conv.0.0": 48, "features.0.0": 16},
        blocks={"features.7-10": 2},
        weight_bits={"features.0.0": 4},
        activation_bits={"classifier.1": 8},
    )
    meta = build_model(c, device="meta")
    assert all(p.is_meta for p in meta.parameters())
    assert count_costs(meta, c.input_shape) == count_costs(build_model(c, seed=0), c.input_shape)


def test_functional_pool_of_mobilenet_gets_a_row() -> None:
    with torch.device("meta"):
        model = create_model("mobilenet_v2", num_classes=10, in_channels=3)
    rows = count_costs(model, (3, 224, 224)).layers
    pool, fc = rows[-2], rows[-1]
    assert (pool.op, pool.input_elements, pool.output_elements) == ("pool", 1280 * 7 * 7, 1280)
    assert fc.name == "classifier.1"


# ------------------------------------------------------------------------------------------
# Functional ops, attention and matmuls: analytic ground truth on hand-built nets.
# ------------------------------------------------------------------------------------------


def rows_of(report: CostReport) -> list[tuple[str, str, int, int, int]]:
    return [(r.name, r.op, r.macs, r.input_elements, r.output_elements) for r in report.layers]


def test_functional_ops_of_a_container_get_rows() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 1, bias=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.conv(x)  # 4x4x4 outputs x 3 MACs
            z = F.relu(y) + y
            c = torch.cat([z, y], dim=1)  # 8 channels
            up = F.interpolate(y, scale_factor=2.0)  # 4x8x8
            return torch.flatten(F.adaptive_avg_pool2d(c, 1), 1) + up.mean()

    report = count_costs(Net(), (3, 4, 4))
    assert rows_of(report) == [
        ("conv", "conv2d", 64 * 3, 48, 64),
        ("relu", "relu", 0, 64, 64),
        ("add", "add", 0, 128, 64),
        ("cat", "cat", 0, 128, 128),
        ("interpolate", "interpolate", 0, 64, 256),
        ("pool", "pool", 0, 128, 8),  # adaptive average pool to 1x1 (aten.mean)
        ("pool", "pool", 0, 256, 1),  # the mean
        ("add", "add", 0, 9, 8),
    ]
    assert report.macs == 192 and report.params == 12


def test_squeeze_excitation_multiply_is_a_row() -> None:
    report = count_costs(SqueezeExcitation(8, 2), (8, 4, 4))
    assert rows_of(report) == [
        ("avgpool", "pool", 0, 128, 8),
        ("fc1", "conv2d", 16, 8, 2),
        ("activation", "relu", 0, 2, 2),
        ("fc2", "conv2d", 16, 2, 8),
        ("scale_activation", "sigmoid", 0, 8, 8),
        ("mul", "mul", 0, 8 + 128, 128),
    ]
    assert report.params == (16 + 2) + (16 + 8)


def test_layer_norm_is_a_norm_row_with_its_parameters() -> None:
    report = count_costs(nn.Sequential(nn.LayerNorm(8), nn.Linear(8, 4)), (3, 5, 8))
    norm, fc = report.layers
    assert (norm.op, norm.macs, norm.params, norm.weight_elements) == ("norm", 0, 16, 8)
    assert (norm.input_elements, norm.output_elements) == (120, 120)
    assert (fc.op, fc.macs, fc.input_elements, fc.output_elements) == (
        "linear",
        15 * 8 * 4,
        120,
        60,
    )


class Attention(nn.Module):
    """Input (1, heads, tokens, dim): qkv projection, fused attention, output projection."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        return self.proj(F.scaled_dot_product_attention(q, k, v))


def test_attention_counts_its_two_matmuls_on_meta_and_cpu() -> None:
    heads, tokens, dim = 2, 5, 8
    report = count_costs(Attention(dim), (heads, tokens, dim))
    rows = heads * tokens
    assert rows_of(report) == [
        ("qkv", "linear", rows * dim * 3 * dim, rows * dim, rows * 3 * dim),
        # q @ k^T: tokens x tokens x dim, then @ v: tokens x tokens x dim, per head.
        ("attention", "attention", heads * tokens * tokens * 2 * dim, 3 * rows * dim, rows * dim),
        ("proj", "linear", rows * dim * dim, rows * dim, rows * dim),
    ]
    assert count_costs(Attention(dim).to("meta"), (heads, tokens, dim)) == report


def test_multihead_attention_counts_its_functional_projections(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn = nn.MultiheadAttention(8, 2, batch_first=True)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            t = x[:, 0]  # (1, tokens, 8)
            return self.attn(t, t, t, need_weights=False)[0]

    tokens = 4
    with caplog.at_level(logging.WARNING, logger="autoprune.spaces"):
        report = count_costs(Block(), (1, tokens, 8))
    assert caplog.text == ""  # out_proj is used through F.linear, not its forward
    assert [(r.name, r.op, r.macs) for r in report.layers] == [
        ("attn.linear", "linear", tokens * 8 * 24),
        ("attn.attention", "attention", 2 * tokens * tokens * (4 + 4)),
        ("attn.linear", "linear", tokens * 8 * 8),
    ]
    assert sum(r.params for r in report.layers) == report.params == 24 * 8 + 24 + 8 * 8 + 8


def test_matmul_of_two_activations() -> None:
    class Gram(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.matmul(x, x.transpose(-1, -2))

    report = count_costs(Gram(), (2, 3, 4))
    assert rows_of(report) == [("matmul", "matmul", 2 * 3 * 3 * 4, 48, 18)]
    assert report.layers[0].weight_elements == 0


@pytest.mark.parametrize(
    ("layer", "op"),
    [
        (nn.ReLU6(), "relu6"),
        (nn.Hardswish(), "hardswish"),
        (nn.Hardsigmoid(), "hardsigmoid"),
        (nn.SiLU(), "silu"),
        (nn.GELU(), "gelu"),
        (nn.Sigmoid(), "sigmoid"),
        (nn.LeakyReLU(), "leakyrelu"),
        (nn.Softmax(dim=1), "softmax"),
    ],
)
def test_activation_rows_are_named_as_their_modules(layer: nn.Module, op: str) -> None:
    (row,) = count_costs(nn.Sequential(layer), (2, 3, 3)).layers
    assert (row.name, row.op, row.macs, row.output_elements) == ("0", op, 0, 18)
    assert op in ACTIVATION_OPS


def test_transposed_convolution_macs() -> None:
    (row,) = count_costs(nn.ConvTranspose2d(2, 4, 3, stride=2, bias=False), (2, 3, 3)).layers
    assert row.op == "conv_transpose2d"
    assert row.macs == 2 * 9 * 4 * 9  # every input element x out channels x kernel
