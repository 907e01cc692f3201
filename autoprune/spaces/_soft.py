"""Soft filter pruning (He et al., IJCAI 2018): train at full width, zeroing the channels a
candidate drops after every epoch, and cut them only at the end.

A zeroed channel keeps being updated, so it can win its place back at the next ranking; the
final cut (:meth:`SoftPruning.cut`) ranks once more and removes the channels then ranked out.
Zeroing covers every layer writing the channel (the convs and linears, their biases, and the
BatchNorm's scale and shift, so the channel's output is zero, not BatchNorm's shift), while
the layers reading it keep their weights.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import torch
from torch import nn

from autoprune.spaces._candidate import Candidate
from autoprune.spaces._inherit import check_base, keep_fn
from autoprune.spaces._surgery import (
    _channel_groups,
    analyze,
    base_model,
    drop_blocks,
    factorize,
    quantize_layers,
    shrink,
)

if TYPE_CHECKING:
    import torch_pruning as tp

__all__ = ["SoftPruning"]


class SoftPruning:
    """``candidate``'s depth with the trained base's full width, for soft filter pruning.

    :attr:`model` is the network to train (training mode): ``trained_base``'s weights with the
    candidate's blocks dropped. Call :meth:`zero` after each epoch and :meth:`cut` after the
    last; ``importance``, ``seed`` and ``batches`` rank channels as in
    :func:`~autoprune.spaces.inherit_weights`, on the weights as they are at each call.

    Example:
        >>> from autoprune.spaces import Candidate, create_model
        >>> c = Candidate(model="resnet20", num_classes=10, in_channels=1,
        ...               input_shape=(1, 28, 28), channels={"layer1.0.conv1": 4})
        >>> soft = SoftPruning(c, create_model("resnet20", num_classes=10, in_channels=1))
        >>> soft.zero()  # 16 - 4 channels of one group
        12
        >>> int((soft.model.layer1[0].conv1.weight.flatten(1).abs().sum(1) == 0).sum())
        12
        >>> soft.cut().layer1[0].conv1.out_channels
        4
    """

    def __init__(
        self,
        candidate: Candidate,
        trained_base: nn.Module,
        *,
        importance: str = "l1",
        seed: int | None = None,
        batches: Iterable[tuple[torch.Tensor, torch.Tensor]] | None = None,
    ) -> None:
        self.candidate = candidate
        self._keep, self._prepare = keep_fn(importance, seed, batches)
        self._base = analyze(
            candidate.model, candidate.num_classes, candidate.in_channels, candidate.input_shape
        )
        model = base_model(candidate, seed=0)
        check_base(trained_base, model, candidate)
        model.load_state_dict(trained_base.state_dict())
        self._dropped = drop_blocks(model, candidate, self._base)
        self.model = model.train()
        self._groups: list[tuple[tp.Group, int]] | None = None

    @torch.no_grad()
    def zero(self) -> int:
        """Rank every channel group on :attr:`model`'s weights now and zero, in place, the
        channels the candidate does not keep; the number of channels zeroed."""
        if self._prepare is not None:
            with torch.enable_grad():
                self._prepare(self.model)
        if self._groups is None:  # traced once: training changes values, not the graph
            wanted = dict(self.candidate.channels)
            base_of_root = {r: g.name for g in self._base.groups for r in g.roots}
            self._groups = [
                (group, wanted[base_of_root[info.name]])
                for info, group in _channel_groups(
                    self.model, self.candidate.input_shape, self._base.classifier
                )
                if wanted.get(base_of_root[info.name], info.channels) < info.channels
            ]
        zeroed = 0
        for group, kept in self._groups:
            keep = set(self._keep(group, kept))
            dropped = [i for i in range(len(group[0].idxs)) if i not in keep]
            root = group[0].dep
            graph = group._DG
            for dep, idxs in graph.get_pruning_group(root.target.module, root.handler, dropped):
                if graph.is_out_channel_pruning_fn(dep.handler):
                    channels = [int(getattr(i, "idx", i)) for i in idxs]
                    _zero_outputs(dep.target.module, channels, dep.target.pruning_dim)
            zeroed += len(dropped)
        self.model.zero_grad(set_to_none=True)
        return zeroed

    def cut(self) -> nn.Module:
        """:attr:`model` cut to the candidate: the channels ranked highest now kept, bit-widths
        below 32 wrapped in fake quantization (fresh observers), layers with a rank split by SVD;
        training mode, in place."""
        dropped = shrink(self.model, self.candidate, self._base, self._keep, self._prepare)
        self.model.zero_grad(set_to_none=True)
        factorize(self.model, self.candidate, self._base, dropped | self._dropped, svd=True)
        quantize_layers(self.model, self.candidate, self._base, dropped | self._dropped)
        return self.model.train()


def _zero_outputs(target: nn.Module | nn.Parameter, idxs: list[int], dim: int) -> None:
    """Zero output channels ``idxs`` of a conv, linear or norm layer (weight and bias), or of
    a per-channel parameter (a layer scale) along its channel dimension ``dim``."""
    if isinstance(target, nn.Parameter):
        target.index_fill_(dim, torch.tensor(idxs, device=target.device), 0.0)
        return
    for tensor in (getattr(target, "weight", None), getattr(target, "bias", None)):
        if isinstance(tensor, torch.Tensor):
            tensor[idxs] = 0.0
