"""Channel importance for weight inheritance (:func:`~autoprune.spaces.inherit_weights`):
scores over a Torch-Pruning channel group, one per channel, higher kept first.

Every criterion sums its per-layer scores over the coupled layers of a group (a residual
stream is ranked by all the layers that share it), depthwise convolutions included:

* :class:`GroupLpImportance`: ``sum |w|^p`` of the weights (Li et al. 2017 for ``p=1``);
* :class:`BNScaleImportance`: ``sum |gamma|`` of the group's BatchNorms (Liu et al. 2017,
  Network Slimming); a group without one is ranked by its L1 norm;
* :class:`TaylorImportance`: ``sum |w * dL/dw|``, the first-order Taylor estimate of the loss
  change when a channel's weights are removed (Molchanov et al. 2019's weight form of
  Molchanov et al. 2017), from gradients summed over training batches;
* :class:`APoZImportance`: one minus the average percentage of zeros of the channel's
  activation where layers read it (Hu et al. 2016), over training batches.

The last two learn from data: :meth:`prepare` runs the batches through the model first.
A module of its own so that Torch-Pruning, and the timm and torchvision it imports (about 3 s
of CPU), load only when a model is cut, not with :mod:`autoprune.spaces`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
import torch_pruning as tp
from torch import nn

__all__ = ["APoZImportance", "BNScaleImportance", "GroupLpImportance", "TaylorImportance"]

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]

_CONSUMERS = (tp.prune_conv_in_channels, tp.prune_linear_in_channels)
_DEPTHWISE = (tp.prune_depthwise_conv_out_channels, tp.prune_depthwise_conv_in_channels)


def _depthwise_scores(
    group: tp.Group, scores: torch.Tensor, local: Callable[[nn.Conv2d, list[int]], torch.Tensor]
) -> torch.Tensor:
    """Add ``local(layer, idxs)`` of every depthwise conv of ``group`` (once per layer) to
    ``scores``: Torch-Pruning 1.6.1 scores only the plain conv, linear and BN handlers."""
    seen: set[int] = set()
    for i, (dep, idxs) in enumerate(group):
        layer = dep.layer
        if dep.pruning_fn not in _DEPTHWISE or id(layer) in seen:
            continue
        seen.add(id(layer))
        root = torch.tensor(group[i].root_idxs, device=scores.device)
        scores.scatter_add_(0, root, local(layer, list(idxs)).to(scores))
    return scores


class GroupLpImportance(tp.importance.GroupMagnitudeImportance):
    """Torch-Pruning's group magnitude importance, ``sum |w|^p`` over the coupled layers, plus the
    depthwise convs of the group (each of their filters belongs to one channel)."""

    def __init__(self, p: int) -> None:
        super().__init__(p=p, group_reduction="sum", normalizer=None)

    @torch.no_grad()
    def __call__(self, group: tp.Group) -> torch.Tensor:
        scores = super().__call__(group)
        assert scores is not None, "every channel group has a conv or linear root"

        def local(layer: nn.Conv2d, idxs: list[int]) -> torch.Tensor:
            return layer.weight.detach()[idxs].flatten(1).abs().pow(self.p).sum(1)

        return _depthwise_scores(group, scores, local)


class BNScaleImportance:
    """``sum |gamma|`` over the group's BatchNorms (Network Slimming's criterion, without its
    sparsity-regularised training); a group with no BatchNorm falls back to its L1 norm."""

    def __init__(self) -> None:
        self._scale = tp.importance.BNScaleImportance(group_reduction="sum", normalizer=None)
        self._fallback = GroupLpImportance(p=1)

    @torch.no_grad()
    def __call__(self, group: tp.Group) -> torch.Tensor:
        scores = self._scale(group)
        return self._fallback(group) if scores is None else scores


class TaylorImportance:
    """``sum |w * dL/dw|`` over the group's conv, linear and depthwise weights, with the
    gradients of the cross-entropy summed over the batches of :meth:`prepare`."""

    def __init__(self, batches: Batches) -> None:
        self._batches = batches
        self._taylor = tp.importance.GroupTaylorImportance(group_reduction="sum", normalizer=None)

    def prepare(self, model: nn.Module) -> None:
        """Sum the loss gradients of ``model`` (evaluation mode: BN statistics untouched) over
        the batches into each parameter's ``.grad``; the caller clears them afterwards."""
        was_training = model.training
        model.eval()
        model.zero_grad(set_to_none=True)
        device = next(model.parameters()).device
        try:
            with torch.enable_grad():
                for images, labels in self._batches:
                    F.cross_entropy(model(images.to(device)), labels.to(device)).backward()
        finally:
            model.train(was_training)

    @torch.no_grad()
    def __call__(self, group: tp.Group) -> torch.Tensor:
        scores = self._taylor(group)
        assert scores is not None, "every channel group has a conv or linear root"

        def local(layer: nn.Conv2d, idxs: list[int]) -> torch.Tensor:
            return (layer.weight[idxs] * layer.weight.grad[idxs]).flatten(1).abs().sum(1)

        return _depthwise_scores(group, scores, local)


class APoZImportance:
    """``sum (1 - APoZ)`` over the layers that read the group's channels: the share of each
    channel's input activations that are non-zero, over the batches of :meth:`prepare`.

    A channel that a ReLU zeroes for most images ranks low. Activations that no ReLU precedes
    (a linear bottleneck's) are rarely exactly zero, so such a group ranks nearly flat and its
    ties keep the first channels.
    """

    def __init__(self, batches: Batches) -> None:
        self._batches = batches
        self._nonzero: dict[nn.Module, torch.Tensor] = {}

    def prepare(self, model: nn.Module) -> None:
        """Record, for every conv and linear layer of ``model``, the non-zero share of each of
        its input channels (features, for a linear layer) over the batches."""
        counts: dict[nn.Module, list[torch.Tensor]] = {}

        def record(module: nn.Module, inputs: tuple[torch.Tensor, ...], _: object) -> None:
            x = inputs[0].detach()
            channel = 1 if isinstance(module, nn.Conv2d) else x.dim() - 1
            nonzero = (x != 0).sum(dim=[d for d in range(x.dim()) if d != channel]).double()
            total = counts.setdefault(module, [torch.zeros_like(nonzero), torch.zeros(())])
            total[0] += nonzero
            total[1] += x.numel() // x.shape[channel]

        layers = [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
        hooks = [layer.register_forward_hook(record) for layer in layers]
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        try:
            with torch.no_grad():
                for images, _ in self._batches:
                    model(images.to(device))
        finally:
            model.train(was_training)
            for hook in hooks:
                hook.remove()
        self._nonzero = {m: (n / seen).float().cpu() for m, (n, seen) in counts.items()}

    @torch.no_grad()
    def __call__(self, group: tp.Group) -> torch.Tensor:
        scores = torch.zeros(len(group[0].idxs))
        seen: set[int] = set()
        for i, (dep, idxs) in enumerate(group):
            layer = dep.layer
            if dep.pruning_fn not in (*_CONSUMERS, *_DEPTHWISE) or id(layer) in seen:
                continue
            seen.add(id(layer))
            nonzero = self._nonzero.get(layer)
            if nonzero is None:
                continue
            root = torch.tensor(group[i].root_idxs)
            scores.scatter_add_(0, root, nonzero[list(idxs)])
        return scores
