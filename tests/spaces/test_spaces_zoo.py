from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.models.mobilenetv2 import InvertedResidual

from autoprune.errors import ConfigError, UnknownNameError
from autoprune.spaces import (
    SearchSpace,
    build_model,
    create_model,
    find_stages,
    list_models,
    register_model,
)
from autoprune.spaces._zoo import CifarBasicBlock

ZOO = ["mobilenet_v2", "resnet18", "resnet20", "resnet50", "resnet56", "vgg16_bn"]
SHAPE = {"resnet20": 28, "resnet56": 28, "resnet18": 32, "resnet50": 32, "mobilenet_v2": 32}


def test_registry_lists_the_zoo() -> None:
    assert set(ZOO) <= set(list_models())
    assert list_models() == sorted(list_models())


@pytest.mark.parametrize("name", ZOO)
def test_any_classes_and_input_channels(name: str) -> None:
    with torch.device("meta"):  # shapes only: no weights allocated
        model = create_model(name, num_classes=7, in_channels=1)
        size = SHAPE.get(name, 64)
        out = model.eval()(torch.zeros(2, 1, size, size))
    assert out.shape == (2, 7)
    first = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert first.in_channels == 1
    expected = (7, 7) if name in ("resnet18", "resnet50") else (3, 3)
    assert first.kernel_size == expected
    classifier = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    assert classifier.out_features == 7


def test_replaced_first_conv_keeps_hyper_parameters() -> None:
    rgb = create_model("resnet18", num_classes=10, in_channels=3).conv1
    gray = create_model("resnet18", num_classes=10, in_channels=1).conv1
    for attr in ("out_channels", "kernel_size", "stride", "padding", "dilation", "groups"):
        assert getattr(gray, attr) == getattr(rgb, attr), attr
    assert gray.bias is None and gray.in_channels == 1


def test_unknown_model_lists_valid_names() -> None:
    with pytest.raises(UnknownNameError, match="resnet20") as info:
        create_model("resnet21", num_classes=10, in_channels=3)
    assert "'resnet21'" in str(info.value)


@pytest.mark.parametrize("bad", [0, -1, 2.0, True])
def test_bad_counts_are_config_errors(bad: object) -> None:
    with pytest.raises(ConfigError, match="num_classes"):
        create_model("resnet20", num_classes=bad, in_channels=3)  # type: ignore[arg-type]


@pytest.mark.parametrize(("name", "n"), [("resnet20", 3), ("resnet56", 9)])
def test_cifar_resnet_structure(name: str, n: int) -> None:
    model = create_model(name, num_classes=10, in_channels=3)
    stages = find_stages(model, (3, 32, 32))
    assert [(s.name, s.num_blocks) for s in stages] == [("layer1", n), ("layer2", n), ("layer3", n)]
    for stage, width in zip(("layer1", "layer2", "layer3"), (16, 32, 64), strict=True):
        blocks = list(model.get_submodule(stage))
        assert len(blocks) == n and all(isinstance(b, CifarBasicBlock) for b in blocks)
        assert all(b.conv2.out_channels == width for b in blocks)
        # Option B: a 1x1 conv + BN projection where the shape changes, identity elsewhere.
        shortcut = blocks[0].downsample
        if stage == "layer1":
            assert shortcut is None
        else:
            assert isinstance(shortcut[0], nn.Conv2d) and shortcut[0].kernel_size == (1, 1)
            assert shortcut[0].stride == (2, 2) and isinstance(shortcut[1], nn.BatchNorm2d)
        assert all(b.downsample is None for b in blocks[1:])
    weighted = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(weighted) + 1 == 6 * n + 2  # depth 6n+2: 3x3 convs plus the fc layer
    assert model.fc.in_features == 64


def test_mobilenet_v2_stages_are_residual_runs() -> None:
    with torch.device("meta"):
        model = create_model("mobilenet_v2", num_classes=10, in_channels=3)
    stages = find_stages(model, (3, 64, 64))
    assert [(s.name, s.num_blocks) for s in stages] == [
        ("features.2-3", 2),
        ("features.4-6", 3),
        ("features.7-10", 4),
        ("features.11-13", 3),
        ("features.14-16", 3),
    ]
    for stage in stages:
        blocks = [model.get_submodule(b) for b in stage.blocks]
        assert all(isinstance(b, InvertedResidual) for b in blocks)
        assert not blocks[0].use_res_connect
        assert all(b.use_res_connect for b in blocks[1:])


def test_vgg_has_no_stages() -> None:
    with torch.device("meta"):
        model = create_model("vgg16_bn", num_classes=10, in_channels=3)
    assert find_stages(model, (3, 64, 64)) == ()


def test_register_model_decorator_and_duplicates() -> None:
    @register_model("test_zoo_tiny")
    def tiny(*, num_classes: int, in_channels: int) -> nn.Module:
        return nn.Sequential(
            nn.Conv2d(in_channels, 8, 3),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(8, num_classes),
        )

    assert "test_zoo_tiny" in list_models()
    assert create_model("test_zoo_tiny", num_classes=3, in_channels=2)[3].out_features == 3
    space = SearchSpace(
        model="test_zoo_tiny",
        num_classes=3,
        in_channels=2,
        input_shape=(2, 8, 8),
        width_ratios=(0.5, 1.0),
        depth=True,
        resolution_scales=(1.0,),
        weight_bits=(32,),
        activation_bits=(32,),
        channel_multiple=2,
    )
    assert [(d.name, d.choices) for d in space.decisions] == [("width/0", (4, 8))]
    small = build_model(space.smallest(), seed=0)
    assert small[0].out_channels == 4 and small[3].in_features == 4
    with pytest.raises(ValueError, match="already registered"):
        register_model("test_zoo_tiny")(tiny)
