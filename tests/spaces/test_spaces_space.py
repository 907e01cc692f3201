from __future__ import annotations

import json
import random
from typing import Any

import pytest
import yaml

from autoprune.errors import ConfigError, UnknownNameError
from autoprune.spaces import Candidate, Decision, SearchSpace
from autoprune.spaces._space import kept_channels


def make_space(**overrides: Any) -> SearchSpace:
    kwargs: dict[str, Any] = dict(
        model="resnet20",
        num_classes=10,
        in_channels=1,
        input_shape=(1, 28, 28),
        width_ratios=(0.25, 0.5, 0.75, 1.0),
        depth=True,
        resolution_scales=(0.75, 1.0),
        weight_bits=(4, 8, 32),
        activation_bits=(8, 32),
        channel_multiple=8,
    )
    kwargs.update(overrides)
    return SearchSpace(**kwargs)


def random_params(space: SearchSpace, seed: int) -> dict[str, int | float]:
    rng = random.Random(seed)
    return {d.name: rng.choice(d.choices) for d in space.decisions}


def test_decisions_are_stable_and_ordered() -> None:
    a, b = make_space(), make_space()
    assert a.decisions == b.decisions
    names = [d.name for d in a.decisions]
    assert len(names) == len(set(names))
    kinds = [n.split("/")[0] for n in names]
    order = ["width", "depth", "resolution", "wbits", "abits"]
    assert kinds == sorted(kinds, key=order.index)
    assert names[:5] == [
        "width/conv1",
        "width/layer1.0.conv1",
        "width/layer1.1.conv1",
        "width/layer1.2.conv1",
        "width/layer2.0.conv1",
    ]


def test_residual_streams_are_one_width_decision_each() -> None:
    space = make_space()
    groups = dict(space.channel_groups)
    # resnet20: 9 block-interior groups + 3 residual streams (the stem joins stage 1's stream).
    assert len(groups) == 12
    assert groups == {
        "conv1": 16,
        **{f"layer1.{i}.conv1": 16 for i in range(3)},
        "layer2.0.conv2": 32,
        **{f"layer2.{i}.conv1": 32 for i in range(3)},
        "layer3.0.conv2": 64,
        **{f"layer3.{i}.conv1": 64 for i in range(3)},
    }
    widths = {d.name: d.choices for d in space.decisions if d.name.startswith("width/")}
    assert widths["width/conv1"] == (8, 16)
    assert widths["width/layer2.0.conv2"] == (8, 16, 24, 32)
    assert widths["width/layer3.0.conv1"] == (16, 32, 48, 64)


@pytest.mark.parametrize(
    ("channels", "ratio", "multiple", "expected"),
    [(64, 0.25, 8, 16), (16, 0.25, 8, 8), (6, 0.5, 8, 6), (40, 0.5, 8, 24), (96, 0.3, 16, 32)],
)
def test_kept_channel_rounding(channels: int, ratio: float, multiple: int, expected: int) -> None:
    assert kept_channels(channels, ratio, multiple) == expected


def test_depth_resolution_and_bits_decisions() -> None:
    space = make_space()
    by_name = {d.name: d.choices for d in space.decisions}
    assert by_name["depth/layer2"] == (1, 2, 3)
    assert by_name["resolution"] == (0.75, 1.0)
    assert by_name["wbits/conv1"] == (4, 8, 32)
    assert by_name["abits/fc"] == (8, 32)
    layers = [n[len("wbits/") :] for n in by_name if n.startswith("wbits/")]
    assert len(layers) == 19 + 2 + 1  # 19 3x3 convs, 2 downsample convs, fc


def test_single_choice_values_are_fixed_not_decisions() -> None:
    space = make_space(
        width_ratios=(1.0,),
        depth=False,
        resolution_scales=(0.5,),
        weight_bits=(8,),
        activation_bits=(32,),
    )
    assert space.decisions == ()
    c = space.candidate({})
    assert c.input_shape == (1, 14, 14)
    assert set(dict(c.weight_bits).values()) == {8}
    assert set(dict(c.activation_bits).values()) == {32}
    assert dict(c.blocks) == {"layer1": 3, "layer2": 3, "layer3": 3}
    assert dict(c.channels) == dict(space.channel_groups)


def test_largest_is_the_base_model_and_smallest_the_least() -> None:
    space = make_space()
    big, small = space.largest(), space.smallest()
    assert dict(big.channels) == dict(space.channel_groups)
    assert dict(big.blocks) == dict(space.stages)
    assert big.input_shape == (1, 28, 28)
    assert set(dict(big.weight_bits).values()) == {32}
    assert small.input_shape == (1, 21, 21)
    assert dict(small.blocks) == {"layer1": 1, "layer2": 1, "layer3": 1}
    assert set(dict(small.weight_bits).values()) == {4}
    assert dict(small.channels) == {
        "conv1": 8,
        "layer1.0.conv1": 8,
        "layer2.0.conv1": 8,
        "layer2.0.conv2": 8,
        "layer3.0.conv1": 16,
        "layer3.0.conv2": 16,
    }


