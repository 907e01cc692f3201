from __future__ import annotations

import json
import logging

import pytest
import torch
import torchvision.models as tvm
from torch import nn

from autoprune.spaces import (
    Candidate,
    CostReport,
    QuantConv2d,
    SearchSpace,
    build_model,
    count_costs,
    create_model,
)

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
    net[0] = QuantConv2d.from_float(net[0], weight_bits=4, activation_bits=8)
    report = count_costs(net, (3, 16, 16))
    conv = report.layers[0]
    assert (conv.op, conv.weight_bits, conv.activation_bits) == ("conv2d", 4, 8)
    # Bias, BN and the learned activation step (LSQ) in float32.
    assert report.size_bytes == 216 * 4 // 8 + 4 * 8 + 4 * 1 + 4 * 16 + 4 * 45
    assert conv.params == 216 + 8 + 1
    assert report.macs == 8 * 8 * 8 * 27 + 40  # bit-widths do not change MACs


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


def test_unknown_leaf_with_parameters_is_warned_not_zeroed(
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
    assert "no cost handle for Scale" in caplog.text
    assert report.layers[0].op == "unknown" and report.layers[0].params == 3
    assert report.params == 3 + 8


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
