"""Fake-quantized ``Conv2d`` and ``Linear`` layers for bit-width search (quantization-aware
training from scratch; the quantizers themselves are in :mod:`._quantizers`).

* **Activations**, quantized at the layer input with LSQ (Esser et al., ICLR 2020): the step
  ``act_step`` (input units per level) starts as the mean MSE-optimal step of the first
  ``calibration_batches`` training batches (LSQ+'s initialisation, Bhalgat et al. 2020), then
  is learned by SGD with LSQ's gradient scale ``1 / sqrt(N * qmax)`` at 2-8 bits. Above 8 bits
  it is not learned (``requires_grad`` False): each training batch moves it a tenth of the way
  to that batch's MSE-optimal step, as batch norm tracks its statistics. Levels are unsigned
  when every calibration input was ``>= 0`` (buffer ``act_signed``), symmetric otherwise. Before
  any calibration, a forward pass uses the batch's own min/max.
* **Weights**: symmetric per output channel; the scale (buffer ``weight_scale``, weight units
  per level) is the MSE-optimal clip, searched at the first training step and again, near the
  previous one, at every training step (at 1 bit, binary weights, it is ``mean|w_c|``).
  Evaluation uses the last training step's scale; a never-trained layer uses
  ``max|w_c| / (2**(b-1) - 1)`` (``mean|w_c|`` at 1 bit).

A bit-width of 32 means float: no fake quantization and no quantizer state for that tensor.
Quantizer state is in the ``state_dict`` (``act_step``, ``act_signed``, ``weight_scale``,
``calibrated_batches``); ``act_step`` is an ``nn.Parameter``, which the trainer exempts from
weight decay and :func:`count_costs` counts as one float32 parameter per layer. ``forward``
branches only on the bit-widths, ``self.training`` and host-side copies of the calibration
count and sign (fixed while a model is exported), so a model holding these layers exports;
training runs a hand-written autograd function with the same values and gradients. Why these
choices: ``docs/quantization.md``.

Example:
    >>> import torch
    >>> from torch import nn
    >>> _ = torch.manual_seed(0)
    >>> q = QuantConv2d.from_float(nn.Conv2d(3, 8, 3), weight_bits=4, activation_bits=8)
    >>> q(torch.randn(2, 3, 8, 8)).shape  # training mode: this batch calibrates
    torch.Size([2, 8, 6, 6])
    >>> int(q.calibrated_batches), bool(q.act_signed), q.act_step.requires_grad
    (1, True, True)
    >>> int(fake_quantize_weight(q.weight, 4, q.weight_scale)[0].unique().numel()) <= 15
    True
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from autoprune.errors import ConfigError
from autoprune.spaces._quantizers import (
    FLOAT_BITS,
    MIN_WEIGHT_BITS,
    _LsqTraining,
    _signed_qmax,
    _unsigned_qmax,
    check_bits,
    fake_quantize_activation,
    fake_quantize_lsq,
    fake_quantize_weight,
    mse_activation_step,
    mse_weight_scale,
)

__all__ = ["QuantConv2d", "QuantLinear"]

_LSQ_MAX_BITS = 8  # activation steps are learned up to this width, tracked above it
_TRACK_MOMENTUM = 0.1  # share of a batch's MSE-optimal step in a tracked step (batch norm's)


class _QuantMixin(nn.Module):
    """Quantizer state and logic shared by :class:`QuantConv2d` and :class:`QuantLinear`.

    (No class-level annotations: TorchScript would read them, as unresolvable strings.)
    """

    def _init_quant(self, weight_bits: int, activation_bits: int, calibration_batches: int) -> None:
        self.weight_bits = check_bits(weight_bits, what="weight_bits", lowest=MIN_WEIGHT_BITS)
        self.activation_bits = check_bits(activation_bits, what="activation_bits")
        if (
            isinstance(calibration_batches, bool)
            or not isinstance(calibration_batches, int)
            or calibration_batches < 1
        ):
            raise ConfigError(
                f"`calibration_batches` must be an integer >= 1, but got "
                f"{calibration_batches!r}; use e.g. 4"
            )
        self.calibration_batches = calibration_batches
        self._reset_quant_state(self.weight.device, self.weight.dtype)

    def _reset_quant_state(self, device: torch.device, dtype: torch.dtype) -> None:
        """(Re)create the quantizer state, uncalibrated, on ``device``."""
        kw: dict[str, Any] = {"device": device, "dtype": dtype}
        if self.activation_bits < FLOAT_BITS:
            learned = self.activation_bits <= _LSQ_MAX_BITS  # else tracked: see the module doc
            self.act_step = nn.Parameter(torch.ones((), **kw), requires_grad=learned)
            signed = torch.zeros((), dtype=torch.bool, device=device)
            self.register_buffer("act_signed", signed)
        else:
            self.register_parameter("act_step", None)
            self.register_buffer("act_signed", None)
        if self.weight_bits < FLOAT_BITS:
            self.register_buffer("weight_scale", torch.zeros(self.weight.shape[0], **kw))
        else:
            self.register_buffer("weight_scale", None)
        self.register_buffer("calibrated_batches", torch.zeros((), dtype=torch.long, device=device))
        # Host-side copies of ``calibrated_batches`` and ``act_signed``, read in forward without
        # a device sync (and as constants by exporters); set by calibration and state loading.
        self._calibrated = 0
        self._signed = False

    def _load_from_state_dict(
        self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any
    ) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if self.calibrated_batches.device.type != "meta":  # a meta tensor has no value
            self._calibrated = int(self.calibrated_batches)
            self._signed = self.act_signed is not None and bool(self.act_signed)

    def _observe(self, x: torch.Tensor) -> None:
        """Training step: search the weight scales; calibrate the input step (first batches),
        then track it above 8 bits."""
        with torch.no_grad():
            if self.weight_scale is not None:
                near = self.weight_scale if self._calibrated > 0 else None
                scale = mse_weight_scale(self.weight, self.weight_bits, near=near)
                self.weight_scale.copy_(scale)
            calibrating = self._calibrated < self.calibration_batches
            step = self.act_step
            if step is not None and self.act_signed is not None:
                xd = x.detach()
                if calibrating:
                    self._signed = self._signed or bool(xd.min() < 0)  # a sync, while calibrating
                    best = mse_activation_step(xd, self.activation_bits, signed=self._signed)
                    n = self._calibrated  # running mean of the batches' MSE-optimal steps
                    step.copy_((step * n + best.to(step.dtype)) / (n + 1))
                    self.act_signed.fill_(self._signed)
                elif self.activation_bits > _LSQ_MAX_BITS:  # tracked, not learned (module doc)
                    best = mse_activation_step(xd, self.activation_bits, signed=self._signed)
                    step.lerp_(best.to(step.dtype), _TRACK_MOMENTUM)
            if calibrating:
                self._calibrated += 1
                self.calibrated_batches.fill_(self._calibrated)

    def _quantize_input(self, x: torch.Tensor) -> torch.Tensor:
        if self.act_step is None or self.act_signed is None:
            return x
        if self._calibrated == 0:  # never trained: the batch's own range
            xd = x.detach()
            return fake_quantize_activation(x, self.activation_bits, xd.min(), xd.max())
        if self._signed:
            qmax = _signed_qmax(self.activation_bits)
            qmin = -qmax
        else:
            qmin, qmax = 0.0, _unsigned_qmax(self.activation_bits)
        features = x[0].numel() if x.dim() > 0 else 1
        grad_scale = (features * qmax) ** -0.5  # LSQ: 1 / sqrt(N * qmax)
        step = self.act_step.to(x.dtype)
        if self.training and not torch.jit.is_scripting():
            return _LsqTraining.apply(x, step, qmin, qmax, grad_scale)
        return fake_quantize_lsq(x, step, qmin, qmax, grad_scale)

    def _quantized_weight(self) -> torch.Tensor:
        scale = self.weight_scale if self._calibrated > 0 else None
        return fake_quantize_weight(self.weight, self.weight_bits, scale)

    def _quantize(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The (input, weight) pair the layer's operation runs on."""
        if self.training and not torch.jit.is_scripting():  # scripted: inference only
            self._observe(x)
        return self._quantize_input(x), self._quantized_weight()

    @torch.jit.unused
    def _forward_float32(self, x: torch.Tensor) -> torch.Tensor:
        """The layer with autocast off: fake-quantized operands stay on their integer grid only
        in float32 (bfloat16 keeps 8 significant bits, so an 8-bit level times its step would
        round off the grid), so under a bf16 or fp16 autocast a quantized layer runs in float32."""
        if x.device.type not in ("cpu", "cuda") or not torch.is_autocast_enabled(x.device.type):
            return self._forward(x)  # no autocast (on ``meta`` it has no state to ask)
        with torch.autocast(x.device.type, enabled=False):
            return self._forward(x.float())

    def _quant_repr(self) -> str:
        return f"weight_bits={self.weight_bits}, activation_bits={self.activation_bits}"


