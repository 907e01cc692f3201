"""Per-op cost handles of :func:`~autoprune.spaces.count_costs` (fvcore's handle table, on aten).

Every aten op (overload packet) the counter sees is in at most one table (under
``torch.inference_mode`` composite ops such as ``linear`` or ``batch_norm`` arrive whole; the
counter decomposes one that is in no table, as ``FlopCounterMode`` does):

* :data:`MAC_HANDLES`: matrix products (convolutions, ``mm``/``addmm``/``bmm``/``baddbmm``/...,
  fused attention). A handle returns a :class:`MacCost`: the row's op, its multiply-accumulates
  and the operand a layer's weight would be.
* :data:`ZERO_MAC_OPS`: ops that compute without a matrix product (elementwise, activations,
  norms, pooling, ``cat``, interpolation, softmax, ...): the row's op name, or a function of the
  op's arguments giving it (``None``: no row).
* :data:`NO_ROW_OPS`: views, metadata, layout copies and tensor factories: no row. Layout copies
  (``clone``, ``copy_``) depend on the backend's strides (a meta tensor and a CPU tensor may
  differ) and compilers plan layouts themselves, so they are not rows either.

An op in no table gets an ``"unknown"`` row and a warning (see ``count_costs``).

Example:
    >>> import torch
    >>> x, w = torch.zeros(1, 3, 8, 8), torch.zeros(4, 3, 3, 3)
    >>> out = torch.conv2d(x, w)
    >>> MAC_HANDLES[torch.ops.aten.convolution]((x, w, None, [1], [0], [1], False), out).macs
    3888
    >>> ZERO_MAC_OPS[torch.ops.aten.add], torch.ops.aten.view in NO_ROW_OPS
    ('add', True)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch

__all__ = [
    "ACTIVATION_OPS",
    "MAC_HANDLES",
    "META_SHORTCUTS",
    "NO_ROW_OPS",
    "TO_COPY",
    "ZERO_MAC_OPS",
    "MacCost",
    "attention_macs",
]

_aten = torch.ops.aten
Packet = Any  # torch._ops.OpOverloadPacket


def _packets(names: str) -> list[Packet]:
    """The aten packets of the space-separated ``names`` this torch build has."""
    found = (getattr(_aten, name, None) for name in names.split())
    return [p for p in found if p is not None]


class MacCost(NamedTuple):
    """A matrix product's row: ``op`` (``"conv2d"``, ``"matmul"``, ``"attention"``...),
    ``macs`` and ``weight``, the operand that is a layer's weight when it is a parameter."""

    op: str
    macs: int
    weight: torch.Tensor | None


MacHandle = Callable[[Sequence[Any], torch.Tensor], MacCost]


def _conv(transposed_at: int | None, transposed: bool = False) -> MacHandle:
    """Convolution: every output element (every input element if transposed) is a dot product
    over ``weight.shape[1:]`` (in/groups x kernel, or out/groups x kernel if transposed)."""

    def handle(args: Sequence[Any], out: torch.Tensor) -> MacCost:
        x, w = args[0], args[1]
        flip = bool(args[transposed_at]) if transposed_at is not None else transposed
        dims = w.dim() - 2
        macs = (x if flip else out).numel() * math.prod(w.shape[1:])
        return MacCost(f"conv_transpose{dims}d" if flip else f"conv{dims}d", macs, w)

    return handle


def _matmul(a_at: int, b_at: int) -> MacHandle:
    """``a @ b`` (batched or not, ``mv`` and ``dot`` included): ``a.numel() * n`` MACs."""

    def handle(args: Sequence[Any], out: torch.Tensor) -> MacCost:
        a, b = args[a_at], args[b_at]
        return MacCost("matmul", a.numel() * (b.shape[-1] if b.dim() >= 2 else 1), b)

    return handle


def attention_macs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> int:
    """MACs of ``softmax(q @ k^T) @ v`` for ``q (..., Lq, E)``, ``k (..., S, E)``,
    ``v (..., S, Ev)``: the two matmuls, ``(q.numel() / E) * S * (E + Ev)``."""
    return q.numel() // max(1, q.shape[-1]) * k.shape[-2] * (q.shape[-1] + v.shape[-1])


def _attention(args: Sequence[Any], out: torch.Tensor) -> MacCost:
    return MacCost("attention", attention_macs(args[0], args[1], args[2]), None)


def _linear(args: Sequence[Any], out: torch.Tensor) -> MacCost:
    """``F.linear(x, w)``: every output element is a dot product over ``in_features``."""
    return MacCost("linear", out.numel() * args[1].shape[-1], args[1])


MAC_HANDLES: dict[Packet, MacHandle] = {}
for _p in _packets("convolution _convolution convolution_overrideable"):
    MAC_HANDLES[_p] = _conv(6)
