"""Channel importance for weight inheritance (:func:`~autoprune.spaces.inherit_weights`):
scores over a Torch-Pruning channel group, one per channel, higher kept first.

A module of its own so that Torch-Pruning, and the timm and torchvision it imports (about 3 s
of CPU), load only when a model is cut, not with :mod:`autoprune.spaces`.
"""

from __future__ import annotations

import torch
import torch_pruning as tp

__all__ = ["GroupLpImportance"]


class GroupLpImportance(tp.importance.GroupMagnitudeImportance):
    """Torch-Pruning's group magnitude importance, ``sum |w|^p`` over the coupled layers, plus the
    depthwise convs of the group.

    Torch-Pruning 1.6.1 scores only layers whose handler is the plain conv/linear/BN pruner, so it
    leaves out a depthwise conv (its handler is ``prune_depthwise_conv_out_channels``); each of
    its filters belongs to one channel and is added here.
    """

    def __init__(self, p: int) -> None:
        super().__init__(p=p, group_reduction="sum", normalizer=None)

    @torch.no_grad()
    def __call__(self, group: tp.Group) -> torch.Tensor:
        scores = super().__call__(group)
        assert scores is not None, "every channel group has a conv or linear root"
        seen: set[int] = set()
        for i, (dep, idxs) in enumerate(group):
            layer = dep.layer
            if dep.pruning_fn != tp.prune_depthwise_conv_out_channels or id(layer) in seen:
                continue
            seen.add(id(layer))
            local = layer.weight.detach()[list(idxs)].flatten(1).abs().pow(self.p).sum(1)
            root = torch.tensor(group[i].root_idxs, device=scores.device)
            scores.scatter_add_(0, root, local.to(scores))
        return scores
