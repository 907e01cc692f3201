"""Surgery: build the compact ``nn.Module`` of a :class:`Candidate`.

Steps 1-4 run on the ``meta`` device (shapes only), so no weight is allocated or initialised
before the model has its final size:

1. ``create_model`` the base model;
2. depth: replace the dropped blocks of each stage by ``nn.Identity`` (module names of the kept
   layers stay those of the base model);
3. width: prune each channel group to its kept count with Torch-Pruning's ``DependencyGraph``
   (physically smaller Conv/BN/Linear; residual adds, depthwise convs and flatten->linear stay
   consistent; traced once per architecture, then replayed, :mod:`._cuts`). The first ``k``
   channels are kept: any choice is as good, because step 5 initialises them afresh;
4. rank: split each layer with a rank into two thin ones (:mod:`._lowrank`);
5. every parameter is then allocated and initialised from scratch with the model's own scheme
   (Liu et al. 2019: the architecture, not the inherited weights, is what matters);
6. layers with bit-widths below 32 are wrapped in fake quantization (:mod:`._quant`), both
   halves of a split layer at its bit-widths.

:func:`~autoprune.spaces.inherit_weights` (:mod:`._inherit`) shares steps 2, 3, 4 and 6 but
starts from trained weights, keeps the channels an importance criterion ranks highest, and
splits a layer by the truncated SVD of its kept weights.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from autoprune.errors import ConfigError
from autoprune.spaces._blocks import Stage, find_stages
from autoprune.spaces._candidate import Candidate
from autoprune.spaces._costs import CostReport, count_costs
from autoprune.spaces._cuts import Cut, prune_recording, recorded_cuts, remember_cuts, replay
from autoprune.spaces._lowrank import LowRank, check_factorizable, rank_of, split, svd_pair
from autoprune.spaces._quant import QuantConv2d, QuantLinear
from autoprune.spaces._quantizers import FLOAT_BITS
from autoprune.spaces._sources import create_model, model_source

if TYPE_CHECKING:
    import torch_pruning as tp

__all__ = ["build_model", "cost_report"]

_logger = logging.getLogger("autoprune.spaces")

_QUANTIZABLE = (nn.Conv2d, nn.Linear)


@dataclass(frozen=True)
class ChannelGroup:
    """Output channels that must be pruned together (coupled by residual adds, depthwise convs,
    flatten->linear). Named by its first root conv/linear in module order."""

    name: str
    channels: int
    roots: tuple[str, ...]
    multiple: int = 1  # kept counts are multiples of it: the grouped convolutions' group count


@dataclass(frozen=True)
class BaseAnalysis:
    """What a search space needs to know about a base model at one input shape."""

    groups: tuple[ChannelGroup, ...]
    stages: tuple[Stage, ...]
    layers: tuple[str, ...]  # every Conv2d/Linear, module order
    classifier: str
    attention: tuple[str, ...] = ()  # attention modules (a transformer: width not searchable)


def attention_modules(model: nn.Module) -> tuple[str, ...]:
    """Names of ``model``'s attention modules (``nn.MultiheadAttention``, or a class whose name
    says ``Attention``, as in torchvision's Swin and MaxViT and timm's transformers)."""
    return tuple(
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.MultiheadAttention) or "Attention" in type(module).__name__
    )


def classifier_name(model: nn.Module) -> str:
    """The final classifier: the last ``nn.Linear`` in module order (else the last conv)."""
    last = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            last = name
    if last is None:
        for name, module in model.named_modules():
            if isinstance(module, nn.Conv2d):
                last = name
    assert last is not None, "a zoo model has a conv or linear classifier"
    return last


def _channel_groups(
    model: nn.Module, input_shape: tuple[int, int, int], classifier: str
) -> list[tuple[ChannelGroup, tp.Group]]:
    """Trace ``model`` with Torch-Pruning and return its prunable channel groups."""
    import torch_pruning as tp  # noqa: PLC0415 - with timm and torchvision: ~3 s, when tracing

    names = {module: name for name, module in model.named_modules()}
    order = {name: i for i, name in enumerate(names.values())}
    device = next(model.parameters()).device
    example = torch.zeros(1, *input_shape, device=device)
    was_training = model.training
    model.eval()  # BN in training mode rejects a 1x1 feature map at batch size 1
    try:
        with torch.enable_grad():  # the dependency graph is traced through autograd
            graph = tp.DependencyGraph().build_dependency(
                model, example_inputs=example, verbose=False
            )
    finally:
        model.train(was_training)
    out: list[tuple[ChannelGroup, tp.Group]] = []
    for group in graph.get_all_groups(
        ignored_layers=[model.get_submodule(classifier)], root_module_types=list(_QUANTIZABLE)
    ):
        roots = {
            names[dep.target.module]
            for dep, _ in group
            if graph.is_out_channel_pruning_fn(dep.handler)
            and isinstance(dep.target.module, _QUANTIZABLE)
            and dep.target.module in names
        }
        ordered = tuple(sorted(roots, key=order.__getitem__))
        # A grouped (not depthwise) convolution keeps its group count: each group narrower.
        multiple = 1
        for dep, _ in group:
            conv = dep.target.module
            if isinstance(conv, nn.Conv2d) and 1 < conv.groups < conv.in_channels:
                multiple = math.lcm(multiple, conv.groups)
        out.append((ChannelGroup(ordered[0], len(group[0].idxs), ordered, multiple), group))
    out.sort(key=lambda item: order[item[0].name])
    return out


@functools.lru_cache(maxsize=64)
def analyze(
    model: str, num_classes: int, in_channels: int, input_shape: tuple[int, int, int]
) -> BaseAnalysis:
    """Channel groups, stages and quantizable layers of a base model (cached per arguments).

    Raises:
        ConfigError: the model cannot run at ``input_shape`` (e.g. too small for its pooling).
    """
    net = create_model(model, num_classes=num_classes, in_channels=in_channels, device="meta")
    classifier = classifier_name(net)
    attention = attention_modules(net)
    try:
        output = _output_shape(net, input_shape)
        stages = find_stages(net, input_shape)
    except (RuntimeError, ValueError) as exc:  # shape errors from the model's forward
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            f"model {model!r} cannot run at input shape {input_shape} ({first_line}); use a "
            f"larger input_shape or resolution scale"
        ) from exc
    groups = [] if attention else _traced_groups(model, net, input_shape, classifier)
    if output != (1, num_classes):
        raise ConfigError(
            f"model {model!r} returns a tensor of shape {output} for one input, not (1, "
            f"{num_classes}); a classifier must return logits (batch, num_classes): check "
            f"model.num_classes and the model's head"
        )
    layers = tuple(n for n, m in net.named_modules() if isinstance(m, _QUANTIZABLE))
    return BaseAnalysis(
        groups=tuple(g for g, _ in groups),
        stages=stages,
        layers=layers,
        classifier=classifier,
        attention=attention,
    )


def _traced_groups(
    model: str, net: nn.Module, input_shape: tuple[int, int, int], classifier: str
) -> list[tuple[ChannelGroup, tp.Group]]:
    """:func:`_channel_groups`, or none (no width decisions) where Torch-Pruning cannot trace
    the model's channel dependencies (e.g. ShuffleNet's channel shuffle), with one warning."""
    try:
        return _channel_groups(net, input_shape, classifier)
    except Exception as exc:  # noqa: BLE001 - any tracing failure: keep the other decisions
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        _logger.warning(
            "Torch-Pruning cannot trace the channel dependencies of %r (%s%s): its space has no "
            "width decisions",
            model,
            type(exc).__name__,
            f": {reason[:120]}" if reason else "",
        )
        return []


def _output_shape(net: nn.Module, input_shape: tuple[int, int, int]) -> tuple[int, ...] | str:
    """The shape of ``net``'s output for one input (its type name when not a tensor)."""
    param = next(net.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    was_training = net.training
    try:
        with torch.no_grad():
            out = net.eval()(torch.zeros(1, *input_shape, device=device))
    finally:
        net.train(was_training)
    return tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__


def is_under(name: str, blocks: Iterable[str]) -> bool:
    """Whether module ``name`` is one of ``blocks`` or inside one of them."""
    return any(name == b or name.startswith(b + ".") for b in blocks)


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, module)