def test_dropped_blocks_drop_their_decisions_from_the_candidate() -> None:
    space = make_space()
    params = random_params(space, 0) | {"depth/layer1": 1}
    c = space.candidate(params)
    channels, wbits = dict(c.channels), dict(c.weight_bits)
    assert "layer1.1.conv1" not in channels and "layer1.2.conv1" not in channels
    assert "layer1.1.conv1" not in wbits and "layer1.0.conv2" in wbits
    assert channels["conv1"] == params["width/conv1"]  # the residual stream stays


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda p: p.pop("width/conv1"), "lack decision.*width/conv1"),
        (lambda p: p.update({"width/conv9": 8}), "unknown decision.*width/conv9"),
        (
            lambda p: p.update({"width/conv1": 12}),
            "'width/conv1' got 12; allowed values: \\[8, 16\\]",
        ),
        (lambda p: p.update({"depth/layer1": True}), "'depth/layer1' got True"),
        (lambda p: p.update({"resolution": 0.6}), "'resolution' got 0.6"),
        (lambda p: p.update({"wbits/fc": 16}), "'wbits/fc' got 16"),
    ],
)
def test_bad_params_raise_config_error_naming_the_decision(change: Any, match: str) -> None:
    space = make_space()
    params = random_params(space, 1)
    change(params)
    with pytest.raises(ConfigError, match=match):
        space.candidate(params)


def test_params_must_be_a_mapping() -> None:
    with pytest.raises(ConfigError, match="params must map"):
        make_space().candidate([("resolution", 1.0)])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"width_ratios": (0.0, 1.0)}, "width_ratios"),
        ({"width_ratios": (0.5, 1.5)}, "width_ratios.*1.5"),
        ({"width_ratios": ()}, "width_ratios"),
        ({"weight_bits": (0, 32)}, "weight_bits.*got 0"),
        ({"activation_bits": (1, 32)}, r"activation_bits` must be in 2\.\.16.*got 1"),
        ({"rank_ratios": (0.005, 1.0)}, r"rank_ratios` must be at least 0\.01"),
        ({"rank_ratios": (0.5, 1.5)}, "rank_ratios.*1.5"),
        ({"activation_bits": (8, 33)}, "activation_bits.*got 33"),
        ({"input_shape": (3, 28, 28)}, "in_channels"),
        ({"channel_multiple": 0}, "channel_multiple"),
        ({"depth": "yes"}, "depth"),
        ({"model": "vgg16_bn", "input_shape": (1, 28, 28)}, "cannot run at input shape"),
    ],
)
def test_bad_space_arguments_raise_config_error(overrides: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        make_space(**overrides)


def test_unknown_model_in_space() -> None:
    with pytest.raises(UnknownNameError):
        make_space(model="resnet7")


def test_candidate_hash_is_stable_and_round_trips() -> None:
    space = make_space()
    c = space.candidate(random_params(space, 3))
    assert len(c.hash) == 12 and int(c.hash, 16) >= 0
    via_json = Candidate.from_dict(json.loads(json.dumps(c.to_dict())))
    via_yaml = Candidate.from_dict(yaml.safe_load(yaml.safe_dump(c.to_dict())))  # sorts keys
    assert via_json == c and via_yaml == c
    assert via_json.hash == c.hash == via_yaml.hash
    assert space.candidate(random_params(space, 3)).hash == c.hash
    assert space.candidate(random_params(space, 4)).hash != c.hash
    # Golden value: the hash is a cache key across runs and processes (sorted-key JSON, SHA-256).
    base = Candidate(model="resnet20", num_classes=10, in_channels=1, input_shape=(1, 28, 28))
    assert base.hash == "6ac4c5cd55a0"


def test_candidate_is_canonical_whatever_the_entry_order() -> None:
    kw: dict[str, Any] = dict(
        model="resnet20", num_classes=10, in_channels=1, input_shape=[1, 28, 28]
    )
    a = Candidate(**kw, channels={"layer1.10.conv1": 8, "layer1.2.conv1": 8, "conv1": 8})
    b = Candidate(**kw, channels=(("conv1", 8), ("layer1.2.conv1", 8), ("layer1.10.conv1", 8)))
    assert a == b and a.hash == b.hash
    assert [n for n, _ in a.channels] == ["conv1", "layer1.2.conv1", "layer1.10.conv1"]
    assert a.input_shape == (1, 28, 28)


BASE_DICT: dict[str, Any] = {
    "model": "resnet20",
    "num_classes": 10,
    "in_channels": 1,
    "input_shape": [1, 8, 8],
}


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"input_shape": None}, "missing.*input_shape"),
        ({"chanels": {}}, "unknown candidate key.*chanels"),
        ({"in_channels": 3}, "in_channels"),
        ({"weight_bits": {"fc": 7.5}}, "weight_bits"),
        ({"channels": {"conv1": 0}}, "channels\\['conv1'\\]"),
    ],
)
def test_bad_candidate_dicts(change: dict[str, Any], match: str) -> None:
    data = {k: v for k, v in (BASE_DICT | change).items() if v is not None}
    with pytest.raises(ConfigError, match=match):
        Candidate.from_dict(data)


def test_decision_round_trip() -> None:
    d = Decision(name="resolution", choices=(0.75, 1.0))
    assert Decision.from_dict(json.loads(json.dumps(d.to_dict()))) == d
