from __future__ import annotations

import copy
from collections.abc import Iterator

import pytest
import torch
from torch import nn

from autoprune.errors import ConfigError
from autoprune.spaces import (
    Candidate,
    QuantConv2d,
    QuantLinear,
    SearchSpace,
    SoftPruning,
    build_model,
    create_model,
    inherit_weights,
)

MNIST = (1, 28, 28)


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    # Tiny models gain nothing from intra-op threads; on a shared 2-core machine they hurt.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def randomize(model: nn.Module, seed: int) -> nn.Module:
    """Give every parameter and BN statistic distinct random values (a stand-in for training)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2 / fan_in) ** 0.5)
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
            elif isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                m.num_batches_tracked.fill_(7)
    return model


@pytest.fixture(scope="module")
def trained() -> nn.Module:
    return randomize(create_model("resnet20", num_classes=10, in_channels=1), seed=0).eval()


def resnet20(**kw: object) -> Candidate:
    return Candidate(model="resnet20", num_classes=10, in_channels=1, input_shape=MNIST, **kw)  # type: ignore[arg-type]


def l1(weight: torch.Tensor, dim: int) -> torch.Tensor:
    """Per-channel sum of |w| along channel axis ``dim`` (0: conv outputs, 1: conv inputs)."""
    return weight.detach().abs().transpose(0, dim).flatten(1).sum(1)


def top(scores: torch.Tensor, k: int) -> list[int]:
    return sorted(torch.topk(scores, k).indices.tolist())


def same_structure(a: nn.Module, b: nn.Module) -> None:
    assert {n: type(m) for n, m in a.named_modules()} == {n: type(m) for n, m in b.named_modules()}
    sa, sb = a.state_dict(), b.state_dict()
    assert {k: v.shape for k, v in sa.items()} == {k: v.shape for k, v in sb.items()}


def test_full_candidate_reproduces_the_trained_model_and_leaves_it_alone(
    trained: nn.Module,
) -> None:
    before = {k: v.clone() for k, v in trained.state_dict().items()}
    x = torch.randn(4, *MNIST)
    for c in (resnet20(), resnet20(channels={"conv1": 16, "layer3.0.conv1": 64})):
        model = inherit_weights(c, trained)
        assert model.training
        same_structure(model, build_model(c, seed=0))
        assert torch.equal(model.eval()(x), trained(x))
    after = trained.state_dict()
    assert not trained.training and all(torch.equal(before[k], after[k]) for k in before)


def test_inner_group_keeps_the_channels_with_the_largest_l1_norm(trained: nn.Module) -> None:
    c = resnet20(channels={"layer1.0.conv1": 5, "layer2.1.conv1": 12, "conv1": 8})
    model = inherit_weights(c, trained)
    same_structure(model, build_model(c, seed=0))
    stem = top(stem_scores(trained, blocks=3), 8)
    for name, k in (("layer1.0", 5), ("layer2.1", 12)):
        base, block = trained.get_submodule(name), model.get_submodule(name)
        # Li et al. 2017 extended to the group: the filter, its BN scale and the next conv's
        # input slice, all on the trained (unpruned) weights.
        scores = l1(base.conv1.weight, 0) + base.bn1.weight.abs() + l1(base.conv2.weight, 1)
        kept = top(scores, k)
        assert kept != list(range(k))  # otherwise first-k would pass too
        w = base.conv1.weight[kept]
        if name == "layer1.0":  # its input is the pruned stem group
            w = w[:, stem]
        assert torch.equal(block.conv1.weight, w)
        for attr in ("weight", "bias", "running_mean", "running_var"):
            assert torch.equal(getattr(block.bn1, attr), getattr(base.bn1, attr)[kept])
        assert torch.equal(block.bn1.num_batches_tracked, base.bn1.num_batches_tracked)
        out = slice(None) if name == "layer2.1" else stem  # layer1 is the stem group
        assert torch.equal(block.conv2.weight, base.conv2.weight[out][:, kept])


def test_l2_ranks_by_sum_of_squares(trained: nn.Module) -> None:
    model = inherit_weights(resnet20(channels={"layer3.1.conv1": 20}), trained, importance="l2")
    base = trained.layer3[1]
    scores = (
        base.conv1.weight.detach().pow(2).flatten(1).sum(1)
        + base.bn1.weight.detach().pow(2)
        + base.conv2.weight.detach().pow(2).transpose(0, 1).flatten(1).sum(1)
    )
    kept = top(scores, 20)
    assert kept != top(
        l1(base.conv1.weight, 0) + base.bn1.weight.abs() + l1(base.conv2.weight, 1), 20
    )  # otherwise l1 would pass too
    assert torch.equal(model.layer3[1].conv1.weight, base.conv1.weight[kept])


def ranked(scores: torch.Tensor, k: int) -> list[int]:
    """The ``k`` highest, ties to the lower index (as ``inherit_weights`` breaks them)."""
    return sorted(torch.argsort(scores, descending=True, stable=True)[:k].tolist())


@pytest.fixture(scope="module")
def batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(3)
    return [(torch.randn(16, *MNIST, generator=g), torch.randint(0, 10, (16,), generator=g))] * 2


def test_bn_scale_keeps_the_channels_of_largest_batchnorm_scale(trained: nn.Module) -> None:
    model = inherit_weights(
        resnet20(channels={"layer2.1.conv1": 12}), trained, importance="bn_scale"
    )
    base = trained.layer2[1]
    kept = top(base.bn1.weight.detach().abs(), 12)
    assert kept != top(
        l1(base.conv1.weight, 0) + base.bn1.weight.abs() + l1(base.conv2.weight, 1), 12
    )  # otherwise l1 would pass too
    assert torch.equal(model.layer2[1].conv1.weight, base.conv1.weight[kept])


def test_taylor_ranks_by_weight_times_gradient_over_the_batches(
    trained: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]]
) -> None:
    model = inherit_weights(
        resnet20(channels={"layer2.1.conv1": 12}), trained, importance="taylor", batches=batches
    )
    # By hand: the cross-entropy's gradients summed over the batches, in evaluation mode, and
    # |w * dL/dw| summed over the channel's filter and the next conv's input slice.
    net = copy.deepcopy(trained).eval()
    for images, labels in batches:
        nn.functional.cross_entropy(net(images), labels).backward()
    block = net.layer2[1]
    saliency = (block.conv1.weight * block.conv1.weight.grad).detach().abs()
    scores = saliency.flatten(1).sum(1)
    saliency = (block.conv2.weight * block.conv2.weight.grad).detach().abs()
    scores = scores + saliency.transpose(0, 1).flatten(1).sum(1)
    kept = ranked(scores, 12)
    assert kept != top(l1(block.conv1.weight, 0) + block.bn1.weight.abs(), 12)
    assert torch.equal(model.layer2[1].conv1.weight, trained.layer2[1].conv1.weight[kept])
    assert all(p.grad is None for p in model.parameters())  # fine-tuning starts clean
    assert all(p.grad is None for p in trained.parameters())


def test_apoz_keeps_the_channels_zeroed_least_often(
    trained: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]]
) -> None:
    before = {k: v.clone() for k, v in trained.state_dict().items()}
    model = inherit_weights(
        resnet20(channels={"layer2.1.conv1": 12}), trained, importance="apoz", batches=batches
    )
    # The channel's activation after the ReLU, where conv2 reads it: its share of non-zeros.
    seen: list[torch.Tensor] = []
    hook = trained.layer2[1].conv2.register_forward_hook(lambda m, i, o: seen.append(i[0]))
    with torch.no_grad():
        for images, _ in batches:
            trained(images)
    hook.remove()
    nonzero = torch.cat(seen).ne(0).double().mean((0, 2, 3)).float()
    kept = ranked(nonzero, 12)
    assert kept != list(range(12))
    assert torch.equal(model.layer2[1].conv1.weight, trained.layer2[1].conv1.weight[kept])
    after = trained.state_dict()  # BN statistics untouched: ranked in evaluation mode
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("importance", ["taylor", "apoz"])
def test_data_driven_importance_without_batches_is_refused(
    trained: nn.Module, importance: str
) -> None:
    with pytest.raises(ConfigError, match=f"importance '{importance}' ranks channels on training"):
        inherit_weights(resnet20(channels={"conv1": 8}), trained, importance=importance)


@pytest.mark.parametrize("model_name", ["resnet20", "mobilenet_v2"])
def test_soft_pruning_zeroes_what_the_cut_removes(
    trained: nn.Module, mobilenet: nn.Module, model_name: str
) -> None:
    # Every layer writing a dropped channel is zeroed (BN's shift too), so the full-width
    # network already computes what the cut one does, residual streams and depthwise convs
    # included; the zeroed channels can still learn until the cut.
    if model_name == "resnet20":  # groups of 16 and 32 channels, one block dropped
        base, shape, dropped = trained, MNIST, 8 + 20
        c = resnet20(channels={"conv1": 8, "layer2.1.conv1": 12}, blocks={"layer3": 2})
    else:  # groups of 32 and 96 channels
        base, shape, dropped = mobilenet, (3, 32, 32), 16 + 56
        c = mobilenet_candidate(channels={"features.0.0": 16, "features.2.conv.0.0": 40})
    soft = SoftPruning(c, base)
    assert soft.model.training
    assert soft.zero() == dropped
    x = torch.randn(4, *shape)
    with torch.no_grad():
        full = soft.model.eval()(x)
        cut = soft.cut().eval()
        assert torch.allclose(cut(x), full, atol=1e-5)
    same_structure(cut, build_model(c, seed=0))


def stem_scores(base: nn.Module, blocks: int) -> torch.Tensor:
    """Group L1 of the residual stream of layer1 over its first ``blocks`` blocks, by hand."""
    scores = l1(base.conv1.weight, 0) + base.bn1.weight.abs()
    for i in range(blocks):
        block = base.layer1[i]
        scores = scores + l1(block.conv2.weight, 0) + block.bn2.weight.abs()
        scores = scores + l1(block.conv1.weight, 1)
    return scores + l1(base.layer2[0].conv1.weight, 1) + l1(base.layer2[0].downsample[0].weight, 1)


def test_residual_group_is_ranked_over_its_live_layers_and_cut_consistently(
    trained: nn.Module,
) -> None:
    c = resnet20(channels={"conv1": 6}, blocks={"layer1": 2})
    model = inherit_weights(c, trained)
    same_structure(model, build_model(c, seed=0))
    assert isinstance(model.layer1[2], nn.Identity)
    kept = top(stem_scores(trained, blocks=2), 6)  # the dropped layer1.2 has no say
    assert kept != top(stem_scores(trained, blocks=3), 6)
    t, m = trained, model
    assert torch.equal(m.conv1.weight, t.conv1.weight[kept])
    assert torch.equal(m.bn1.running_var, t.bn1.running_var[kept])
    for i in range(2):
        assert torch.equal(m.layer1[i].conv1.weight, t.layer1[i].conv1.weight[:, kept])
        assert torch.equal(m.layer1[i].conv2.weight, t.layer1[i].conv2.weight[kept])
        assert torch.equal(m.layer1[i].bn2.running_mean, t.layer1[i].bn2.running_mean[kept])
    assert torch.equal(m.layer2[0].conv1.weight, t.layer2[0].conv1.weight[:, kept])
    assert torch.equal(m.layer2[0].downsample[0].weight, t.layer2[0].downsample[0].weight[:, kept])


def test_pruning_dead_channels_keeps_the_function(trained: nn.Module) -> None:
    # Channels with zero BN scale and shift contribute nothing (ReLU(0) = 0) and have the
    # smallest L1 norm, so pruning them must leave the outputs unchanged: this checks that the
    # running statistics and input slices of every layer were carried over.
    dead = copy.deepcopy(trained)
    drop = [1, 4, 6, 9, 13]
    with torch.no_grad():
        block = dead.layer1[1]
        block.conv1.weight[drop] *= 1e-3
        block.conv2.weight[:, drop] *= 1e-3
        block.bn1.weight[drop] = 0
        block.bn1.bias[drop] = 0
    model = inherit_weights(resnet20(channels={"layer1.1.conv1": 11}), dead).eval()
    assert model.layer1[1].conv1.out_channels == 11
    x = torch.randn(4, *MNIST)
    # Up to float rounding: 11 channels sum in another order than 16 (a wrong carry-over moves
    # the outputs by tenths).
    torch.testing.assert_close(model(x), dead(x), rtol=1e-4, atol=1e-4)


def test_dropped_blocks_go_and_kept_blocks_keep_their_trained_weights(trained: nn.Module) -> None:
    c = resnet20(blocks={"layer1": 1, "layer3": 2})
    model = inherit_weights(c, trained)
    same_structure(model, build_model(c, seed=0))
    base = trained.state_dict()
    assert all(torch.equal(v, base[k]) for k, v in model.state_dict().items())
    reference = copy.deepcopy(trained)
    reference.layer1[1] = reference.layer1[2] = reference.layer3[2] = nn.Identity()
    x = torch.randn(2, *MNIST)
    assert torch.equal(model.eval()(x), reference(x))


def test_low_bit_layers_are_wrapped_around_the_inherited_weights(trained: nn.Module) -> None:
    c = resnet20(
        channels={"layer1.0.conv1": 8},
        blocks={"layer2": 2},
        weight_bits={"layer1.0.conv1": 4, "fc": 8, "layer2.2.conv1": 4},  # the last is dropped
        activation_bits={"layer1.0.conv1": 8},
    )
    model = inherit_weights(c, trained)
    same_structure(model, build_model(c, seed=0))
    q = model.layer1[0].conv1
    assert isinstance(q, QuantConv2d) and (q.weight_bits, q.activation_bits) == (4, 8)
    assert int(q.calibrated_batches) == 0  # a fresh quantizer: calibrated by fine-tuning
    base = trained.layer1[0]
    kept = top(l1(base.conv1.weight, 0) + base.bn1.weight.abs() + l1(base.conv2.weight, 1), 8)
    assert torch.equal(q.weight, base.conv1.weight[kept])
    assert isinstance(model.fc, QuantLinear) and torch.equal(model.fc.weight, trained.fc.weight)
    assert isinstance(model.layer2[2], nn.Identity)
    model(torch.randn(2, *MNIST)).sum().backward()
    assert q.weight.grad is not None


def test_equal_scores_keep_the_first_channels() -> None:
    # Weights of magnitude 1 with random signs: every channel of a group scores the same, and
    # the signs tell the channels apart.
    base = create_model("resnet20", num_classes=10, in_channels=1)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in base.parameters():
            p.copy_(torch.randint(0, 2, p.shape, generator=g).float() * 2 - 1)
    model = inherit_weights(resnet20(channels={"layer2.0.conv1": 10}), base)
    assert torch.equal(model.layer2[0].conv1.weight, base.layer2[0].conv1.weight[:10])


def test_random_importance_is_seeded_and_leaves_the_global_rng_alone(trained: nn.Module) -> None:
    c = resnet20(channels={"layer1.0.conv1": 4, "layer3.0.conv1": 32})

    def weights(**kw: object) -> torch.Tensor:
        return inherit_weights(c, trained, **kw).layer3[0].conv1.weight  # type: ignore[arg-type]

    torch.manual_seed(3)
    state = torch.get_rng_state()
    a = weights(importance="random", seed=1)
    b = weights(importance="random", seed=1)
    d = weights(importance="random", seed=2)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a, b) and not torch.equal(a, d)
    assert torch.equal(weights(), weights())  # l1 is deterministic


@pytest.mark.parametrize(
    ("kind", "match"),
    [
        ("resnet56", r"has 216 unexpected tensor\(s\) \(layer1\.3\.conv1\.weight,"),
        ("classes", r"fc\.weight has shape \(5, 64\), expected \(10, 64\)"),
        ("in_channels", r"conv1\.weight has shape \(16, 3, 3, 3\), expected \(16, 1, 3, 3\)"),
        ("missing", r"lacks 2 tensor\(s\) \(fc\.weight, fc\.bias\)"),
        (
            "quantized",
            r"unexpected tensor\(s\) \(conv1\.(act_step|act_signed|weight_scale|calibrated_"
            r"batches), .*a float model \(not fake-quantized\)$",
        ),
        ("meta", "meta device"),
        ("nan", r"non-finite values in layer2\.0\.bn1\.running_var"),
        ("not a module", "must be an nn.Module"),
    ],
)
def test_mismatched_trained_base_is_rejected(kind: str, match: str) -> None:
    def make(model: str = "resnet20", classes: int = 10, in_channels: int = 1) -> nn.Module:
        return create_model(model, num_classes=classes, in_channels=in_channels)

    base: object
    if kind == "resnet56":
        base = make("resnet56")
    elif kind == "classes":
        base = make(classes=5)
    elif kind == "in_channels":
        base = make(in_channels=3)
    elif kind == "missing":
        base = make()
        base.fc = nn.Identity()  # type: ignore[union-attr]
    elif kind == "quantized":
        base = make()
        base.conv1 = QuantConv2d.from_float(base.conv1, weight_bits=8, activation_bits=8)  # type: ignore[union-attr, arg-type]
    elif kind == "meta":
        with torch.device("meta"):
            base = make()
    elif kind == "nan":
        base = make()
        base.layer2[0].bn1.running_var[3] = float("nan")  # type: ignore[union-attr, index]
    else:
        base = make().state_dict()
    with pytest.raises(ConfigError, match=match):
        inherit_weights(resnet20(), base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "candidate", "match"),
    [
        (
            {"importance": "hessian"},
            {},
            r"^unknown importance 'hessian'; valid importances: l1, l2, bn_scale, taylor, apoz, "
            r"random$",
        ),
        ({"device": "meta"}, {}, "device='meta'"),
        ({}, {"channels": {"conv7": 8}}, "unknown channel group"),
        ({}, {"blocks": {"layer1": 4}}, "has 3 blocks"),
        ({}, {"weight_bits": {"layer1.0.bn1": 8}}, "unknown conv/linear layer"),
    ],
)
def test_bad_arguments_and_candidates_are_rejected(
    trained: nn.Module, kwargs: dict[str, object], candidate: dict[str, object], match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        inherit_weights(resnet20(**candidate), trained, **kwargs)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def mobilenet() -> nn.Module:
    return randomize(create_model("mobilenet_v2", num_classes=10, in_channels=3), seed=1).eval()


def mobilenet_candidate(**kw: object) -> Candidate:
    return Candidate(
        model="mobilenet_v2",
        num_classes=10,
        in_channels=3,
        input_shape=(3, 32, 32),
        **kw,  # type: ignore[arg-type]
    )


def test_depthwise_group_counts_the_depthwise_filters(mobilenet: nn.Module) -> None:
    # features.2 is expand 1x1 (16 -> 96) + BN, depthwise 3x3 + BN, project 1x1 (96 -> 24): one
    # group of 96 channels. Channels 0..19 get large depthwise filters and tiny weights elsewhere,
    # so they win only if the depthwise filters are counted.
    base = copy.deepcopy(mobilenet)
    expand, ebn = base.features[2].conv[0][0], base.features[2].conv[0][1]
    dw, dbn = base.features[2].conv[1][0], base.features[2].conv[1][1]
    project = base.features[2].conv[2]
    with torch.no_grad():
        dw.weight[:20] *= 50
        for t in (expand.weight[:20], ebn.weight[:20], dbn.weight[:20], project.weight[:, :20]):
            t *= 0.1
    scores = (
        l1(expand.weight, 0)
        + ebn.weight.abs()
        + l1(dw.weight, 0)
        + dbn.weight.abs()
        + l1(project.weight, 1)
    )
    kept = top(scores, 20)
    assert kept == list(range(20))
    c = mobilenet_candidate(channels={"features.2.conv.0.0": 20})
    model = inherit_weights(c, base)
    same_structure(model, build_model(c, seed=0))
    block = model.features[2].conv
    assert torch.equal(block[1][0].weight, dw.weight[kept]) and block[1][0].groups == 20
    assert torch.equal(block[1][1].running_var, dbn.running_var[kept])
    assert torch.equal(block[2].weight, project.weight[:, kept])


@pytest.mark.parametrize("importance", ["taylor", "apoz"])
def test_data_driven_importance_counts_the_depthwise_conv(
    mobilenet: nn.Module, importance: str
) -> None:
    # features.2's group of 96 channels: expand 1x1, depthwise 3x3, project 1x1. By hand, with
    # the depthwise conv's share: its filters' |w * dL/dw| (taylor), or the non-zeros of the
    # activation it reads (apoz).
    g = torch.Generator().manual_seed(5)
    data = [(torch.randn(8, 3, 32, 32, generator=g), torch.randint(0, 10, (8,), generator=g))]
    net = copy.deepcopy(mobilenet).eval()
    expand, dw, project = (
        net.features[2].conv[0][0],
        net.features[2].conv[1][0],
        net.features[2].conv[2],
    )
    inputs: dict[nn.Module, torch.Tensor] = {}
    hooks = [
        m.register_forward_hook(lambda m, i, o: inputs.__setitem__(m, i[0].detach()))
        for m in (dw, project)
    ]
    nn.functional.cross_entropy(net(data[0][0]), data[0][1]).backward()
    for hook in hooks:
        hook.remove()
    if importance == "taylor":

        def saliency(conv: nn.Conv2d, dim: int) -> torch.Tensor:
            return l1(conv.weight * conv.weight.grad, dim)

        scores = saliency(expand, 0) + saliency(dw, 0) + saliency(project, 1)
        without_dw = scores - saliency(dw, 0)
    else:

        def nonzero(conv: nn.Conv2d) -> torch.Tensor:
            return inputs[conv].ne(0).double().mean((0, 2, 3)).float()

        scores = nonzero(dw) + nonzero(project)
        without_dw = nonzero(project)
    kept = ranked(scores, 40)
    assert kept != ranked(without_dw, 40)  # so the depthwise share decides some channels
    c = mobilenet_candidate(channels={"features.2.conv.0.0": 40})
    model = inherit_weights(c, mobilenet, importance=importance, batches=data)
    assert torch.equal(model.features[2].conv[1][0].weight, dw.weight[kept])


def test_mobilenet_dead_channels_and_random_candidates(mobilenet: nn.Module) -> None:
    dead = copy.deepcopy(mobilenet)
    drop = list(range(0, 144, 3))  # 48 of features.4's 144 expanded channels
    block = dead.features[4].conv
    with torch.no_grad():
        for t in (block[0][0].weight, block[0][1].weight, block[1][0].weight):
            t[drop] *= 1e-3
        block[2].weight[:, drop] *= 1e-3
        block[1][1].weight[drop] = 0
        block[1][1].bias[drop] = 0
    c = mobilenet_candidate(channels={"features.4.conv.0.0": 96})
    model = inherit_weights(c, dead).eval()
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(model(x), dead(x))

    space = SearchSpace(
        model="mobilenet_v2",
        num_classes=10,
        in_channels=3,
        input_shape=(3, 32, 32),
        width_ratios=(0.25, 0.5, 1.0),
        depth=True,
        resolution_scales=(1.0,),
        weight_bits=(32,),
        activation_bits=(32,),
        channel_multiple=8,
    )
    c = space.smallest()
    model = inherit_weights(c, mobilenet)
    same_structure(model, build_model(c, seed=0))
    assert torch.isfinite(model.eval()(x)).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_trained_base_on_gpu_and_result_on_gpu(trained: nn.Module) -> None:
    c = resnet20(channels={"layer1.0.conv1": 8})
    on_cpu = inherit_weights(c, trained).eval()
    on_gpu = inherit_weights(c, copy.deepcopy(trained).cuda(), device="cuda").eval()
    assert on_gpu.layer1[0].conv1.weight.is_cuda
    for name, tensor in on_cpu.state_dict().items():
        torch.testing.assert_close(on_gpu.state_dict()[name].cpu(), tensor, rtol=0, atol=0)
    # cuDNN convolves in TF32 by default (10-bit mantissa), so outputs agree to about 1e-3
    # relative, not to float32's 1e-6.
    x = torch.randn(2, *MNIST)
    torch.testing.assert_close(on_gpu(x.cuda()).cpu(), on_cpu(x), rtol=1e-2, atol=5e-2)