def _unknown(kind: str, names: list[str], valid: tuple[str, ...]) -> ConfigError:
    shown = ", ".join(valid[:12]) + (f", ... ({len(valid)} in all)" if len(valid) > 12 else "")
    return ConfigError(f"candidate names unknown {kind} {names}; valid {kind}s: {shown}")


# Which channels of a channel group survive: ``keep(group, k)`` -> ``k`` sorted channel indices.
KeepFn = Callable[["tp.Group", int], list[int]]


def first_channels(group: tp.Group, kept: int) -> list[int]:
    """The first ``kept`` channels (:func:`build_model` re-initialises them, so any are as good)."""
    return list(range(kept))


def drop_blocks(model: nn.Module, candidate: Candidate, base: BaseAnalysis) -> set[str]:
    """Depth surgery on ``model`` (a base model) in place: each stage keeps its first blocks;
    returns the dropped blocks (now ``nn.Identity``).

    Raises:
        ConfigError: the candidate names a stage the base model does not have, or a count
            outside ``1..base``.
    """
    stages = {s.name: s for s in base.stages}
    dropped: set[str] = set()
    for stage_name, kept in candidate.blocks:
        stage = stages.get(stage_name)
        if stage is None:
            raise _unknown("stage", [stage_name], tuple(stages))
        if not 1 <= kept <= stage.num_blocks:
            raise ConfigError(
                f"stage {stage_name!r} has {stage.num_blocks} blocks, but the candidate keeps "
                f"{kept}; keep 1..{stage.num_blocks}"
            )
        for block in stage.blocks[kept:]:
            _set_submodule(model, block, nn.Identity())
            dropped.add(block)
    return dropped


