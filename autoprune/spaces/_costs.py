"""Exact cost counting (fvcore style, on the aten graph): MACs, parameters and bytes, per op.

Counting convention, stated once: **"FLOPs" in autoprune means multiply-accumulates (MACs)**, the
convention of torchvision's model metadata (``_ops``) and the pruning literature (ResNet-50 at
3x224x224 = 4.09 GFLOPs = 4.09 GMACs). Only matrix products have MACs: convolutions (grouped and
transposed too), linear layers, ``matmul``/``bmm`` of activations and attention (its two
matmuls). Everything else that computes (elementwise ops, activations, norms, pooling, ``cat``,
interpolation, softmax, ...) gets a zero-MAC row that still carries element counts, so the
hardware estimator sees its memory traffic. Costs are for batch size 1.

The model runs once under ``torch.inference_mode`` and a ``TorchDispatchMode`` (the mechanism of
``torch.utils.flop_counter.FlopCounterMode``), where aten's composite ops (``linear``,
``batch_norm``, ``scaled_dot_product_attention``...) arrive whole. Each op is looked up in the
per-op handle table (:mod:`._op_handles`); one in no table is decomposed into its parts first.
Rows go to the innermost ``nn.Module`` executing (forward pre-/post-hooks), so functional ops
(``x + y``, ``torch.cat``, ``F.relu``...) of any model family are counted without per-model
tables. Views and layout copies make no row; inside a fake-quantized layer (``weight_bits`` /
``activation_bits`` attributes) only the matrix product does (the quantization arithmetic is
not deployed). An aten op that is still in no table is warned about (via the
``autoprune.spaces`` logger) and gets an ``"unknown"`` row, never a silent zero.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from autoprune.errors import ConfigError
from autoprune.spaces._op_handles import (
    ACTIVATION_OPS,
    MAC_HANDLES,
    META_SHORTCUTS,
    NO_ROW_OPS,
    TO_COPY,
    ZERO_MAC_OPS,
    MacCost,
)
from autoprune.spaces._quantizers import FLOAT_BITS

__all__ = ["ACTIVATION_OPS", "CostReport", "LayerCost", "count_costs"]

_logger = logging.getLogger("autoprune.spaces")

_FLOAT_BYTES = 4  # parameters of non-quantized layers (BN, biases) are float32


@dataclass(frozen=True)
class LayerCost:
    """Cost of one executed op (a layer's conv, a residual add...), batch 1.

    Attributes:
        name: the leaf module that ran the op (``layer1.0.conv1``), or ``<module>.<op>`` for a
            functional op of a container (a residual add is ``<block>.add``; ``<op>`` alone at
            the root).
        op: ``"conv2d"`` (``"conv1d"``, ``"conv_transpose2d"``...), ``"linear"``, ``"matmul"``
            (of two activations), ``"attention"``, ``"batchnorm"``, ``"norm"``, an activation
            (:data:`ACTIVATION_OPS`: ``"relu"``, ``"relu6"``, ``"hardswish"``...), ``"pool"``,
            ``"add"``, ``"mul"``, ``"cat"``, ``"interpolate"``, ... or ``"unknown"``.
        macs: multiply-accumulates.
        params: parameters first attributed to this row (its module's own on the module's
            first row, plus any not yet attributed that the op reads); 0 on later rows.
        weight_bits: bits of the ``weight`` tensor (32 = float).
        activation_bits: bits of the layer's input activation (32 = float).
        input_elements: activation elements read (an add reads both operands; parameters and
            buffers are not activations).
        output_elements: elements written.
        weight_elements: elements of the weight operand (a parameter, or a fake-quantized
            layer's weight; 0 if none).

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
# The counter: module tracking, per-op rows, parameter attribution.
# ------------------------------------------------------------------------------------------


class _Module(NamedTuple):
    name: str
    leaf: bool
    quantized: bool  # a fake-quantized layer: only its matrix product makes a row
    weight_bits: int
    activation_bits: int
    module: nn.Module


def _tensors(args: Sequence[Any], kwargs: Mapping[str, Any]) -> Iterator[torch.Tensor]:
    for value in (*args, *kwargs.values()):
        if isinstance(value, torch.Tensor):
            yield value
        elif isinstance(value, list | tuple):
            yield from (v for v in value if isinstance(v, torch.Tensor))


def _first_tensor(value: object) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, list | tuple):
        return next((v for v in value if isinstance(v, torch.Tensor)), None)
    return None


class _Counter:
    """Rows, parameter claims and bytes of one forward pass of ``model``."""

    def __init__(self, model: nn.Module) -> None:
        self.modules: dict[int, _Module] = {}
        for name, m in model.named_modules():
            bits = getattr(m, "weight_bits", None), getattr(m, "activation_bits", None)
            self.modules[id(m)] = _Module(
                name=name,
                leaf=next(m.children(), None) is None,
                quantized=bits != (None, None),
                weight_bits=int(bits[0] if bits[0] is not None else FLOAT_BITS),
                activation_bits=int(bits[1] if bits[1] is not None else FLOAT_BITS),
                module=m,
            )
        self.stack = [self.modules[id(model)]]
        self.params = {id(p): p for p in model.parameters()}
        self.state = {id(t): t for t in model.buffers()} | self.params  # not activations
        self.claimed: set[int] = set()  # id() of parameters already attributed to a row
        self.started: set[int] = set()  # id() of modules that have a row
        self.pending: dict[int, list[torch.Tensor]] = {}  # module id -> parameters read, no row
        self.rows: list[LayerCost] = []
        self.size_bytes = 0
        self.unknown: dict[str, list[str]] = {}

    def hooks(self) -> list[Any]:
        def push(module: nn.Module, args: object) -> None:
            self.stack.append(self.modules[id(module)])

        def pop(module: nn.Module, args: object, output: object) -> None:
            self.stack.pop()

        handles = []
        for info in self.modules.values():
            handles.append(info.module.register_forward_pre_hook(push))
            handles.append(info.module.register_forward_hook(pop))
        return handles

    def _state_of(self, t: torch.Tensor) -> torch.Tensor | None:
        """The parameter or buffer ``t`` is or views, else ``None`` (an activation)."""
        if id(t) in self.state:
            return t
        base = t._base
        return base if base is not None and id(base) in self.state else None

    def note(self, args: Sequence[Any]) -> None:
        """An op without a row read these: parameters go to its module's next row (a bias
        cloned before a functional ``F.linear``, say)."""
        for a in args:
            if isinstance(a, torch.Tensor) and id(a) in self.params and id(a) not in self.claimed:
                self.pending.setdefault(id(self.stack[-1].module), []).append(a)

    def on_op(self, packet: Any, args: Sequence[Any], kwargs: Mapping[str, Any], out: Any) -> None:
        """One row for one executed aten op (none for quantization arithmetic and casts)."""
        module = self.stack[-1]
        result = _first_tensor(out)
        mac = MAC_HANDLES.get(packet)
        if result is not None and mac is not None:
            self.add_row(module, mac(args, result), _tensors(args, kwargs), result)
            return
        if result is None or module.quantized:  # a fake-quantized layer's quantization
            self.note(args)  # arithmetic: not deployed
            return
        name = ZERO_MAC_OPS.get(packet)
        if packet is TO_COPY:
            dtype = kwargs.get("dtype")
            name = "cast" if dtype is not None and dtype != args[0].dtype else None
        elif name is None:
            self.unknown.setdefault(str(packet), []).append(module.name or "<root>")
            name = "unknown"
        elif not isinstance(name, str):
            name = name(args)
        if name is None:
            self.note(args)
            return
        self.add_row(module, MacCost(name, 0, None), _tensors(args, kwargs), result)

    def add_row(
        self,
        module: _Module,
        cost: MacCost,
        operands: Iterator[torch.Tensor],
        result: torch.Tensor,
    ) -> None:
        op, weight = cost.op, cost.weight
        reads: list[torch.Tensor] = []  # parameters (or their views) among the operands
        in_el = weight_el = 0
        if weight is not None:
            owner = self._state_of(weight)
            if owner is not None or module.quantized:  # a (fake-quantized) layer weight
                weight_el = weight.numel()
                reads += [] if owner is None else [owner]
                if op == "matmul":
                    op = "linear"
            elif op == "matmul" and isinstance(module.module, nn.Linear):
                op = "linear"
        for t in operands:
            if t is weight and weight_el:
                continue
            owner = self._state_of(t)
            if owner is None:
                in_el += t.numel()
            elif id(owner) in self.params:
                reads.append(owner)
                if not weight_el and cost.macs == 0:
                    weight_el = t.numel()  # e.g. a norm's weight, a learned scale
        claims = self.pending.pop(id(module.module), []) + reads
        if id(module.module) not in self.started:  # the module's own parameters, once
            self.started.add(id(module.module))
            claims = list(module.module.parameters(recurse=False)) + claims
        n_params = 0
        own_weight = getattr(module.module, "weight", None)
        for p in claims:
            if id(p) in self.claimed:
                continue
            self.claimed.add(id(p))
            n_params += p.numel()
            bits = module.weight_bits if p is own_weight else FLOAT_BITS
            self.size_bytes += math.ceil(p.numel() * bits / 8)
        row_name = module.name if module.leaf and module.name else f"{module.name}.{op}".lstrip(".")
        self.rows.append(
            LayerCost(
                name=row_name,
                op=op,
                macs=int(cost.macs),
                params=int(n_params),
                weight_bits=module.weight_bits,
                activation_bits=module.activation_bits,
                input_elements=int(in_el),
                output_elements=int(result.numel()),
                weight_elements=int(weight_el),
            )
        )


class _OpMode(TorchDispatchMode):
    """Sends every aten op to the counter; tries an unknown op's decomposition first."""

    def __init__(self, counter: _Counter) -> None:
        super().__init__()
        self.counter = counter

    def __torch_dispatch__(
        self, func: Any, types: Any, args: Sequence[Any] = (), kwargs: Any = None
    ) -> Any:
        kwargs = kwargs or {}
        packet = func._overloadpacket
        if packet in NO_ROW_OPS:
            self.counter.note(args)
            return func(*args, **kwargs)
        if packet not in MAC_HANDLES and packet not in ZERO_MAC_OPS and packet is not TO_COPY:
            with self:
                out = func.decompose(*args, **kwargs)
            if out is not NotImplemented:
                return out
        shortcut = META_SHORTCUTS.get(packet)
        meta = bool(args) and isinstance(args[0], torch.Tensor) and args[0].is_meta
        out = shortcut(args) if shortcut is not None and meta and not kwargs else None
        if out is None:
            out = func(*args, **kwargs)
        self.counter.on_op(packet, args, kwargs, out)
        return out


class _FunctionMode(TorchFunctionMode):
    """A pass-through torch-function mode: while one is active, ``nn.MultiheadAttention`` and
    ``nn.TransformerEncoderLayer`` skip their fused CPU/CUDA fast path, so every device runs
    (and counts) the same ops as ``meta``."""

    def __torch_function__(
        self, func: Any, types: Any, args: Sequence[Any] = (), kwargs: Any = None
    ) -> Any:
        return func(*args, **(kwargs or {}))


def count_costs(model: nn.Module, input_shape: tuple[int, int, int]) -> CostReport:
    """Count MACs, parameters and bytes of ``model`` on one input of shape ``input_shape``.

    The model runs once, in eval mode under ``torch.inference_mode`` on the device and dtype of
    its parameters (``meta`` works and is free), then gets its train/eval modes back. Input values
    are zeros, so the global RNG is untouched. Rows are aten ops in execution order, named
    after the leaf module that ran them (``layer1.0.conv1``) or ``<module>.<op>`` for a
    functional op of a container (``layer1.0.add``). Each parameter counts once, on the first
    row of its module (or the first row that reads it); fake-quantized layers (``weight_bits`` /
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
        >>> [f"{r.name}:{r.op}" for r in report.layers[-4:]]
        ['layer3.2.add:add', 'layer3.2.relu:relu', 'avgpool:pool', 'fc:linear']
    """
    shape = tuple(input_shape)
    if len(shape) != 3 or any(
        isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in shape
    ):
        raise ConfigError(f"`input_shape` must be (C, H, W) positive integers, got {input_shape!r}")
    params = list(model.parameters())
    device = params[0].device if params else torch.device("cpu")
    dtype = params[0].dtype if params and params[0].is_floating_point() else torch.float32

    counter = _Counter(model)
    handles = counter.hooks()
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        x = torch.zeros(1, *shape, device=device, dtype=dtype)
        with torch.inference_mode(), _FunctionMode(), _OpMode(counter):
            model(x)
    finally:
        for h in handles:
            h.remove()
        for m, mode in modes:
            m.training = mode

    for op, names in counter.unknown.items():
        _logger.warning(
            "count_costs: no cost handle for aten op %s (in %s); its rows are 'unknown' with 0 "
            "MACs",
            op,
            ", ".join(dict.fromkeys(names[:5])) + (" ..." if len(names) > 5 else ""),
        )
    n_uncounted = sum(p.numel() for i, p in counter.params.items() if i not in counter.claimed)
    if n_uncounted:
        _logger.warning(
            "count_costs: %d parameters were not used by any op in the forward pass; counted "
            "as float32 with no MACs",
            n_uncounted,
        )
    return CostReport(
        input_shape=shape,  # type: ignore[arg-type]
        macs=sum(r.macs for r in counter.rows),
        params=sum(p.numel() for p in counter.params.values()),
        size_bytes=counter.size_bytes + _FLOAT_BYTES * n_uncounted,
        layers=tuple(counter.rows),
    )
