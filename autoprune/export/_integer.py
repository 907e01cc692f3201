"""A trained, fake-quantized network in the form runtimes execute: integer weights and
quantize/dequantize pairs (ONNX's QDQ form, which onnxruntime and TensorRT turn into integer
kernels).

:func:`integer_form` replaces every :class:`~autoprune.spaces.QuantConv2d` and
:class:`~autoprune.spaces.QuantLinear` by a layer computing the same values from stored
integers. Per tensor, by bit-width:

* **1-8 bits**: weights stored as int8 (per-output-channel scale; 1 bit as the levels -1 and
  1), input activations (2-8 bits) through QuantizeLinear/DequantizeLinear at uint8 (unsigned
  grids) or int8 (symmetric grids) with the learned step; a grid narrower than the storage type
  is clamped to it first.
* **9-16 bits**: fp16 on targets whose native precisions include it (weights stored as fp16,
  activations clipped to the trained range, then rounded to fp16: the deployer's runtime runs
  these layers in half precision), else
  int16 QDQ (the trained grid exactly; on such targets 16 bits saves size only).
* **32 bits**: float, unchanged.

With the 2-16-bit integer forms the network computes the trained model's values exactly (up to
float rounding order); the fp16 form differs by fp16's rounding. :func:`fold_batch_norms` then
folds each batch norm that follows a quantized convolution into that convolution's per-channel
weight scale and bias (exact: the int8 weights stay as they are), so that runtimes see the
``DequantizeLinear -> Conv`` pattern their integer kernels fuse.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from autoprune.spaces import QuantConv2d
    >>> q = QuantConv2d.from_float(nn.Conv2d(1, 4, 3), weight_bits=8, activation_bits=8)
    >>> _ = q(torch.rand(2, 1, 8, 8)); q = q.eval()  # one training batch calibrates it
    >>> deployed, layers = integer_form(nn.Sequential(q), fp16=False)
    >>> layers[0].weights, layers[0].activations, deployed[0].weight.stored.dtype
    ('int8', 'uint8', torch.int8)
    >>> x = torch.rand(2, 1, 8, 8)
    >>> bool(torch.allclose(deployed(x), q(x), atol=1e-6))
    True
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import onnx
import torch
import torch.ao.quantization.fx._decomposed  # noqa: F401  (registers quantized_decomposed ops)
import torch.nn.functional as F
from onnx import numpy_helper
from torch import nn

from autoprune.errors import AutopruneError
from autoprune.spaces import QuantConv2d, QuantLinear

__all__ = ["LayerPrecision", "fold_batch_norms", "integer_form", "is_quantized"]

_FLOAT_BITS = 32
_INT8_BITS = 8
_QD = torch.ops.quantized_decomposed


@dataclass(frozen=True)
class LayerPrecision:
    """How one layer of an exported network stores its weights and quantizes its input.

    ``weights`` and ``activations`` are storage types: ``int8``, ``uint8``, ``int16``, ``fp16``
    or ``fp32``; the bit-widths are the ones the search chose (32 = float).
    """

    layer: str
    weight_bits: int
    activation_bits: int
    weights: str
    activations: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def is_quantized(model: nn.Module) -> bool:
    """Whether any layer of ``model`` has a weight or activation bit-width below 32."""
    return any(
        getattr(m, "weight_bits", _FLOAT_BITS) < _FLOAT_BITS
        or getattr(m, "activation_bits", _FLOAT_BITS) < _FLOAT_BITS
        for m in model.modules()
    )


def _integer_dtype(bits: int, signed: bool) -> torch.dtype:
    if bits <= _INT8_BITS:
        return torch.int8 if signed else torch.uint8
    return torch.int16 if signed else torch.uint16


class _StoredWeight(nn.Module):
    """A layer's weight as stored: integers with a per-output-channel scale, fp16, or float.

    ``forward()`` returns the float weight the layer computes with.
    """

    def __init__(self, layer: QuantConv2d | QuantLinear, fp16: bool) -> None:
        super().__init__()
        bits = layer.weight_bits
        weight = layer.weight.detach().float()
        self.bits = bits
        self.form = "fp32"
        if bits >= _FLOAT_BITS:
            self.register_buffer("stored", weight.clone())
            return
        qmax = max(1, 2 ** (bits - 1) - 1)  # 1 bit: the binary levels {-1, 1}
        if layer._calibrated > 0:
            scale = layer.weight_scale.detach().float()
        elif bits == 1:  # never trained: the scales of fake_quantize_weight
            scale = weight.abs().flatten(1).mean(dim=1)
        else:
            scale = weight.abs().flatten(1).amax(dim=1) / qmax
        scale = scale.clamp_min(1e-12)
        per_channel = scale.reshape(-1, *[1] * (weight.dim() - 1))
        if bits == 1:
            levels = torch.where(weight >= 0, 1.0, -1.0)
        else:
            levels = torch.clamp(torch.round(weight / per_channel), -qmax, qmax)
        if bits > _INT8_BITS and fp16:
            self.register_buffer("stored", (levels * per_channel).half())
            self.form = "fp16"
            return
        dtype = _integer_dtype(bits, signed=True)
        self.form = "int8" if dtype == torch.int8 else "int16"
        self.qmax = qmax
        self.register_buffer("stored", levels.to(dtype))
        self.register_buffer("scale", scale)
        self.register_buffer("zero_point", torch.zeros(scale.numel(), dtype=torch.int32))

    def forward(self) -> torch.Tensor:
        if self.form in ("fp32", "fp16"):
            return self.stored.float()
        return _QD.dequantize_per_channel(
            self.stored, self.scale, self.zero_point, 0, -self.qmax, self.qmax, self.stored.dtype
        )


class _QuantizedInput(nn.Module):
    """A layer's input quantization as runtimes execute it: QDQ at the learned step, fp16
    rounding, or nothing (float)."""

    def __init__(self, layer: QuantConv2d | QuantLinear, fp16: bool) -> None:
        super().__init__()
        bits = layer.activation_bits
        self.form = "fp32"
        if bits >= _FLOAT_BITS:
            return
        if layer._calibrated == 0:
            raise AutopruneError(
                "a quantized layer was never calibrated (its model was not trained); export a "
                "trained trial"
            )
        signed = layer._signed
        self.qmin, self.qmax = (
            (-(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
        )
        self.step = float(layer.act_step.detach().float().clamp_min(1e-12))
        if bits > _INT8_BITS and fp16:  # clipped to the trained range, as the training saw it
            self.form = "fp16"
            return
        self.dtype = _integer_dtype(bits, signed)
        self.form = str(self.dtype).removeprefix("torch.")
        info = torch.iinfo(self.dtype)
        self.clamp = (self.qmin, self.qmax) != (info.min, info.max)  # grid narrower than storage

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.form == "fp32":
            return x
        if self.form == "fp16":
            return x.clamp(self.qmin * self.step, self.qmax * self.step).half().float()
        if self.clamp:
            x = x.clamp(self.qmin * self.step, self.qmax * self.step)
        q = _QD.quantize_per_tensor(x, self.step, 0, self.qmin, self.qmax, self.dtype)
        return _QD.dequantize_per_tensor(q, self.step, 0, self.qmin, self.qmax, self.dtype)


class _IntegerConv2d(nn.Module):
    """A trained :class:`QuantConv2d` computing from stored weights and a quantized input."""

    def __init__(self, conv: QuantConv2d, fp16: bool) -> None:
        super().__init__()
        self.input = _QuantizedInput(conv, fp16)
        self.weight = _StoredWeight(conv, fp16)
        self.bias = None if conv.bias is None else nn.Parameter(conv.bias.detach().float().clone())
        self.template = copy.deepcopy(conv).to("meta")  # stride, padding, groups, padding mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.template
        x = self.input(x)
        if t.padding_mode != "zeros":
            x = F.pad(x, t._reversed_padding_repeated_twice, mode=t.padding_mode)
            return F.conv2d(x, self.weight(), self.bias, t.stride, 0, t.dilation, t.groups)
        return F.conv2d(x, self.weight(), self.bias, t.stride, t.padding, t.dilation, t.groups)


class _IntegerLinear(nn.Module):
    """A trained :class:`QuantLinear` computing from stored weights and a quantized input."""

    def __init__(self, linear: QuantLinear, fp16: bool) -> None:
        super().__init__()
        self.input = _QuantizedInput(linear, fp16)
        self.weight = _StoredWeight(linear, fp16)
        self.bias = (
            None if linear.bias is None else nn.Parameter(linear.bias.detach().float().clone())
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self.input(x), self.weight(), self.bias)


def integer_form(model: nn.Module, *, fp16: bool) -> tuple[nn.Module, list[LayerPrecision]]:
    """A copy of the trained ``model`` (evaluation mode) with its quantized layers in integer
    form, and each quantized layer's storage (module doc). ``fp16``: whether the target runs
    fp16 natively (9-16-bit layers become fp16 rather than int16). ``model`` is not changed.
    """
    deployed = copy.deepcopy(model).eval()
    layers = []
    for name, module in list(deployed.named_modules()):
        if not isinstance(module, (QuantConv2d, QuantLinear)) or not is_quantized(module):
            continue
        cls = _IntegerConv2d if isinstance(module, QuantConv2d) else _IntegerLinear
        replacement = cls(module, fp16)
        parent, _, child = name.rpartition(".")
        setattr(deployed.get_submodule(parent) if parent else deployed, child, replacement)
        layers.append(
            LayerPrecision(
                layer=name,
                weight_bits=module.weight_bits,
                activation_bits=module.activation_bits,
                weights=replacement.weight.form,
                activations=replacement.input.form,
            )
        )
    return deployed, layers


def fold_batch_norms(model: onnx.ModelProto) -> int:
    """Fold each ``BatchNormalization`` fed by a ``Conv`` whose weight is a per-output-channel
    ``DequantizeLinear`` of a constant into that convolution, in place; returns how many.

    The batch norm's per-channel factor ``gamma / sqrt(var + eps)`` multiplies the weight's
    scale (the stored integers stay) and the bias becomes ``(bias - mean) * factor + beta``.
    """
    graph = model.graph
    constants = {t.name: t for t in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            consumers[name] = consumers.get(name, 0) + 1
    folded = []
    for bn in [n for n in graph.node if n.op_type == "BatchNormalization"]:
        conv = producer.get(bn.input[0])
        if conv is None or conv.op_type != "Conv" or consumers.get(conv.output[0]) != 1:
            continue
        dq = producer.get(conv.input[1])
        if dq is None or dq.op_type != "DequantizeLinear" or consumers.get(dq.output[0]) != 1:
            continue
        axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
        if dq.input[1] not in constants or axis != 0 or len(bn.output) != 1:
            continue
        if not all(name in constants for name in bn.input[1:5]):
            continue
        eps = next((a.f for a in bn.attribute if a.name == "epsilon"), 1e-5)
        gamma, beta, mean, var = (
            numpy_helper.to_array(constants[name]).astype(np.float64) for name in bn.input[1:5]
        )
        factor = gamma / np.sqrt(var + eps)
        scale = numpy_helper.to_array(constants[dq.input[1]]).astype(np.float64)
        has_bias = len(conv.input) > 2 and conv.input[2] != ""
        if has_bias and conv.input[2] not in constants:
            continue
        bias = (
            numpy_helper.to_array(constants[conv.input[2]]).astype(np.float64) if has_bias else 0.0
        )
        prefix = f"autoprune_bn_fold_{len(folded)}"
        new_scale = numpy_helper.from_array((scale * factor).astype(np.float32), f"{prefix}_scale")
        new_bias = numpy_helper.from_array(
            ((bias - mean) * factor + beta).astype(np.float32), f"{prefix}_bias"
        )
        graph.initializer.extend([new_scale, new_bias])
        dq.input[1] = new_scale.name
        if has_bias:
            conv.input[2] = new_bias.name
        else:
            conv.input.append(new_bias.name)
        conv.output[0] = bn.output[0]
        folded.append(bn)
    for bn in folded:
        graph.node.remove(bn)
    used = {name for node in graph.node for name in node.input}
    stale = [t for t in graph.initializer if t.name not in used]
    for tensor in stale:
        graph.initializer.remove(tensor)
    return len(folded)
