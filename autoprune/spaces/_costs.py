"""Exact cost counting (fvcore style): MACs, parameters and bytes, per layer.

Counting convention, stated once: **"FLOPs" in autoprune means multiply-accumulates (MACs)**, the
convention of torchvision's model metadata and the pruning literature (ResNet-50 at 3x224x224 =
4.09 GFLOPs = 4.09 GMACs). Only convolutions and linear layers have MACs; batch norm,
activations, pooling and residual adds get zero-MAC rows so the hardware estimator still sees their
memory traffic (element counts). Costs are for batch size 1.

The model is run once with forward hooks on its leaf modules (execution order) and on the residual
blocks of the model zoo (their functional ``+`` is not a module: it gets an ``add`` row). A leaf
module without a cost handle is warned about (via the ``autoprune.spaces`` logger), never silently
counted as zero.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torchvision.models.mobilenetv2 import InvertedResidual, MobileNetV2
from torchvision.models.resnet import BasicBlock, Bottleneck

from autoprune.errors import ConfigError
from autoprune.spaces._quantizers import FLOAT_BITS
from autoprune.spaces._zoo import CifarBasicBlock

__all__ = ["ACTIVATION_OPS", "CostReport", "LayerCost", "count_costs"]

_logger = logging.getLogger("autoprune.spaces")

_FLOAT_BYTES = 4  # parameters of non-quantized layers (BN, biases) are float32


@dataclass(frozen=True)
class LayerCost:
    """Cost of one executed layer (one call of a leaf module, or one residual add), batch 1.

    Attributes:
        name: module name (a residual add is ``<block>.add``).
        op: ``"conv2d"`` (``"conv1d"``, ``"conv_transpose2d"``...), ``"linear"``,
            ``"batchnorm"``, ``"norm"``, an activation's lower-cased class name (``"relu"``,
            ``"relu6"``, ``"hardswish"``...), ``"pool"``, ``"add"`` or ``"unknown"``.
        macs: multiply-accumulates.
        params: parameters of the module (on its first call only; 0 on later calls).
        weight_bits: bits of the ``weight`` tensor (32 = float).
        activation_bits: bits of the layer's input activation (32 = float).
        input_elements: elements read as input (an add reads both operands).
        output_elements: elements written.
        weight_elements: elements of the module's ``weight`` parameter (0 if none).

    Example:
        >>> row = LayerCost(name="fc", op="linear", macs=640, params=650, weight_bits=32,
        ...                 activation_bits=32, input_elements=64, output_elements=10,
        ...                 weight_elements=640)
        >>> LayerCost.from_dict(row.to_dict()) == row
        True
    """

    name: str
    op: str
    macs: int
    params: int
    weight_bits: int
    activation_bits: int
    input_elements: int
    output_elements: int
    weight_elements: int

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LayerCost:
        """Inverse of :meth:`to_dict`."""
        return cls(**dict(data))


@dataclass(frozen=True)
class CostReport:
    """Exact costs of a model at one input shape (batch 1).

    Attributes:
        input_shape: ``(C, H, W)`` the model was counted at.
        macs: total multiply-accumulates ("FLOPs" in this project).
        params: total parameters of the model.
        size_bytes: bytes of the parameters at the layers' bit-widths (conv/linear weights at
            ``weight_bits``, everything else, e.g. BN and biases, as float32).
        layers: per-layer rows in execution order.

    Example:
        >>> from torch import nn
        >>> report = count_costs(nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU()), (1, 5, 5))
        >>> report.macs, report.params, report.size_bytes  # 4*3*3 outputs x 1*3*3 MACs
        (324, 40, 160)
        >>> CostReport.from_dict(report.to_dict()) == report
        True
    """

    input_shape: tuple[int, int, int]
    macs: int
    params: int
    size_bytes: int
    layers: tuple[LayerCost, ...]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "input_shape": list(self.input_shape),
            "macs": self.macs,
            "params": self.params,
            "size_bytes": self.size_bytes,
            "layers": [row.to_dict() for row in self.layers],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CostReport:
        """Inverse of :meth:`to_dict`."""
        return cls(
            input_shape=tuple(data["input_shape"]),  # type: ignore[arg-type]
            macs=int(data["macs"]),
            params=int(data["params"]),
            size_bytes=int(data["size_bytes"]),
            layers=tuple(LayerCost.from_dict(row) for row in data["layers"]),
        )


# ------------------------------------------------------------------------------------------
# Per-module handles: (op name, MACs) from the module and its input/output tensors.
# ------------------------------------------------------------------------------------------

Handle = Callable[[nn.Module, torch.Tensor, int], tuple[str, int]]


def _conv(m: nn.Module, x: torch.Tensor, out_elements: int) -> tuple[str, int]:
    assert isinstance(m, nn.modules.conv._ConvNd)
    k = math.prod(m.kernel_size)
    dims = len(m.kernel_size)
    if m.transposed:  # every input element is scattered into out_channels/groups * k outputs
        return f"conv_transpose{dims}d", x.numel() * (m.out_channels // m.groups) * k
    return f"conv{dims}d", out_elements * (m.in_channels // m.groups) * k


def _linear(m: nn.Module, x: torch.Tensor, out_elements: int) -> tuple[str, int]:
    assert isinstance(m, nn.Linear)
    return "linear", out_elements * m.in_features


def _zero(op: str) -> Handle:
    def handle(m: nn.Module, x: torch.Tensor, out_elements: int) -> tuple[str, int]:
        return op, 0

    return handle


_ACTIVATIONS: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.ELU,
    nn.SELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Hardtanh,
    nn.Sigmoid,
    nn.Tanh,
    nn.Softmax,
)
#: Op names of activation rows: the lower-cased class name ("relu", "relu6", "hardswish", ...).
ACTIVATION_OPS = frozenset(t.__name__.lower() for t in _ACTIVATIONS)


def _activation(m: nn.Module, x: torch.Tensor, out_elements: int) -> tuple[str, int]:
    return type(m).__name__.lower(), 0


_HANDLES: tuple[tuple[type[nn.Module] | tuple[type[nn.Module], ...], Handle], ...] = (
    (nn.modules.conv._ConvNd, _conv),
    (nn.Linear, _linear),
    (nn.modules.batchnorm._BatchNorm, _zero("batchnorm")),
    ((nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm), _zero("norm")),
    (_ACTIVATIONS, _activation),
    (
        (
            nn.modules.pooling._MaxPoolNd,
            nn.modules.pooling._AvgPoolNd,
            nn.modules.pooling._AdaptiveAvgPoolNd,
            nn.modules.pooling._AdaptiveMaxPoolNd,
        ),
        _zero("pool"),
    ),
)

# No compute at deploy time: no row.
_SKIPPED = (nn.Identity, nn.Flatten, nn.Unflatten, nn.modules.dropout._DropoutNd)

# Residual blocks whose functional `out + identity` gets an "add" row:
# type -> (has a residual add?, is the add followed by an activation inside the block?).
_RESIDUAL_BLOCKS: dict[type[nn.Module], tuple[Callable[[nn.Module], bool], bool]] = {
    BasicBlock: (lambda m: True, True),
    Bottleneck: (lambda m: True, True),
    CifarBasicBlock: (lambda m: True, True),
    InvertedResidual: (lambda m: bool(getattr(m, "use_res_connect", False)), False),
}

# Models that pool functionally between two submodules (``F.adaptive_avg_pool2d`` in torchvision's
# MobileNetV2.forward): type -> (module before the pool, module after it). The pool gets a row.
_FUNCTIONAL_POOLS: dict[type[nn.Module], tuple[str, str]] = {
    MobileNetV2: ("features", "classifier")
}


def _handle(module: nn.Module) -> Handle | None:
    for types, handle in _HANDLES:
        if isinstance(module, types):
            return handle
    return None


def _numel(value: object) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel()
    if isinstance(value, list | tuple):
        return sum(_numel(v) for v in value)
    return 0


def _first_tensor(inputs: tuple[object, ...]) -> torch.Tensor | None:
    for value in inputs:
        if isinstance(value, torch.Tensor):
            return value
    return None


def _own_params(module: nn.Module) -> list[nn.Parameter]:
    return list(module.parameters(recurse=False))


def count_costs(model: nn.Module, input_shape: tuple[int, int, int]) -> CostReport:
    """Count MACs, parameters and bytes of ``model`` on one input of shape ``input_shape``.

    The model runs once, in eval mode under ``torch.no_grad`` on the device and dtype of its
    parameters (``meta`` works and is free), then gets its train/eval modes back. Input values
    are zeros, so the global RNG is untouched. Fake-quantized layers (``weight_bits`` /
    ``activation_bits`` attributes) are counted at their bit-widths.

    Args:
        model: any ``nn.Module`` taking one ``(1, C, H, W)`` tensor.
        input_shape: ``(C, H, W)``, e.g. ``(3, 224, 224)``.

    Example:
        >>> from autoprune.spaces import create_model
        >>> report = count_costs(create_model("resnet20", num_classes=10, in_channels=3),
        ...                      (3, 32, 32))
        >>> round(report.macs / 1e6, 1), report.params  # 40.8 MMACs, 0.27 M parameters
        (40.8, 272474)
    """
    shape = tuple(input_shape)
    if len(shape) != 3 or any(
        isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in shape
    ):
        raise ConfigError(f"`input_shape` must be (C, H, W) positive integers, got {input_shape!r}")
    params = list(model.parameters())
    device = params[0].device if params else torch.device("cpu")
    dtype = params[0].dtype if params and params[0].is_floating_point() else torch.float32

    rows: list[LayerCost] = []
    counted: set[int] = set()  # id() of parameters already attributed to a row
    unknown: dict[str, list[str]] = {}
    size_bytes = 0

    def leaf_hook(name: str) -> Callable[[nn.Module, tuple[object, ...], object], None]:
        def hook(module: nn.Module, inputs: tuple[object, ...], output: object) -> None:
            nonlocal size_bytes
            x = _first_tensor(inputs)
            in_el, out_el = (x.numel() if x is not None else 0), _numel(output)
            handle = _handle(module)
            if handle is None:
                unknown.setdefault(type(module).__name__, []).append(name)
                op, macs = "unknown", 0
            else:
                assert x is not None
                op, macs = handle(module, x, out_el)
            own = [p for p in _own_params(module) if id(p) not in counted]
            counted.update(id(p) for p in own)
            weight = getattr(module, "weight", None)
            weight_el = weight.numel() if isinstance(weight, torch.Tensor) else 0
            n_params = sum(p.numel() for p in own)
            row = LayerCost(
                name=name,
                op=op,
                macs=int(macs),
                params=int(n_params),
                weight_bits=int(getattr(module, "weight_bits", FLOAT_BITS)),
                activation_bits=int(getattr(module, "activation_bits", FLOAT_BITS)),
                input_elements=int(in_el),
                output_elements=int(out_el),
                weight_elements=int(weight_el),
            )
            # Bytes count once per parameter: the weight at its bit-width, the rest float32.
            new_weight = weight_el if any(p is weight for p in own) else 0
            size_bytes += math.ceil(new_weight * row.weight_bits / 8)
            size_bytes += _FLOAT_BYTES * (n_params - new_weight)
            rows.append(row)

        return hook

    def block_hook(name: str, activation_after: bool) -> Callable[..., None]:
        def hook(module: nn.Module, inputs: tuple[object, ...], output: object) -> None:
            out_el = _numel(output)
            row = LayerCost(
                name=f"{name}.add",
                op="add",
                macs=0,
                params=0,
                weight_bits=FLOAT_BITS,
                activation_bits=FLOAT_BITS,
                input_elements=2 * out_el,
                output_elements=out_el,
                weight_elements=0,
            )
            last = rows[-1] if rows else None
            if (
                activation_after
                and last is not None
                and last.name.startswith(name + ".")
                and last.op in ACTIVATION_OPS
            ):
                rows.insert(len(rows) - 1, row)  # the add comes before the block's final ReLU
            else:
                rows.append(row)

        return hook

    def pool_hooks(name: str, module: nn.Module, before: str, after: str) -> list[Any]:
        seen: list[int] = []

        def record(m: nn.Module, inputs: tuple[object, ...], output: object) -> None:
            seen.append(_numel(output))

        def add_row(m: nn.Module, inputs: tuple[object, ...]) -> None:
            if seen:
                rows.append(
                    LayerCost(
                        name=f"{name}.pool" if name else "pool",
                        op="pool",
                        macs=0,
                        params=0,
                        weight_bits=FLOAT_BITS,
                        activation_bits=FLOAT_BITS,
                        input_elements=seen.pop(),
                        output_elements=_numel(inputs),
                        weight_elements=0,
                    )
                )

        return [
            module.get_submodule(before).register_forward_hook(record),
            module.get_submodule(after).register_forward_pre_hook(add_row),
        ]

    handles = []
    for name, module in model.named_modules():
        if next(module.children(), None) is None and not isinstance(module, _SKIPPED):
            handles.append(module.register_forward_hook(leaf_hook(name)))
        spec = _RESIDUAL_BLOCKS.get(type(module))
        if spec is not None and spec[0](module):
            handles.append(module.register_forward_hook(block_hook(name, spec[1])))
        pool = _FUNCTIONAL_POOLS.get(type(module))
        if pool is not None:
            handles.extend(pool_hooks(name, module, *pool))

    modes = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *shape, device=device, dtype=dtype))
    finally:
        for h in handles:
            h.remove()
        for m, mode in modes:
            m.training = mode

    for type_name, names in unknown.items():
        _logger.warning(
            "count_costs: no cost handle for %s (%s); its MACs are counted as 0, its parameters "
            "as float32",
            type_name,
            ", ".join(names[:5]) + (" ..." if len(names) > 5 else ""),
        )
    uncounted = [p for p in params if id(p) not in counted]
    unique_uncounted = {id(p): p for p in uncounted}
    n_uncounted = sum(p.numel() for p in unique_uncounted.values())
    if n_uncounted:
        _logger.warning(
            "count_costs: %d parameters were not used by any leaf module in the forward pass; "
            "counted as float32 with no MACs",
            n_uncounted,
        )
        size_bytes += _FLOAT_BYTES * n_uncounted
    total_params = sum(p.numel() for p in {id(p): p for p in params}.values())
    return CostReport(
        input_shape=shape,  # type: ignore[arg-type]
        macs=sum(r.macs for r in rows),
        params=total_params,
        size_bytes=size_bytes,
        layers=tuple(rows),
    )
