"""Weight inheritance: a candidate's compact network cut out of a *trained* base model.

The "fine-tune" baseline of Liu et al. (ICLR 2019, "Rethinking the Value of Network Pruning"):
prune the trained base model to the candidate's architecture and fine-tune, instead of training
the compact network from scratch (:func:`~autoprune.spaces.build_model`). Surgery is the same as
``build_model``'s (same module names, shapes and ``state_dict`` keys); only the channels differ:

* every channel group keeps the ``k`` channels ranked highest by an importance criterion summed
  over its coupled layers (the convs and linears writing it, their BNs, the convs and linears
  reading it), so a residual stream is ranked by all the layers that share it. The default is
  the *group* L1 norm, the L1-norm filter pruning of Li et al. (ICLR 2017, "Pruning Filters for
  Efficient ConvNets", Sec. 3.1) extended from one conv to a Torch-Pruning group; BN scale,
  first-order Taylor and APoZ are the others (:data:`IMPORTANCES`);
* every group is ranked on the depth-reduced but otherwise unpruned weights (Li et al.'s
  "independent" strategy, Sec. 3.3), and kept channels stay in their original order.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import torch
from torch import nn

from autoprune.errors import ConfigError
from autoprune.spaces._candidate import Candidate
from autoprune.spaces._cuts import Cut, replay
from autoprune.spaces._surgery import (
    KeepFn,
    analyze,
    base_model,
    drop_blocks,
    factorize,
    quantize_layers,
    shrink,
)

if TYPE_CHECKING:
    import torch_pruning as tp

__all__ = ["DATA_IMPORTANCES", "IMPORTANCES", "inherit_weights"]

_logger = logging.getLogger("autoprune.spaces")

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]

IMPORTANCES = ("l1", "l2", "bn_scale", "taylor", "apoz", "random")
"""Channel rankings of :func:`inherit_weights`: group L1 norm, group sum of squares (the squared
group L2 norm, so the same ranking as the L2 norm), BatchNorm scale (Network Slimming),
first-order Taylor (weight times gradient), one minus APoZ, and a seeded random control."""

#: Rankings that learn from training batches (``inherit_weights(batches=...)``).
DATA_IMPORTANCES = ("taylor", "apoz")

Prepare = Callable[[nn.Module], None]


def _keep_largest(score: Callable[[tp.Group], torch.Tensor]) -> KeepFn:
    def keep(group: tp.Group, kept: int) -> list[int]:
        # A stable sort breaks ties towards the lower index, so equal scores keep the first k
        # channels, as build_model does.
        order = torch.argsort(score(group), descending=True, stable=True)
        return sorted(order[:kept].tolist())

    return keep


def keep_fn(
    importance: str, seed: int | None, batches: Batches | None
) -> tuple[KeepFn, Prepare | None]:
    """How ``importance`` keeps channels, and what it must see of the model first."""
    if importance not in IMPORTANCES:
        raise ConfigError(
            f"unknown importance {importance!r}; valid importances: {', '.join(IMPORTANCES)}"
        )
    if importance == "random":
        generator = None if seed is None else torch.Generator().manual_seed(seed)
        draw = lambda group: torch.rand(len(group[0].idxs), generator=generator)  # noqa: E731
        return _keep_largest(draw), None
    if importance in DATA_IMPORTANCES and not batches:
        raise ConfigError(
            f"importance {importance!r} ranks channels on training data; pass batches=[(images, "
            f"labels), ...] (normalised, at the training resolution)"
        )
    # Torch-Pruning (with timm and torchvision under it) is imported when a model is cut.
    from autoprune.spaces import _importance as criteria  # noqa: PLC0415

    if importance in ("l1", "l2"):
        return _keep_largest(criteria.GroupLpImportance(p=1 if importance == "l1" else 2)), None
    if importance == "bn_scale":
        return _keep_largest(criteria.BNScaleImportance()), None
    assert batches is not None
    scorer = (criteria.TaylorImportance if importance == "taylor" else criteria.APoZImportance)(
        list(batches)
    )
    return _keep_largest(scorer), scorer.prepare


def _listed(names: list[str]) -> str:
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def check_base(
    trained: nn.Module, expected: nn.Module, candidate: Candidate, argument: str = "trained_base"
) -> None:
    """Raise ConfigError unless ``trained`` has ``expected``'s state_dict keys and shapes, real
    values and finite floats."""
    if not isinstance(trained, nn.Module):
        raise ConfigError(
            f"`{argument}` must be an nn.Module, but got {type(trained).__name__}; pass the "
            f"trained base model"
        )
    what = "the candidate's base model"
    fix = (
        f"pass a trained create_model({candidate.model!r}, num_classes={candidate.num_classes}, "
        f"in_channels={candidate.in_channels})"
    )
    want = {k: tuple(v.shape) for k, v in expected.state_dict().items()}
    got = trained.state_dict()
    missing = [k for k in want if k not in got]
    if missing:
        raise ConfigError(
            f"`{argument}` does not match {what}: it lacks {len(missing)} tensor(s) "
            f"({_listed(missing)}); {fix}"
        )
    extra = [k for k in got if k not in want]
    if extra:
        raise ConfigError(
            f"`{argument}` does not match {what}: it has {len(extra)} unexpected tensor(s) "
            f"({_listed(extra)}); {fix}, a float model (not fake-quantized)"
        )
    for key, shape in want.items():
        if tuple(got[key].shape) != shape:
            raise ConfigError(
                f"`{argument}` does not match {what}: {key} has shape {tuple(got[key].shape)}, "
                f"expected {shape}; {fix}"
            )
    for key, value in got.items():
        if value.is_meta:
            raise ConfigError(
                f"`{argument}` has no values ({key} is on the meta device); load its trained "
                f"weights first"
            )
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise ConfigError(
                f"`{argument}` has non-finite values in {key}; its training diverged, so "
                f"retrain it (e.g. with a lower learning rate) before inheriting its weights"
            )


def inherit_weights(
    candidate: Candidate,
    trained_base: nn.Module,
    *,
    importance: str = "l1",
    seed: int | None = None,
    batches: Batches | None = None,
    values: nn.Module | None = None,
    device: torch.device | str = "cpu",
) -> nn.Module:
    """Build ``candidate``'s compact network from ``trained_base``'s weights, in training mode.

    The result has the same module names, shapes and ``state_dict`` keys as
    ``build_model(candidate)``: dropped blocks are ``nn.Identity`` and kept blocks keep their
    trained weights; every channel group keeps the channels ranked highest by ``importance``, in
    their original order, with their parameters and BN running statistics; the classifier's
    outputs are never pruned; a layer with a rank becomes the truncated SVD of its kept weights
    (:func:`~autoprune.spaces._lowrank.svd_pair`, Denton et al. 2014); layers with bit-widths
    below 32 are wrapped in fake quantization with fresh activation observers. ``trained_base``
    is read, never modified (its weights are copied to the CPU as float32, ranked and pruned
    there, and the result moved to ``device``).

    Args:
        candidate: the architecture to cut out.
        trained_base: a float model of ``candidate.model`` with the same ``num_classes`` and
            ``in_channels`` (e.g. the base trial's trained ``state_dict`` loaded into
            ``create_model``), on any device.
        importance: how channels are ranked (:data:`IMPORTANCES`, scores in
            :mod:`autoprune.spaces._importance`): ``"l1"`` (Li et al. 2017), ``"l2"``,
            ``"bn_scale"`` (Liu et al. 2017), ``"taylor"`` (Molchanov et al. 2019), ``"apoz"``
            (Hu et al. 2016), or ``"random"`` (a control baseline).
        seed: makes ``"random"`` deterministic (global RNG left untouched); unused otherwise.
        batches: ``(images, labels)`` of training data, normalised and at the training
            resolution, that ``"taylor"`` and ``"apoz"`` rank on (run through the depth-reduced
            base in evaluation mode, so its BN statistics stay as trained); unused otherwise.
        values: the weights the kept channels take instead of ``trained_base``'s, checked as
            it is: the base's initial weights make a structured lottery ticket (Frankle &
            Carbin 2019), its weights after an early epoch a rewound one (Frankle et al. 2019).
            ``trained_base`` still chooses the channels.
        device: where the returned model lives.

    Raises:
        ConfigError: an unknown ``importance``, ``"taylor"`` or ``"apoz"`` without ``batches``,
            ``device="meta"``, a ``trained_base`` that is
            not this base model (other architecture, ``num_classes`` or ``in_channels``, missing
            or extra tensors), has no values or has non-finite ones, or a candidate entry the
            base model does not have (as :func:`build_model`).

    Example:
        >>> import torch
        >>> from autoprune.spaces import Candidate, create_model, inherit_weights
        >>> trained = create_model("resnet20", num_classes=10, in_channels=1)  # say, trained
        >>> c = Candidate(model="resnet20", num_classes=10, in_channels=1, input_shape=(1, 28, 28),
        ...               channels={"layer1.0.conv1": 8}, blocks={"layer3": 2})
        >>> m = inherit_weights(c, trained)
        >>> m.layer1[0].conv1.out_channels, type(m.layer3[2]).__name__
        (8, 'Identity')
        >>> torch.equal(m.layer3[0].conv1.weight, trained.layer3[0].conv1.weight)
        True
    """
    keep, prepare = keep_fn(importance, seed, batches)
    if torch.device(device).type == "meta":
        raise ConfigError(
            "inherit_weights copies values, which device='meta' cannot hold; use "
            "build_model(candidate, device='meta') for shapes only"
        )
    base = analyze(
        candidate.model, candidate.num_classes, candidate.in_channels, candidate.input_shape
    )
    model = base_model(candidate, seed=0)  # values overwritten below; global RNG untouched
    check_base(trained_base, model, candidate)
    model.load_state_dict(trained_base.state_dict())  # copies every parameter and BN statistic
    cuts: list[Cut] = []
    dropped = shrink(model, candidate, base, keep, prepare, cuts)
    model.zero_grad(set_to_none=True)  # what "taylor" gathered; the fine-tuning starts clean
    if values is not None:  # the same channels, cut out of other weights
        model = base_model(candidate, seed=0)
        check_base(values, model, candidate, "values")
        model.load_state_dict(values.state_dict())
        drop_blocks(model, candidate, base)
        replay(model, cuts)
    factorize(model, candidate, base, dropped, svd=True)
    quantize_layers(model, candidate, base, dropped)
    model.train()
    if torch.device(device).type != "cpu":
        model.to(device)
    _logger.debug(
        "inherited candidate %s (%s) from trained weights by %s on %s",
        candidate.hash,
        candidate.model,
        importance,
        device,
    )
    return model
