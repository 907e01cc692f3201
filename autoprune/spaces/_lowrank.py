"""Low-rank factorisation: one convolution or linear layer replaced by two thin ones.

A candidate's ``ranks`` entry ``{layer: percent}`` splits that layer, after the width cut, into
a :class:`LowRank` pair whose middle has ``rank = percent`` % of the layer's narrower side
(``min(in, out)`` channels or features, half up, at least 1):

* a linear layer, or a convolution with a ``k x 1`` kernel (1x1 included), becomes the same
  layer to ``rank`` outputs followed by a 1x1 (linear) layer to the original outputs: the
  truncated-SVD form of Denton et al. (2014);
* a ``kh x kw`` convolution becomes a ``kh x 1`` convolution to ``rank`` channels followed by a
  ``1 x kw`` one, stride, padding and dilation split by axis: Jaderberg et al.'s (2014) separable
  scheme 2. (Their other form, ``k x k`` to ``rank`` then 1x1, is a width cut plus a 1x1 layer,
  which the width decisions already cover.)

Grouped and depthwise convolutions are not factorised. The first layer of a pair has no bias;
the second takes the layer's. Both take the layer's bit-widths. Costs are counted on the built
pair (:func:`~autoprune.spaces.count_costs`), so they are exact. A pair is initialised fresh,
like every candidate, or (:func:`svd_pair`, used when weights are inherited) from the truncated
SVD of the layer's weight reshaped to ``(in * kh) x (out * kw)``, the closest pair of this rank
in the Frobenius norm.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from autoprune.errors import ConfigError

__all__ = ["LowRank", "factorizable", "pair_macs_ratio", "rank_of", "split", "svd_pair"]


class LowRank(nn.Sequential):
    """Two thin layers standing for one: ``self[0]`` to :attr:`rank` channels, then
    ``self[1]`` to the layer's outputs. State-dict keys are ``<layer>.0.*`` and ``<layer>.1.*``."""

    @property
    def rank(self) -> int:
        """Channels (features) between the two layers."""
        first = self[0]
        return first.out_channels if isinstance(first, nn.Conv2d) else first.out_features


def factorizable(layer: nn.Module) -> bool:
    """Whether ``layer`` can be split: an ``nn.Linear``, or an ``nn.Conv2d`` with one group."""
    if isinstance(layer, nn.Conv2d):
        return layer.groups == 1
    return isinstance(layer, nn.Linear)


def _sides(layer: nn.Conv2d | nn.Linear) -> tuple[int, int]:
    if isinstance(layer, nn.Conv2d):
        return layer.in_channels, layer.out_channels
    return layer.in_features, layer.out_features


def rank_of(layer: nn.Conv2d | nn.Linear, percent: int) -> int:
    """Middle width of ``layer`` split at ``percent`` (1..99) of its narrower side.

    Example:
        >>> rank_of(nn.Conv2d(64, 32, 3), 25), rank_of(nn.Linear(10, 3), 10)
        (8, 1)
    """
    return max(1, math.floor(percent * min(_sides(layer)) / 100 + 0.5))


def pair_macs_ratio(layer: nn.Conv2d | nn.Linear, percent: int) -> float:
    """MACs of the pair over the layer's, per output position (a ``kh x 1`` first half at the
    layer's row stride reads ``stride_w`` times the positions). Below 1: splitting saves.

    Example:
        >>> conv, linear = nn.Conv2d(64, 64, 3), nn.Linear(8, 8)
        >>> round(pair_macs_ratio(conv, 50), 3), pair_macs_ratio(linear, 50)
        (0.333, 1.0)
    """
    c_in, c_out = _sides(layer)
    rank = rank_of(layer, percent)
    kh, kw = layer.kernel_size if isinstance(layer, nn.Conv2d) else (1, 1)
    stride_w = layer.stride[1] if isinstance(layer, nn.Conv2d) and kw > 1 else 1
    return (rank * c_in * kh * stride_w + rank * c_out * kw) / (c_in * c_out * kh * kw)