def shrink(
    model: nn.Module,
    candidate: Candidate,
    base: BaseAnalysis,
    keep: KeepFn,
    prepare: Callable[[nn.Module], None] | None = None,
    cuts: list[Cut] | None = None,
) -> set[str]:
    """Depth and width surgery on ``model`` (a base model) in place; returns the dropped blocks.

    ``prepare`` is called with the depth-reduced model before any channel is ranked, when some
    are (a data-driven ``keep`` gathers its gradients or activations there). The width cuts
    made are appended to ``cuts`` when given, to :func:`replay` on another copy of the
    depth-reduced base (:func:`drop_blocks`).

    Raises:
        ConfigError: the candidate names a group or stage the base model does not have, or a
            count outside ``1..base``.
    """
    dropped = drop_blocks(model, candidate, base)

    # Width: prune every live group to its kept channel count.
    base_groups = {g.name: g for g in base.groups}
    wanted = dict(candidate.channels)
    unknown = [n for n in wanted if n not in base_groups]
    if unknown:
        raise _unknown("channel group", unknown, tuple(base_groups))
    for name, kept in wanted.items():
        if kept > base_groups[name].channels:
            raise ConfigError(
                f"channel group {name!r} has {base_groups[name].channels} channels, but the "
                f"candidate keeps {kept}; keep 1..{base_groups[name].channels}"
            )
    if not any(kept < base_groups[n].channels for n, kept in wanted.items()):
        return dropped
    # The first channels: the same cuts for every build of the architecture, traced once.
    architecture = (
        dataclasses.replace(candidate, weight_bits=(), activation_bits=(), ranks=())
        if keep is first_channels
        else None
    )
    known = recorded_cuts(architecture) if architecture is not None else None
    if known is not None:
        replay(model, known)
        if cuts is not None:
            cuts.extend(known)
        return dropped
    if prepare is not None:
        prepare(model)
    # A group of the depth-reduced model is named after the base group holding its roots.
    base_of_root = {r: g.name for g in base.groups for r in g.roots}
    names = {m: n for n, m in model.named_modules()} | {p: n for n, p in model.named_parameters()}
    plan: list[tuple[tp.Group, list[int]]] = []
    for info, group in _channel_groups(model, candidate.input_shape, base.classifier):
        kept = wanted.get(base_of_root[info.name], info.channels)
        if kept < info.channels:
            plan.append((group, keep(group, kept)))
    # Every group chooses before any is pruned, so a weight-based choice sees the unpruned
    # weights of its coupled layers (the "independent" strategy of Li et al. 2017, Sec. 3.3).
    recorded = []
    for group, kept_idxs in plan:
        assert len(set(kept_idxs)) == len(kept_idxs), "keep() returns distinct channels"
        pruned = sorted(set(range(len(group[0].idxs))) - set(kept_idxs))
        recorded += prune_recording(group, pruned, names)
    if architecture is not None:
        remember_cuts(architecture, recorded)
    if cuts is not None:
        cuts.extend(recorded)
    return dropped