for _p in _packets(
    "conv1d conv2d conv3d cudnn_convolution mkldnn_convolution _slow_conv2d_forward "
    "_conv_depthwise2d slow_conv3d slow_conv_dilated2d slow_conv_dilated3d thnn_conv2d"
):
    MAC_HANDLES[_p] = _conv(None)
for _p in _packets(
    "conv_transpose1d conv_transpose2d conv_transpose3d cudnn_convolution_transpose "
    "slow_conv_transpose2d slow_conv_transpose3d"
):
    MAC_HANDLES[_p] = _conv(None, transposed=True)
for _p in _packets("mm bmm mv dot vdot _int_mm _scaled_mm"):
    MAC_HANDLES[_p] = _matmul(0, 1)
for _p in _packets("addmm addmm_ baddbmm baddbmm_ addbmm addbmm_ addmv addmv_ _addmm_activation"):
    MAC_HANDLES[_p] = _matmul(1, 2)
MAC_HANDLES[_aten.linear] = _linear
for _p in _packets(
    "scaled_dot_product_attention _scaled_dot_product_flash_attention_for_cpu "
    "_scaled_dot_product_flash_attention "
    "_scaled_dot_product_efficient_attention _scaled_dot_product_cudnn_attention "
    "_scaled_dot_product_fused_attention_overrideable"
):
    MAC_HANDLES[_p] = _attention


def _hardtanh(args: Sequence[Any]) -> str:
    lo = args[1] if len(args) > 1 else -1.0
    hi = args[2] if len(args) > 2 else 1.0
    return "relu6" if (lo, hi) == (0, 6) else "hardtanh"


def _batch_norm(args: Sequence[Any]) -> str:
    """Running statistics (eval): ``"batchnorm"``, an affine map a compiler folds into the conv;
    batch statistics (instance norm, ``track_running_stats=False``): ``"norm"``."""
    training = next((a for a in args if isinstance(a, bool)), False)
    return "norm" if training else "batchnorm"


# Activations: aten op -> the row's op, the lower-cased torch.nn class name where there is one.
_ACTIVATIONS: dict[str, str | Callable[[Sequence[Any]], str]] = {
    "relu": "relu",
    "hardtanh": _hardtanh,
    "leaky_relu": "leakyrelu",
    "_prelu_kernel": "prelu",
    "prelu": "prelu",
    "elu": "elu",
    "selu": "selu",
    "celu": "celu",
    "gelu": "gelu",
    "silu": "silu",
    "mish": "mish",
    "hardswish": "hardswish",
    "hardsigmoid": "hardsigmoid",
    "sigmoid": "sigmoid",
    "tanh": "tanh",
    "softplus": "softplus",
    "log_sigmoid_forward": "logsigmoid",
    "threshold": "threshold",
    "relu6": "relu6",
    "softmax": "softmax",
    "_softmax": "softmax",
    "_safe_softmax": "softmax",
    "log_softmax": "log_softmax",
    "_log_softmax": "log_softmax",
}
#: Op names of activation rows ("relu", "relu6" for ``hardtanh(0, 6)``, "hardswish", ...).
ACTIVATION_OPS = frozenset(
    {"relu6", "hardtanh"} | {v for v in _ACTIVATIONS.values() if isinstance(v, str)}
)

