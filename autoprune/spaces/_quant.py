"""Fake quantization for bit-width search (quantization-aware training from scratch).

Every quantizer is a straight-through estimator written as ``x + (q(x) - x).detach()``: the
forward pass sees the quantized value, the backward pass the identity (Bengio et al. 2013). Only
plain torch ops are used and there is no data-dependent Python control flow, so a model holding
these layers exports to ONNX and TorchScript and runs under ``torch.export``.

* Weights: symmetric, per output channel, narrow range ``[-(2**(b-1) - 1), 2**(b-1) - 1]``
  (so at most ``2**b - 1`` distinct levels per channel), scale ``max|w_c| / (2**(b-1) - 1)``.
* Activations: quantized at the layer *input*, with a range tracked during training by an
  exponential moving average of the batch min/max (buffers ``act_min``/``act_max``, saved in the
  ``state_dict``). Unsigned ``[0, 2**b - 1]`` levels over ``[0, act_max]`` if the observed
  minimum is >= 0 (inputs after a ReLU), otherwise symmetric signed levels over
  ``[-m, m]``, ``m = max(|act_min|, |act_max|)``. Before the first training batch the layer uses
  the current batch's own range.

A bit-width of 32 means float: no fake quantization for that tensor.

Example:
    >>> import torch
    >>> from torch import nn
    >>> q = QuantConv2d.from_float(nn.Conv2d(3, 8, 3), weight_bits=4, activation_bits=8)
    >>> q(torch.randn(2, 3, 8, 8)).shape
    torch.Size([2, 8, 6, 6])
    >>> int(fake_quantize_weight(q.weight, 4)[0].unique().numel()) <= 15
    True
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from autoprune.errors import ConfigError

__all__ = [
    "FLOAT_BITS",
    "QuantConv2d",
    "QuantLinear",
    "check_bits",
    "fake_quantize_activation",
    "fake_quantize_weight",
]

#: The bit-width that means "float, not quantized".
FLOAT_BITS = 32
_MIN_BITS = 2  # symmetric narrow-range weights need 2 ** (b - 1) - 1 >= 1
_MAX_BITS = 16


def check_bits(bits: int, *, what: str) -> int:
    """Validate a bit-width: an int in 2..16, or 32 (float).

    Raises:
        ConfigError: quoting the bad value and the allowed ones.

    Example:
        >>> check_bits(8, what="weight_bits")
        8
    """
    if isinstance(bits, bool) or not isinstance(bits, int):
        raise ConfigError(
            f"`{what}` must be an integer in {_MIN_BITS}..{_MAX_BITS} or {FLOAT_BITS} (float), "
            f"but got {bits!r}"
        )
    if bits != FLOAT_BITS and not _MIN_BITS <= bits <= _MAX_BITS:
        raise ConfigError(
            f"`{what}` must be in {_MIN_BITS}..{_MAX_BITS} or {FLOAT_BITS} (float), but got "
            f"{bits}; pick e.g. 8 or 4"
        )
    return bits


def fake_quantize_weight(weight: torch.Tensor, bits: int) -> torch.Tensor:
    """Symmetric per-output-channel (dim 0) fake quantization with a straight-through gradient.

    Example:
        >>> import torch
        >>> w = torch.tensor([[0.5, -1.0, 0.24], [2.0, 0.1, -0.3]])
        >>> fake_quantize_weight(w, 2).tolist()  # levels {-1, 0, 1} * max|w_c|
        [[0.0, -1.0, 0.0], [2.0, 0.0, 0.0]]
    """
    # Literal 32 and 1e-12 (= FLOAT_BITS, _EPS): TorchScript cannot read module globals.
    if bits >= 32:
        return weight
    qmax = float(2 ** (bits - 1) - 1)
    w = weight.detach()
    absmax = w.abs()
    if w.dim() > 1:
        absmax = absmax.flatten(1).amax(dim=1).reshape([-1] + [1] * (w.dim() - 1))
    scale = absmax.clamp_min(1e-12) / qmax
    q = torch.clamp(torch.round(w / scale), -qmax, qmax) * scale
    return weight + (q - weight).detach()


def fake_quantize_activation(
    x: torch.Tensor, bits: int, lo: torch.Tensor, hi: torch.Tensor
) -> torch.Tensor:
    """Fake-quantize ``x`` over the range ``[lo, hi]`` (0-dim tensors) at ``bits`` bits.

    Unsigned levels if ``lo >= 0``, symmetric signed levels otherwise; straight-through gradient.

    Example:
        >>> import torch
        >>> x = torch.tensor([0.0, 0.4, 1.0, 3.0])
        >>> fake_quantize_activation(x, 2, torch.tensor(0.0), torch.tensor(3.0)).tolist()
        [0.0, 0.0, 1.0, 3.0]
    """
    if bits >= 32:  # FLOAT_BITS
        return x
    qmax_u = float(2**bits - 1)
    qmax_s = float(2 ** (bits - 1) - 1)
    unsigned = lo >= 0
    absmax = torch.maximum(lo.abs(), hi.abs())
    scale = torch.where(unsigned, hi / qmax_u, absmax / qmax_s).clamp_min(1e-12)
    qlo = torch.where(unsigned, torch.zeros_like(scale), torch.full_like(scale, -qmax_s))
    qhi = torch.where(unsigned, torch.full_like(scale, qmax_u), torch.full_like(scale, qmax_s))
    xd = x.detach()
    q = torch.clamp(torch.round(xd / scale), qlo, qhi) * scale
    return x + (q - x).detach()


class _ActivationObserver(nn.Module):
    """Mixin state: EMA of the input's min/max, as buffers (saved in the ``state_dict``)."""

    act_min: torch.Tensor
    act_max: torch.Tensor
    act_observed: torch.Tensor

    def _init_quant(
        self, weight_bits: int, activation_bits: int, momentum: float, device: torch.device | None
    ) -> None:
        self.weight_bits = check_bits(weight_bits, what="weight_bits")
        self.activation_bits = check_bits(activation_bits, what="activation_bits")
        if not 0.0 < momentum <= 1.0:
            raise ConfigError(f"`momentum` must be in (0, 1], but got {momentum!r}")
        self.momentum = float(momentum)
        self.register_buffer("act_min", torch.zeros((), device=device))
        self.register_buffer("act_max", torch.zeros((), device=device))
        self.register_buffer("act_observed", torch.zeros((), dtype=torch.bool, device=device))

    def _quantize_input(self, x: torch.Tensor) -> torch.Tensor:
        if self.activation_bits >= 32:  # FLOAT_BITS
            return x
        xd = x.detach()
        batch_min = xd.min().to(self.act_min.dtype)
        batch_max = xd.max().to(self.act_max.dtype)
        if self.training:
            # EMA without a host sync: the first batch initialises the range.
            m = self.momentum
            with torch.no_grad():
                new_min = torch.where(
                    self.act_observed, (1 - m) * self.act_min + m * batch_min, batch_min
                )
                new_max = torch.where(
                    self.act_observed, (1 - m) * self.act_max + m * batch_max, batch_max
                )
                self.act_min.copy_(new_min)
                self.act_max.copy_(new_max)
                self.act_observed.fill_(True)
            lo, hi = self.act_min, self.act_max
        else:
            lo = torch.where(self.act_observed, self.act_min, batch_min)
            hi = torch.where(self.act_observed, self.act_max, batch_max)
        return fake_quantize_activation(x, self.activation_bits, lo.to(x.dtype), hi.to(x.dtype))

    def _quant_repr(self) -> str:
        return f"weight_bits={self.weight_bits}, activation_bits={self.activation_bits}"