def split(layer: nn.Conv2d | nn.Linear, rank: int) -> LowRank:
    """The :class:`LowRank` pair for ``layer`` with ``rank`` middle channels, on ``layer``'s
    device and dtype, initialised by PyTorch's defaults (``meta`` stays unallocated)."""
    factory = {"device": layer.weight.device, "dtype": layer.weight.dtype}
    has_bias = layer.bias is not None
    if isinstance(layer, nn.Linear):
        return LowRank(
            nn.Linear(layer.in_features, rank, bias=False, **factory),
            nn.Linear(rank, layer.out_features, bias=has_bias, **factory),
        )
    (kh, kw), (sh, sw), (dh, dw) = layer.kernel_size, layer.stride, layer.dilation
    if kw == 1:  # the first half is the layer to `rank` channels; the second a 1x1
        first_args = {"stride": layer.stride, "padding": layer.padding, "dilation": layer.dilation}
        second_args: dict = {}
    else:
        pad = layer.padding
        rows, cols = (pad, pad) if isinstance(pad, str) else ((pad[0], 0), (0, pad[1]))
        first_args = {"stride": (sh, 1), "padding": rows, "dilation": (dh, 1)}
        second_args = {"stride": (1, sw), "padding": cols, "dilation": (1, dw)}
    mode = layer.padding_mode
    return LowRank(
        nn.Conv2d(
            layer.in_channels, rank, (kh, 1), bias=False, padding_mode=mode, **first_args, **factory
        ),
        nn.Conv2d(
            rank,
            layer.out_channels,
            (1, kw),
            bias=has_bias,
            padding_mode=mode,
            **second_args,
            **factory,
        ),
    )


@torch.no_grad()
def svd_pair(layer: nn.Conv2d | nn.Linear, rank: int) -> LowRank:
    """:func:`split` with the weights of the best rank-``rank`` approximation of ``layer``'s
    (truncated SVD, singular values shared evenly as ``sqrt(s)`` by both halves); at full rank
    of the reshaped weight the pair computes what ``layer`` does."""
    pair = split(layer, rank)
    weight = layer.weight.detach().float()
    if isinstance(layer, nn.Linear):
        matrix = weight.t()  # (in, out)
        c_in, c_out, kh, kw = layer.in_features, layer.out_features, 1, 1
    else:
        c_out, c_in, kh, kw = weight.shape
        matrix = weight.permute(1, 2, 0, 3).reshape(c_in * kh, c_out * kw)
    u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
    kept = min(rank, s.numel())
    root = s[:kept].sqrt()
    left = torch.zeros(matrix.shape[0], rank)  # a rank past the matrix's is padded with zeros
    right = torch.zeros(rank, matrix.shape[1])
    left[:, :kept] = u[:, :kept] * root
    right[:kept] = root[:, None] * vh[:kept]
    first, second = pair[0], pair[1]
    if isinstance(layer, nn.Linear):
        first.weight.copy_(left.t())
        second.weight.copy_(right.t())
    else:
        first.weight.copy_(left.reshape(c_in, kh, rank).permute(2, 0, 1).unsqueeze(-1))
        second.weight.copy_(right.reshape(rank, c_out, kw).permute(1, 0, 2).unsqueeze(2))
    if layer.bias is not None:
        second.bias.copy_(layer.bias)
    return pair


def check_factorizable(layer: nn.Module, name: str) -> nn.Conv2d | nn.Linear:
    """``layer`` if :func:`factorizable`, else a :class:`ConfigError` naming it."""
    if not factorizable(layer):
        kind = type(layer).__name__
        raise ConfigError(
            f"the candidate gives a rank for {name!r}, a {kind} that cannot be factorised "
            f"(only nn.Linear and nn.Conv2d with groups=1); remove it from `ranks`"
        )
    return layer  # type: ignore[return-value]