def factorize(
    model: nn.Module, candidate: Candidate, base: BaseAnalysis, dropped: set[str], *, svd: bool
) -> None:
    """Split every kept layer with a rank into a :class:`LowRank` pair, in place, after the
    width cut: fresh layers (PyTorch defaults, from the global RNG) or, with ``svd``, the
    truncated SVD of the layer's weights.

    Raises:
        ConfigError: the candidate gives a rank for a layer the base model does not have, or one
            that cannot be split (a grouped convolution).
    """
    ranks = dict(candidate.ranks)
    unknown = sorted(set(ranks) - set(base.layers))
    if unknown:
        raise _unknown("conv/linear layer", unknown, base.layers)
    for name, percent in ranks.items():
        if is_under(name, dropped):
            continue
        layer = check_factorizable(model.get_submodule(name), name)
        rank = rank_of(layer, percent)
        _set_submodule(model, name, svd_pair(layer, rank) if svd else split(layer, rank))


def quantize_layers(
    model: nn.Module, candidate: Candidate, base: BaseAnalysis, dropped: set[str]
) -> None:
    """Wrap every kept layer with bit-widths below 32 in fake quantization, in place.

    Raises:
        ConfigError: the candidate gives bits for a layer the base model does not have.
    """
    wbits, abits = dict(candidate.weight_bits), dict(candidate.activation_bits)
    layer_set = set(base.layers)
    unknown = [n for n in {**wbits, **abits} if n not in layer_set]
    if unknown:
        raise _unknown("conv/linear layer", sorted(unknown), base.layers)
    for name in base.layers:
        w, a = wbits.get(name, FLOAT_BITS), abits.get(name, FLOAT_BITS)
        if (w >= FLOAT_BITS and a >= FLOAT_BITS) or is_under(name, dropped):
            continue
        layer = model.get_submodule(name)
        halves = [f"{name}.0", f"{name}.1"] if isinstance(layer, LowRank) else [name]
        for half in halves:
            layer = model.get_submodule(half)
            wrapper = QuantConv2d if isinstance(layer, nn.Conv2d) else QuantLinear
            quantized = wrapper.from_float(layer, weight_bits=w, activation_bits=a)  # type: ignore[arg-type]
            _set_submodule(model, half, quantized)


@functools.lru_cache(maxsize=512)
def cost_report(candidate: Candidate) -> CostReport:
    """Exact costs of ``candidate`` at its input shape: :func:`count_costs` of its network built
    on the ``meta`` device, counted once per process (candidates are immutable).

    Example:
        >>> from autoprune.spaces import Candidate
        >>> cost_report(Candidate(model="resnet20", num_classes=10, in_channels=1,
        ...                       input_shape=(1, 28, 28))).params
        272186
    """
    return count_costs(build_model(candidate, device="meta"), candidate.input_shape)