class QuantConv2d(_QuantMixin, nn.Conv2d):
    """``nn.Conv2d`` with fake-quantized weights and input activations (see the module doc).

    A subclass of ``nn.Conv2d`` so ``isinstance`` checks, Torch-Pruning and cost counting still
    see a convolution; ``weight_bits`` and ``activation_bits`` (32 = float) are attributes.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> q = QuantConv2d.from_float(nn.Conv2d(1, 4, 3), weight_bits=8, activation_bits=32)
        >>> q.weight_bits, isinstance(q, nn.Conv2d), q.act_step is None
        (8, True, True)
    """

    def __init__(
        self,
        *args: Any,
        weight_bits: int = FLOAT_BITS,
        activation_bits: int = FLOAT_BITS,
        calibration_batches: int = 4,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._init_quant(weight_bits, activation_bits, calibration_batches)

    @classmethod
    def from_float(
        cls,
        conv: nn.Conv2d,
        *,
        weight_bits: int,
        activation_bits: int,
        calibration_batches: int = 4,
    ) -> QuantConv2d:
        """Wrap ``conv``, sharing its parameters (no copy, no re-initialisation)."""
        q = cls(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            stride=conv.stride,
            padding=conv.padding,
            dilation=conv.dilation,
            groups=conv.groups,
            bias=conv.bias is not None,
            padding_mode=conv.padding_mode,
            device="meta",  # parameters are replaced below: allocate nothing
            weight_bits=weight_bits,
            activation_bits=activation_bits,
            calibration_batches=calibration_batches,
        )
        q.weight = conv.weight
        q.bias = conv.bias
        q._reset_quant_state(conv.weight.device, conv.weight.dtype)
        q.train(conv.training)
        return q

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting():
            return self._forward(x)
        return self._forward_float32(x)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        x, w = self._quantize(x)
        return self._conv_forward(x, w, self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, {self._quant_repr()}"


class QuantLinear(_QuantMixin, nn.Linear):
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
        calibration_batches: int = 4,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(in_features, out_features, bias, device=device, dtype=dtype)
        self._init_quant(weight_bits, activation_bits, calibration_batches)

    @classmethod
    def from_float(
        cls,
        linear: nn.Linear,
        *,
        weight_bits: int,
        activation_bits: int,
        calibration_batches: int = 4,
    ) -> QuantLinear:
        """Wrap ``linear``, sharing its parameters (no copy, no re-initialisation)."""
        q = cls(
            linear.in_features,
            linear.out_features,
            linear.bias is not None,
            weight_bits=weight_bits,
            activation_bits=activation_bits,
            calibration_batches=calibration_batches,
            device="meta",
        )
        q.weight = linear.weight
        q.bias = linear.bias
        q._reset_quant_state(linear.weight.device, linear.weight.dtype)
        q.train(linear.training)
        return q

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting():
            return self._forward(x)
        return self._forward_float32(x)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        x, w = self._quantize(x)
        return F.linear(x, w, self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, {self._quant_repr()}"
