from __future__ import annotations

import math
import random
from collections.abc import Iterator

import pytest
import torch
from torch import nn

from autoprune.errors import ConfigError
from autoprune.spaces import Candidate, QuantConv2d, QuantLinear, SearchSpace, build_model
from autoprune.spaces._surgery import analyze

SHAPES = {
    "resnet20": (1, 28, 28),
    "resnet56": (1, 28, 28),
    "resnet18": (3, 32, 32),
    "resnet50": (3, 32, 32),
    "mobilenet_v2": (3, 32, 32),
}


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    # Tiny models gain nothing from intra-op threads, and on a shared machine OpenMP
    # spin-waiting makes them much slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_space(model: str, shape: tuple[int, int, int], **kw: object) -> SearchSpace:
    args: dict[str, object] = dict(
        model=model,
        num_classes=10,
        in_channels=shape[0],
        input_shape=shape,
        width_ratios=(0.25, 0.5, 0.75, 1.0),
        depth=True,
        resolution_scales=(1.0,),
        weight_bits=(32,),
        activation_bits=(32,),
        channel_multiple=8,
    )
    args.update(kw)
    return SearchSpace(**args)  # type: ignore[arg-type]


def random_candidate(space: SearchSpace, seed: int) -> Candidate:
    rng = random.Random(seed)
    return space.candidate({d.name: rng.choice(d.choices) for d in space.decisions})


@pytest.mark.parametrize("name", list(SHAPES))
def test_width_and_depth_surgery_keeps_every_residual_add_valid(name: str) -> None:
    shape = SHAPES[name]
    space = make_space(name, shape)
    for seed in range(2):
        c = random_candidate(space, seed)
        model = build_model(c, seed=seed)
        out = model(torch.randn(2, *c.input_shape))  # every residual add must line up
        assert out.shape == (2, 10)
        out.sum().backward()
        base = dict(space.channel_groups)
        for group, kept in c.channels:
            root = model.get_submodule(group)
            assert isinstance(root, nn.Conv2d | nn.Linear)
            width = root.out_channels if isinstance(root, nn.Conv2d) else root.out_features
            assert width == kept <= base[group]
        stages = {s.name: s for s in analyze(name, 10, shape[0], shape).stages}
        for stage, kept in c.blocks:
            blocks = [model.get_submodule(b) for b in stages[stage].blocks]
            assert [isinstance(b, nn.Identity) for b in blocks] == [
                i >= kept for i in range(len(blocks))
            ]


def test_vgg_flatten_linear_coupling() -> None:
    shape = (3, 32, 32)
    c = Candidate(
        model="vgg16_bn",
        num_classes=10,
        in_channels=3,
        input_shape=shape,
        channels={"features.40": 64, "classifier.0": 512, "features.0": 16},
    )
    model = build_model(c, seed=0)
    assert model.features[40].out_channels == 64
    assert model.classifier[0].in_features == 64 * 7 * 7  # flatten of the 7x7 adaptive pool
    assert model.classifier[0].out_features == 512 and model.classifier[3].in_features == 512
    assert model.classifier[6].out_features == 10  # the classifier output is never pruned
    assert model(torch.randn(2, *shape)).shape == (2, 10)


def test_dropped_blocks_become_identity_and_names_stay() -> None:
    c = Candidate(
        model="resnet20",
        num_classes=10,
        in_channels=1,
        input_shape=(1, 28, 28),
        blocks={"layer1": 1, "layer3": 2},
        channels={"layer1.2.conv1": 8, "layer3.0.conv1": 16},  # the first is in a dropped block
    )
    model = build_model(c, seed=0)
    assert isinstance(model.layer1[1], nn.Identity) and isinstance(model.layer1[2], nn.Identity)
    assert not isinstance(model.layer3[1], nn.Identity) and isinstance(model.layer3[2], nn.Identity)
    assert model.layer3[0].conv1.out_channels == 16
    assert model(torch.randn(1, 1, 28, 28)).shape == (1, 10)


def test_fresh_init_uses_the_models_scheme() -> None:
    c = Candidate(
        model="mobilenet_v2",
        num_classes=10,
        in_channels=3,
        input_shape=(3, 32, 32),
        channels={"features.18.0": 640},
    )
    model = build_model(c, seed=0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)
            assert torch.all(m.running_mean == 0) and torch.all(m.running_var == 1)
            assert int(m.num_batches_tracked) == 0
    conv = model.features[18][0]  # 1x1, 320 -> 640: kaiming normal, fan_out mode
    expected = math.sqrt(2.0 / conv.out_channels)
    assert abs(float(conv.weight.detach().std()) / expected - 1) < 0.05
    fc = model.classifier[1]  # N(0, 0.01) in torchvision's MobileNetV2
    assert fc.in_features == 640 and abs(float(fc.weight.detach().std()) / 0.01 - 1) < 0.05
    assert torch.all(fc.bias == 0)