class QuantConv2d(nn.Conv2d, _ActivationObserver):
    """``nn.Conv2d`` with fake-quantized weights and input activations.

    A subclass of ``nn.Conv2d`` so ``isinstance`` checks, Torch-Pruning and cost counting still
    see a convolution; ``weight_bits`` and ``activation_bits`` (32 = float) are attributes.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> q = QuantConv2d.from_float(nn.Conv2d(1, 4, 3), weight_bits=8, activation_bits=32)
        >>> q.weight_bits, isinstance(q, nn.Conv2d)
        (8, True)
    """

    def __init__(
        self,
        *args: object,
        weight_bits: int = FLOAT_BITS,
        activation_bits: int = FLOAT_BITS,
        momentum: float = 0.1,
        **kwargs: object,
    ) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._init_quant(weight_bits, activation_bits, momentum, self.weight.device)

    @classmethod
    def from_float(
        cls,
        conv: nn.Conv2d,
        *,
        weight_bits: int,
        activation_bits: int,
        momentum: float = 0.1,
    ) -> QuantConv2d:
        """Wrap ``conv``, sharing its parameters (no copy, no re-initialisation)."""
        q = cls(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,  # type: ignore[arg-type]
            stride=conv.stride,  # type: ignore[arg-type]
            padding=conv.padding,  # type: ignore[arg-type]
            dilation=conv.dilation,  # type: ignore[arg-type]
            groups=conv.groups,
            bias=conv.bias is not None,
            padding_mode=conv.padding_mode,
            device="meta",  # parameters are replaced below: allocate nothing
            weight_bits=weight_bits,
            activation_bits=activation_bits,
            momentum=momentum,
        )
        q.weight = conv.weight
        q.bias = conv.bias
        _move_observer(q, conv.weight.device)
        q.train(conv.training)
        return q

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._quantize_input(x)
        w = fake_quantize_weight(self.weight, self.weight_bits)
        return self._conv_forward(x, w, self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, {self._quant_repr()}"


class QuantLinear(nn.Linear, _ActivationObserver):
    """``nn.Linear`` with fake-quantized weights and input activations (see :class:`QuantConv2d`).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> q = QuantLinear.from_float(nn.Linear(16, 10), weight_bits=4, activation_bits=8)
        >>> q(torch.randn(2, 16)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        weight_bits: int = FLOAT_BITS,
        activation_bits: int = FLOAT_BITS,
        momentum: float = 0.1,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(in_features, out_features, bias, device=device, dtype=dtype)
        self._init_quant(weight_bits, activation_bits, momentum, self.weight.device)

    @classmethod
    def from_float(
        cls,
        linear: nn.Linear,
        *,
        weight_bits: int,
        activation_bits: int,
        momentum: float = 0.1,
    ) -> QuantLinear:
        """Wrap ``linear``, sharing its parameters (no copy, no re-initialisation)."""
        q = cls(
            linear.in_features,
            linear.out_features,
            linear.bias is not None,
            weight_bits=weight_bits,
            activation_bits=activation_bits,
            momentum=momentum,
            device="meta",
        )
        q.weight = linear.weight
        q.bias = linear.bias  # type: ignore[assignment]
        _move_observer(q, linear.weight.device)
        q.train(linear.training)
        return q

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._quantize_input(x)
        return F.linear(x, fake_quantize_weight(self.weight, self.weight_bits), self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, {self._quant_repr()}"


def _move_observer(module: _ActivationObserver, device: torch.device) -> None:
    module.act_min = torch.zeros((), device=device)
    module.act_max = torch.zeros((), device=device)
    module.act_observed = torch.zeros((), dtype=torch.bool, device=device)