def base_model(candidate: Candidate, *, seed: int | None = None) -> nn.Module:
    """The full base model of ``candidate`` on the CPU, initialised by its own ``__init__``
    (under ``seed`` when given, leaving the global RNG untouched)."""
    with torch.random.fork_rng(devices=[], enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        return create_model(
            candidate.model,
            num_classes=candidate.num_classes,
            in_channels=candidate.in_channels,
            device="cpu",
        )


def build_model(
    candidate: Candidate, *, seed: int | None = None, device: torch.device | str = "cpu"
) -> nn.Module:
    """Build the compact, freshly initialised ``nn.Module`` of ``candidate``, in training mode.

    Dropped blocks become ``nn.Identity``; every kept layer keeps its base-model name, so the
    candidate's layer names address it (``model.get_submodule("layer1.0.conv1")``; a layer with
    a rank is a :class:`~autoprune.spaces._lowrank.LowRank` pair under that name). Width entries
    for groups that live only inside dropped blocks are ignored. With ``seed`` the weights are
    deterministic (the global RNG is left untouched); without it they come from the global RNG.
    Weights are initialised on the CPU (so a seed gives the same weights whatever the device) and
    then moved to ``device``. ``device="meta"`` skips allocation and initialisation altogether:
    the model has the right shapes for :func:`count_costs` (about free) but no values.

    Raises:
        ConfigError: the candidate names a group, stage or layer the base model does not have,
            or a count outside ``1..base``.

    Example:
        >>> from autoprune.spaces import Candidate, build_model
        >>> c = Candidate(model="resnet20", num_classes=10, in_channels=1, input_shape=(1, 28, 28),
        ...               channels={"conv1": 8}, blocks={"layer3": 1},
        ...               weight_bits={"fc": 8}, activation_bits={"fc": 8})
        >>> m = build_model(c, seed=0)
        >>> m.conv1.out_channels, type(m.layer3[1]).__name__, type(m.fc).__name__
        (8, 'Identity', 'QuantLinear')
    """
    base = analyze(
        candidate.model, candidate.num_classes, candidate.in_channels, candidate.input_shape
    )
    init = model_source(candidate.model).init
    on_meta = torch.device(device).type == "meta"
    if init is None and not on_meta:
        # The model's own __init__ initialises it, at the base's size; the cut keeps the first
        # channels of each group, as fresh as any others.
        model = base_model(candidate, seed=seed)
        dropped = shrink(model, candidate, base, first_channels)
        with torch.random.fork_rng(devices=[], enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(seed)
            factorize(model, candidate, base, dropped, svd=False)
    else:
        model = create_model(
            candidate.model,
            num_classes=candidate.num_classes,
            in_channels=candidate.in_channels,
            device="meta",
        )
        dropped = shrink(model, candidate, base, first_channels)
        factorize(model, candidate, base, dropped, svd=False)
        if not on_meta:  # fresh init, with the registered model's scheme
            assert init is not None
            model.to_empty(device="cpu")
            with torch.random.fork_rng(devices=[], enabled=seed is not None):
                if seed is not None:
                    torch.manual_seed(seed)
                for module in model.modules():
                    reset = getattr(module, "reset_parameters", None)
                    if callable(reset):
                        reset()  # PyTorch defaults for any layer the scheme does not touch
                for module in model.modules():
                    if isinstance(module, nn.modules.batchnorm._NormBase):
                        module.reset_running_stats()
                init(model)

    quantize_layers(model, candidate, base, dropped)
    model.train()
    if torch.device(device).type not in ("cpu", "meta"):
        model.to(device)
    _logger.debug("built candidate %s (%s) on %s", candidate.hash, candidate.model, device)
    return model
