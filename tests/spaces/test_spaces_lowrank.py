"""Low-rank splits: exact costs, the SVD pair, the rank decision and its refusals."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from autoprune.errors import ConfigError
from autoprune.spaces import (
    Candidate,
    SearchSpace,
    build_model,
    cost_report,
    create_model,
    inherit_weights,
)
from autoprune.spaces._lowrank import LowRank, svd_pair

SHAPE = (1, 28, 28)


def _candidate(**kwargs) -> Candidate:
    return Candidate(model="resnet20", num_classes=10, in_channels=1, input_shape=SHAPE, **kwargs)


def _row_sums(report, prefix: str) -> tuple[int, int]:
    rows = [r for r in report.layers if r.name == prefix or r.name.startswith(prefix + ".")]
    return sum(r.macs for r in rows), sum(r.params for r in rows)


def test_a_split_costs_exactly_its_two_thin_layers() -> None:
    plain = _candidate(weight_bits={"fc": 8}, activation_bits={"fc": 8})
    split = _candidate(
        weight_bits={"fc": 8}, activation_bits={"fc": 8}, ranks={"layer1.0.conv1": 50, "fc": 25}
    )
    before, after = cost_report(plain), cost_report(split)
    # layer1.0.conv1: 16 -> 16, 3x3, stride 1, 28x28 outputs; rank 8: 3x1 (16 -> 8), 1x3 (8 -> 16).
    assert _row_sums(before, "layer1.0.conv1") == (16 * 16 * 9 * 784, 16 * 16 * 9)
    assert _row_sums(after, "layer1.0.conv1") == (
        (16 * 8 * 3 + 8 * 16 * 3) * 784,
        16 * 8 * 3 + 8 * 16 * 3,
    )
    # fc: 64 -> 10 with a bias; rank = 25 % of 10, half up = 3: 64 -> 3, then 3 -> 10 (+ bias).
    # An 8-bit layer also holds its input's quantization step (1 float parameter): one per half.
    assert _row_sums(before, "fc") == (640, 640 + 10 + 1)
    assert _row_sums(after, "fc") == (64 * 3 + 3 * 10, 64 * 3 + 3 * 10 + 10 + 2)
    saved_macs = 16 * 16 * 9 * 784 - 16 * 8 * 3 * 2 * 784 + 640 - 222
    assert before.macs - after.macs == saved_macs
    assert before.params - after.params == 2304 - 768 + 651 - 234
    # Both halves of fc are 8-bit: (192 + 30) weights at 1 byte, one more step at 4 bytes.
    assert before.size_bytes - after.size_bytes == (2304 - 768) * 4 + (640 - 222) - 4


def test_a_split_layer_is_a_pair_under_its_name_with_its_bits() -> None:
    model = build_model(
        _candidate(
            channels={"conv1": 8},
            weight_bits={"layer2.0.conv1": 4},
            activation_bits={"layer2.0.conv1": 8},
            ranks={"layer2.0.conv1": 50, "layer2.0.downsample.0": 25},
        ),
        seed=0,
    )
    pair = model.get_submodule("layer2.0.conv1")
    assert isinstance(pair, LowRank) and pair.rank == 4  # after the cut: min(8 in, 32 out) / 2
    assert [(h.kernel_size, h.stride, h.padding) for h in pair] == [
        ((3, 1), (2, 1), (1, 0)),
        ((1, 3), (1, 2), (0, 1)),
    ]
    assert [(type(h).__name__, h.weight_bits, h.activation_bits) for h in pair] == [
        ("QuantConv2d", 4, 8),
        ("QuantConv2d", 4, 8),
    ]
    shortcut = model.get_submodule("layer2.0.downsample.0")  # 1x1, stride 2: stride in the first
    assert [(h.kernel_size, h.stride) for h in shortcut] == [((1, 1), (2, 2)), ((1, 1), (1, 1))]
    assert model(torch.randn(2, *SHAPE)).shape == (2, 10)
    seeded = _candidate(ranks={"fc": 50})  # a split layer's fresh weights follow the seed
    first, again = build_model(seeded, seed=0), build_model(seeded, seed=0)
    assert torch.equal(first.fc[0].weight, again.fc[0].weight)
    assert not torch.equal(first.fc[0].weight, build_model(seeded, seed=1).fc[0].weight)


@pytest.mark.parametrize(
    "layer",
    [
        nn.Linear(12, 7),
        nn.Conv2d(6, 5, 1, stride=2, bias=False),
        nn.Conv2d(4, 6, 3, stride=2, padding=1),
        nn.Conv2d(3, 4, (3, 5), stride=(2, 1), padding=(2, 1), dilation=(2, 1)),
        nn.Conv2d(4, 4, 3, padding="same", padding_mode="reflect"),
    ],
    ids=["linear", "1x1-stride2", "3x3-stride2", "3x5-dilated", "same-reflect"],
)
def test_the_svd_pair_at_full_rank_computes_what_the_layer_does(layer: nn.Module) -> None:
    torch.manual_seed(0)
    if isinstance(layer, nn.Linear):
        full, x = min(layer.in_features, layer.out_features), torch.randn(3, layer.in_features)
    else:
        c_out, c_in, kh, kw = layer.weight.shape
        full, x = min(c_in * kh, c_out * kw), torch.randn(2, c_in, 11, 13)
    pair = svd_pair(layer, full)
    with torch.no_grad():
        torch.testing.assert_close(pair(x), layer(x), atol=1e-5, rtol=1e-4)
        low = svd_pair(layer, 1)(x)
    assert (low - layer(x)).abs().max() > 1e-3  # rank 1 is an approximation


def test_the_svd_pair_loses_exactly_the_dropped_singular_values() -> None:
    torch.manual_seed(0)
    layer = nn.Conv2d(8, 6, 3, bias=False)
    matrix = layer.weight.detach().permute(1, 2, 0, 3).reshape(24, 18)
    singular = torch.linalg.svdvals(matrix)
    pair = svd_pair(layer, 5)
    first, second = pair[0].weight, pair[1].weight  # (5, 8, 3, 1) and (6, 5, 1, 3)
    composed = torch.einsum("rihz,orzw->oihw", first, second)
    error = (composed - layer.weight).pow(2).sum()
    torch.testing.assert_close(error, singular[5:].pow(2).sum(), rtol=1e-4, atol=1e-6)


def test_inherited_weights_split_by_svd_keep_a_full_rank_layer_exact() -> None:
    torch.manual_seed(0)
    trained = create_model("resnet20", num_classes=10, in_channels=1).eval()
    whole = inherit_weights(_candidate(channels={"conv1": 8}), trained).eval()
    split = inherit_weights(_candidate(channels={"conv1": 8}, ranks={"fc": 99}), trained).eval()
    assert isinstance(split.fc, LowRank) and split.fc.rank == 10  # 99 % of 10: full rank
    x = torch.randn(4, *SHAPE)
    with torch.no_grad():
        torch.testing.assert_close(split(x), whole(x), atol=1e-4, rtol=1e-4)


def test_rank_decisions_offer_only_ratios_that_cut_macs() -> None:
    space = SearchSpace(
        model="resnet20",
        num_classes=10,
        in_channels=1,
        input_shape=SHAPE,
        width_ratios=(1.0,),
        depth=False,
        resolution_scales=(1.0,),
        weight_bits=(32,),
        activation_bits=(32,),
        channel_multiple=8,
        rank_ratios=(0.25, 0.5, 0.75, 1.0),
    )
    choices = {d.name: d.choices for d in space.decisions}
    assert choices["rank/layer1.0.conv1"] == (0.25, 0.5, 0.75, 1.0)  # 3x3, 16 -> 16
    # 1x1, 16 -> 32: rank 12 costs 12 x (16 + 32) = 576 > 512 MACs per position; 8 costs 384.
    assert choices["rank/layer2.0.downsample.0"] == (0.25, 0.5, 1.0)
    assert choices["rank/conv1"] == (0.25, 1.0)  # 1 input channel: every ratio is rank 1
    smallest = space.smallest()
    assert dict(smallest.ranks)["layer1.0.conv1"] == 25
    assert cost_report(smallest).macs < cost_report(space.largest()).macs
    assert "ranks" not in space.largest().to_dict()  # no split: the hash of old candidates


def test_ranks_are_refused_where_they_cannot_apply() -> None:
    with pytest.raises(ConfigError, match=r"ranks\['fc'\]` is 100.*1\.\.99"):
        _candidate(ranks={"fc": 100})
    with pytest.raises(ConfigError, match="unknown conv/linear layer.*'layer9.conv'"):
        build_model(_candidate(ranks={"layer9.conv": 50}), device="meta")
    depthwise = Candidate(
        model="mobilenet_v2",
        num_classes=10,
        in_channels=3,
        input_shape=(3, 32, 32),
        ranks={"features.1.conv.0.0": 50},
    )
    with pytest.raises(ConfigError, match="'features.1.conv.0.0', a Conv2d that cannot be"):
        build_model(depthwise, device="meta")
    restored = Candidate.from_dict(_candidate(ranks={"fc": 50}).to_dict())
    assert restored.ranks == (("fc", 50),)
