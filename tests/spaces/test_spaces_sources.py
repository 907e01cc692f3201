"""Model names from every source, and depth stages read from the graph."""

from __future__ import annotations

import logging
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from autoprune.errors import ConfigError, UnknownNameError
from autoprune.spaces import (
    SearchSpace,
    build_model,
    create_model,
    find_stages,
    list_models,
    model_source,
    python_model,
)


def _space(model: str, shape: tuple[int, int, int] = (3, 64, 64), **kw: object) -> SearchSpace:
    args: dict[str, object] = {
        "num_classes": 10,
        "in_channels": shape[0],
        "input_shape": shape,
        "width_ratios": (0.5, 1.0),
        "depth": True,
        "resolution_scales": (1.0,),
        "weight_bits": (32,),
        "activation_bits": (32,),
        "channel_multiple": 8,
    }
    args.update(kw)
    return SearchSpace(model=model, **args)  # type: ignore[arg-type]


def test_every_torchvision_classifier_is_a_name() -> None:
    names = set(list_models())
    assert set(torchvision.models.list_models(module=torchvision.models)) <= names
    assert {"resnet20", "resnet56"} <= names
    model = create_model("resnet34", num_classes=7, in_channels=1)
    assert model.conv1.in_channels == 1 and model.fc.out_features == 7
    assert model_source("resnet34").kind == "torchvision"


def test_unknown_name_lists_the_sources() -> None:
    with pytest.raises(UnknownNameError, match="timm:NAME") as info:
        create_model("resnet21", num_classes=10, in_channels=3)
    assert "path/to/file.py:factory" in str(info.value)


def test_timm_models_build_without_network() -> None:
    model = create_model("timm:resnet10t", num_classes=5, in_channels=1)
    assert model.eval()(torch.zeros(1, 1, 32, 32)).shape == (1, 5)
    with pytest.raises(ConfigError, match="timm has no model 'resnet_nope'"):
        model_source("timm:resnet_nope")


def _write_factory(folder: Path) -> Path:
    path = folder / "mynet.py"
    path.write_text(
        textwrap.dedent(
            """
            from torch import nn

            class Block(nn.Module):
                def __init__(self, c):
                    super().__init__()
                    self.body = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c))
                def forward(self, x):
                    return nn.functional.relu(x + self.body(x))

            def make(num_classes, in_channels):
                return nn.Sequential(
                    nn.Conv2d(in_channels, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                    nn.Sequential(Block(16), Block(16), Block(16)),
                    nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, num_classes))

            def wrong(classes):
                return nn.Identity()

            def fixed(num_classes, in_channels):  # ignores num_classes
                return make(num_classes=10, in_channels=in_channels)
            """
        )
    )
    return path


def test_user_factory_from_a_file_and_a_module(tmp_path: Path, monkeypatch) -> None:
    path = _write_factory(tmp_path)
    space = _space(f"{path}:make", (1, 16, 16))
    assert space.stages == (("3", 3),)  # the three residual blocks, found from the graph
    assert space.channel_groups[0] == ("0", 16)
    small = build_model(space.smallest(), seed=0)
    assert small(torch.zeros(2, 1, 16, 16)).shape == (2, 10)
    assert isinstance(small[3][1], nn.Identity) and small[0].out_channels == 8
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "mynet", raising=False)
    assert model_source("mynet:make").kind == "factory"
    with pytest.raises(ConfigError, match="must accept num_classes and in_channels"):
        model_source("mynet:wrong")
    with pytest.raises(ConfigError, match="has no callable 'absent'"):
        model_source("mynet:absent")
    with pytest.raises(ConfigError, match="does not exist"):
        model_source(f"{tmp_path / 'none.py'}:make")
    with pytest.raises(ConfigError, match="cannot import module 'no_such_pkg_xyz'"):
        model_source("no_such_pkg_xyz:make")


def test_python_objects_train_from_a_fresh_copy() -> None:
    net = nn.Sequential(
        nn.Conv2d(1, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3)
    )
    with torch.no_grad():
        net[0].weight.fill_(1.0)
    name = python_model(net)
    assert name.startswith("python:Sequential-")
    copy = create_model(name, num_classes=3, in_channels=1)
    assert not torch.equal(copy[0].weight, net[0].weight)  # re-initialised, the object untouched
    assert bool((net[0].weight == 1.0).all())


def test_a_head_of_the_wrong_size_is_one_line(tmp_path: Path) -> None:
    path = _write_factory(tmp_path)
    with pytest.raises(ConfigError, match=r"returns a tensor of shape \(1, 10\) .* not \(1, 4\)"):
        _space(f"{path}:fixed", (1, 16, 16), num_classes=4)


def test_transformers_are_refused_for_search_in_one_line() -> None:
    with pytest.raises(ConfigError, match="'vit_b_16' is a transformer") as info:
        _space("vit_b_16", (3, 224, 224))
    assert "\n" not in str(info.value) and "autoprune profile" in str(info.value)


@pytest.mark.parametrize(
    ("name", "stages"),
    [
        ("resnet18", [("layer1", 2), ("layer2", 2), ("layer3", 2), ("layer4", 2)]),
        ("vgg11", []),
        ("densenet121", []),
        (
            "convnext_tiny",
            [("features.1", 3), ("features.3", 3), ("features.5", 9), ("features.7", 3)],
        ),
        ("swin_t", [("features.1", 2), ("features.3", 2), ("features.5", 6), ("features.7", 2)]),
    ],
)
def test_stages_come_from_the_graph(name: str, stages: list[tuple[str, int]]) -> None:
    net = create_model(name, num_classes=10, in_channels=3, device="meta")
    assert [(s.name, s.num_blocks) for s in find_stages(net, (3, 224, 224))] == stages


def test_what_is_not_residual_is_no_stage() -> None:
    class Scaled(nn.Module):  # x * f(x): not an addition of the input
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(4, 4, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * self.conv(x)

    class Residual(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(4, 4, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + self.conv(x)

    net = nn.Sequential(
        nn.Conv2d(1, 4, 1), nn.ReLU(inplace=True), Scaled(), Scaled(), Residual(), Residual()
    )
    assert [(s.name, s.blocks) for s in find_stages(net, (1, 4, 4))] == [("4-5", ("4", "5"))]


def test_grouped_convolutions_keep_their_group_count() -> None:
    space = _space("resnext50_32x4d")
    groups = dict(space.channel_groups)
    for decision in space.decisions:
        if decision.name == "width/layer1.0.conv1":
            assert all(c % 32 == 0 for c in decision.choices), decision.choices
    assert groups["layer1.0.conv1"] == 128
    model = build_model(space.smallest(), seed=0)
    assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 10)


def test_an_untraceable_model_keeps_its_other_decisions(caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="autoprune.spaces"):
        space = _space("shufflenet_v2_x0_5", weight_bits=(8, 32))
    assert "no width decisions" in caplog.text
    kinds = {d.name.split("/")[0] for d in space.decisions}
    assert kinds == {"wbits"}