def test_seed_makes_builds_deterministic_and_leaves_global_rng_alone() -> None:
    c = random_candidate(make_space("resnet20", (1, 28, 28)), 5)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = build_model(c, seed=7).state_dict()
    b = build_model(c, seed=7).state_dict()
    d = build_model(c, seed=8).state_dict()
    assert torch.equal(torch.get_rng_state(), before)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["conv1.weight"], d["conv1.weight"])


def test_resnet56_random_candidates_build_and_run() -> None:
    space = make_space("resnet56", (1, 28, 28), weight_bits=(8, 32), activation_bits=(8, 32))
    hashes = {random_candidate(space, s).hash for s in range(3)}
    assert len(hashes) == 3
    for s in range(3):
        assert build_model(random_candidate(space, s), seed=s)(torch.randn(1, 1, 28, 28)).shape == (
            1,
            10,
        )


def test_bits_below_32_wrap_layers_in_fake_quantization() -> None:
    c = Candidate(
        model="resnet20",
        num_classes=10,
        in_channels=1,
        input_shape=(1, 28, 28),
        channels={"layer1.0.conv1": 8},
        weight_bits={"layer1.0.conv1": 4, "fc": 8, "conv1": 32},
        activation_bits={"layer1.0.conv1": 8, "conv1": 8},
    )
    model = build_model(c, seed=0)
    q = model.layer1[0].conv1
    assert isinstance(q, QuantConv2d) and (q.weight_bits, q.activation_bits) == (4, 8)
    assert q.out_channels == 8  # pruned, then wrapped
    assert isinstance(model.fc, QuantLinear) and model.fc.activation_bits == 32
    assert isinstance(model.conv1, QuantConv2d) and model.conv1.weight_bits == 32
    assert type(model.layer1[0].conv2) is nn.Conv2d
    model(torch.randn(4, 1, 28, 28)).sum().backward()
    assert q.weight.grad is not None and q.act_step.grad is not None
    assert int(q.calibrated_batches) == 1 and model.conv1.weight_scale is None
    assert {"layer1.0.conv1.act_step", "layer1.0.conv1.weight_scale"} <= set(model.state_dict())


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("channels", {"conv7": 8}, "unknown channel group"),
        ("channels", {"conv1": 32}, "has 16 channels"),
        ("blocks", {"layer4": 1}, "unknown stage"),
        ("blocks", {"layer1": 4}, "has 3 blocks"),
        ("weight_bits", {"layer1.0.bn1": 8}, "unknown conv/linear layer"),
    ],
)
def test_build_rejects_names_the_base_model_lacks(field: str, value: object, match: str) -> None:
    kw: dict[str, object] = {field: value}
    c = Candidate(model="resnet20", num_classes=10, in_channels=1, input_shape=(1, 28, 28), **kw)
    with pytest.raises(ConfigError, match=match):
        build_model(c)


@pytest.mark.parametrize(
    ("name", "shape"),
    [
        ("resnet20", (1, 28, 28)),
        ("densenet121", (1, 48, 48)),  # concatenations: each layer's indices mapped
        ("convnext_tiny", (1, 48, 48)),  # layer scales: unwrapped parameters replaced
        ("resnext50_32x4d", (1, 32, 32)),  # grouped convolutions
    ],
)
def test_a_rebuilt_architecture_replays_its_cuts_to_the_same_model(
    name: str, shape: tuple[int, int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    from autoprune.spaces import _cuts, _surgery

    space = make_space(name, shape, width_ratios=(0.5, 1.0))
    candidate = space.candidate({d.name: min(d.choices) for d in space.decisions})
    monkeypatch.setattr(_cuts, "_recorded", type(_cuts._recorded)())
    traced = build_model(candidate, seed=1).state_dict()
    assert len(_cuts._recorded) == 1

    def no_tracing(*args: object, **kwargs: object) -> None:
        raise AssertionError("traced again")

    monkeypatch.setattr(_surgery, "_channel_groups", no_tracing)
    replayed = build_model(candidate, seed=1).state_dict()
    assert list(replayed) == list(traced)
    assert all(torch.equal(replayed[k], traced[k]) for k in traced)
    on_meta = build_model(candidate, device="meta").state_dict()
    assert {k: v.shape for k, v in on_meta.items()} == {k: v.shape for k, v in traced.items()}