# Zero-MAC ops named as themselves (in-place variants ``<name>_`` too).
_ELEMENTWISE = (
    "add sub mul div neg abs exp exp2 expm1 log log2 log10 log1p sqrt rsqrt pow reciprocal "
    "square erf erfc erfinv sin cos tan asin acos atan atan2 sinh cosh floor ceil round trunc "
    "frac sign sgn clamp clamp_min clamp_max where maximum minimum fmax fmin fmod remainder "
    "floor_divide eq ne lt le gt ge logical_and logical_or logical_not logical_xor bitwise_and "
    "bitwise_or bitwise_not bitwise_xor masked_fill lerp addcmul addcdiv nan_to_num isnan "
    "isinf copysign hypot xlogy"
)
_OTHERS = (
    "sum amax amin max min var var_mean std std_mean prod logsumexp linalg_vector_norm norm "
    "argmax argmin any all cumsum cumprod topk sort argsort gather index_select take embedding "
    "scatter scatter_add scatter_reduce index_add index_put index_copy masked_scatter "
    "masked_select roll flip repeat tril triu im2col col2im pixel_shuffle pixel_unshuffle "
    "channel_shuffle native_channel_shuffle grid_sampler_2d grid_sampler_3d affine_grid_generator "
    "nonzero bucketize searchsorted one_hot"
)
_RENAMED = {
    "rsub": "sub",
    "true_divide": "div",
    "stack": "cat",
    "cat": "cat",
    "index": "index",
    "_unsafe_index": "index",
    "constant_pad_nd": "pad",
    "pad": "pad",
    **{f"{kind}_pad{d}d": "pad" for kind in ("reflection", "replication") for d in (1, 2, 3)},
    **{
        name: "norm"
        for name in (
            "layer_norm native_layer_norm group_norm native_group_norm instance_norm rms_norm "
            "_fused_rms_norm _batch_norm_with_update"
        ).split()
    },
    **{
        name: "pool"
        for name in (
            "max_pool1d max_pool2d max_pool3d max_pool1d_with_indices max_pool2d_with_indices "
            "max_pool3d_with_indices mkldnn_max_pool2d mkldnn_max_pool3d avg_pool1d avg_pool2d "
            "avg_pool3d adaptive_avg_pool1d adaptive_avg_pool2d adaptive_avg_pool3d "
            "_adaptive_avg_pool2d _adaptive_avg_pool3d "
            "adaptive_max_pool1d adaptive_max_pool2d adaptive_max_pool3d fractional_max_pool2d "
            "fractional_max_pool3d mean"
        ).split()
    },
    **{
        name: "interpolate"
        for name in (
            "upsample_nearest1d upsample_nearest2d upsample_nearest3d _upsample_nearest_exact1d "
            "_upsample_nearest_exact2d _upsample_nearest_exact3d upsample_linear1d "
            "upsample_bilinear2d upsample_bicubic2d upsample_trilinear3d _upsample_bilinear2d_aa "
            "_upsample_bicubic2d_aa"
        ).split()
    },
}
_BATCH_NORMS = (
    "batch_norm native_batch_norm _native_batch_norm_legit _native_batch_norm_legit_no_training "
    "cudnn_batch_norm miopen_batch_norm _batch_norm_no_update"
)

ZERO_MAC_OPS: dict[Packet, str | Callable[[Sequence[Any]], str | None]] = {}
for _name in _ELEMENTWISE.split():
    for _p in _packets(f"{_name} {_name}_"):
        ZERO_MAC_OPS[_p] = _name
for _name in _OTHERS.split():
    for _p in _packets(_name):
        ZERO_MAC_OPS[_p] = _name
for _name, _op in {**_RENAMED, **_ACTIVATIONS}.items():
    for _p in _packets(f"{_name} {_name}_"):
        ZERO_MAC_OPS[_p] = _op
for _p in _packets(_BATCH_NORMS):
    ZERO_MAC_OPS[_p] = _batch_norm

#: No row: views and metadata, layout copies, allocation and constants, eval-mode dropout.
NO_ROW_OPS = frozenset(
    _packets(
        "view _unsafe_view reshape reshape_as _reshape_alias flatten unflatten as_strided "
        "as_strided_ permute transpose movedim moveaxis swapaxes swapdims "
        "transpose_ t t_ expand expand_as unsqueeze unsqueeze_ squeeze squeeze_ slice select "
        "narrow detach detach_ alias unbind split split_with_sizes unsafe_split chunk "
        "unsafe_chunk tensor_split hsplit vsplit dsplit unfold diagonal view_as view_as_real "
        "view_as_complex lift "
        "lift_fresh lift_fresh_copy clone contiguous copy copy_ _copy_from "
        "_copy_from_and_resize resize_ set_ empty empty_like empty_strided empty_permuted zeros "
        "zeros_like ones ones_like full full_like new_empty new_empty_strided new_zeros new_ones "
        "new_full scalar_tensor arange linspace fill fill_ zero_ _local_scalar_dense item "
        "dropout dropout_ native_dropout feature_dropout alpha_dropout feature_alpha_dropout "
        "sym_size sym_stride sym_numel "
        "sym_storage_offset is_same_size _has_compatible_shallow_copy_type "
        "_assert_async _assert_tensor_metadata"
    )
)

#: ``_to_copy`` (``.to()``): a ``"cast"`` row when the dtype changes, else no row.
TO_COPY = _aten._to_copy


def _meta_batch_norm(args: Sequence[Any]) -> Any:
    return None if _batch_norm(args) == "norm" else torch.empty_like(args[0])


def _meta_same_shape(args: Sequence[Any]) -> Any:
    a, b = args[0], args[1] if len(args) > 1 else None
    if not isinstance(b, torch.Tensor) or not a.is_floating_point():
        return None
    same = (a.shape, a.stride(), a.dtype) == (b.shape, b.stride(), b.dtype)
    return torch.empty_like(a) if same else None


#: On meta tensors only, ops whose output is the input's shape, computed without the op's
#: Python meta kernel (eval batch norm costs a millisecond there); ``None``: run the op.
META_SHORTCUTS: dict[Packet, Callable[[Sequence[Any]], Any]] = {
    _aten.batch_norm: _meta_batch_norm,
    **{p: _meta_same_shape for p in _packets("add sub mul div")},
}
