"""Fake quantization for bit-width search (quantization-aware training from scratch).

Every quantizer is straight-through (Bengio et al. 2013): the forward pass sees the quantized
value, the backward pass (mostly) the identity. The quantized value is written as
``q + (x - x.detach())`` (or rounded in the integer domain as ``r.detach() + (v - v.detach())``),
whose forward value is *exactly* ``q``: a tensor quantized at ``b`` bits holds at most its
``2**b`` grid values, bit for bit. Evaluation uses only plain torch ops, and no Python branch
depends on tensor values (only on the bit-widths, ``self.training`` and host-side copies of
the calibration count and sign, set by calibration and by ``load_state_dict``, all fixed while
a model is exported), so a model holding these layers exports with ``torch.onnx.export``,
``torch.jit.trace``, ``torch.jit.script`` (inference) and ``torch.export``. Training uses an
``autograd.Function`` with the same values and gradients and a cheaper backward.

* **Activations**, quantized at the layer *input*: LSQ, *Learned Step Size Quantization*
  (Esser et al., ICLR 2020). The step size ``s`` (parameter ``act_step``, in input units per
  level) is learned by SGD with the rest of the network, through the LSQ gradient
  ``d x_q / d s = round(x/s) - x/s`` inside the range and ``qmin``/``qmax`` outside it,
  scaled by ``g = 1 / sqrt(N * qmax)`` (``N`` features per example); inputs outside the
  range get no gradient. ``s`` is initialised by calibration on the first
  ``calibration_batches`` training batches (default 4, their mean): the step that minimises
  the mean squared quantization error of each batch, searched over clips from the batch's
  ``max|x|`` down to ``max|x| / 1024`` (a geometric grid, then a fine one around the best),
  as LSQ+ does (Bhalgat et al., CVPR-W 2020; MSE range setting in Nagel et al., *A White
  Paper on Neural Network Quantization*, 2021). The raw ``max|x|`` is what one outlier ruins
  at 4 bits: with a value at 30x the typical magnitude, the step is 2-4x that magnitude and
  the bulk of the values rounds to level 0 or 1.
  The levels are unsigned ``[0, 2**b - 1]`` when every calibration input was ``>= 0``
  (inputs after a ReLU), symmetric ``[-(2**(b-1) - 1), 2**(b-1) - 1]`` otherwise
  (buffer ``act_signed``). Before any calibration (a model that was never trained) an
  evaluation pass uses the batch's own min/max.
  The step is learned at 2-8 bits, the widths LSQ was designed and measured for. Above 8
  bits it follows the activations instead, as batch norm's running statistics do: after
  calibration, every training batch moves it a tenth of the way to that batch's MSE-optimal
  step (``act_step.requires_grad`` is False). LSQ's gradient of a clipped input is ``qmax``,
  scaled down only by ``1 / sqrt(qmax)``, so relative to the step (``~ range / qmax``) it
  grows as ``qmax ** 1.5``: at 16 bits one SGD step at lr 0.1 drove a resnet20's conv1
  input step from 6.7e-5 to -0.027, and the network never learned again (measured in a
  default run). At 16 bits rounding costs 2**-16 of the range; what matters is that the
  clip keeps up with activations that grow in training.
* **Weights**: symmetric, per output channel, narrow range ``[-(2**(b-1) - 1), 2**(b-1) - 1]``
  (at most ``2**b - 1`` levels per channel). The scale of each channel (buffer
  ``weight_scale``, weight units per level) is the MSE-optimal clip, searched like the
  activation step at the first training step, then searched again at *every training step*
  within a factor 1.1 of the previous one (or back at max-abs): weights trained from scratch
  move far from their initialisation, so a clip calibrated once goes stale, while tracking it
  costs 13 elementwise passes over the weights (small next to the convolution over a batch).
  Clipping matters most at 2-3 bits: the max-abs scale turns a Gaussian channel of
  ``3 * 3 * 64`` weights into ternary levels with threshold ``max/2 ~ 1.6 sigma``, zeroing
  ~90 % of them, while the MSE-optimal ternary (the TWN threshold, Li et al. 2016) keeps about
  half. Evaluation uses the scale of the last training step (frozen, like batch-norm
  statistics); a never-trained layer uses ``max|w_c| / (2**(b-1) - 1)``.

A bit-width of 32 means float: no fake quantization and no quantizer state for that tensor.
Quantizer state is in the ``state_dict`` (``act_step``, ``act_signed``, ``weight_scale``,
``calibrated_batches``); ``act_step`` is an ``nn.Parameter``, so the optimizer learns it at
2-8 bits (the trainer exempts it from weight decay) and :func:`count_costs` counts it as one
float32 parameter per layer.

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

__all__ = [
    "FLOAT_BITS",
    "QuantConv2d",
    "QuantLinear",
    "check_bits",
    "fake_quantize_activation",
    "fake_quantize_lsq",
    "fake_quantize_weight",
    "mse_activation_step",
    "mse_weight_scale",
]

#: The bit-width that means "float, not quantized".
FLOAT_BITS = 32
_MIN_BITS = 2  # symmetric narrow-range weights need 2 ** (b - 1) - 1 >= 1
_MAX_BITS = 16
_EPS = 1e-12  # smallest scale: an all-zero tensor quantizes to zeros, not NaN
_LSQ_MAX_BITS = 8  # activation steps are learned up to this width, tracked above it
_TRACK_MOMENTUM = 0.1  # share of a batch's MSE-optimal step in a tracked step (batch norm's)

# MSE range search: a geometric grid of clips from max down to max / 2**_CLIP_OCTAVES (factor
# sqrt(2) apart), then a linear grid between the best one's neighbours: 21 + 17 candidates find
# the optimum to ~5 %, where the MSE curve is flat.
_CLIP_OCTAVES = 10
_COARSE_GRID = 21
_FINE_GRID = 16
_SEARCH_CHUNK = 1 << 22  # candidate x element products per pass (16 MiB of float32)
_CALIBRATION_SAMPLES = 1 << 14  # activation values the MSE is estimated on, per batch
# Weight scales during training: the last step's x, 11 points in x/1.1 .. x*1.1, and max-abs.
_TRACK = 1.1
_TRACK_GRID = 11


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


def _signed_qmax(bits: int) -> float:
    return float(2 ** (bits - 1) - 1)


def _unsigned_qmax(bits: int) -> float:
    return float(2**bits - 1)


def fake_quantize_weight(
    weight: torch.Tensor, bits: int, scale: torch.Tensor | None = None
) -> torch.Tensor:
    """Symmetric per-output-channel (dim 0) fake quantization with a straight-through gradient.

    The gradient is the identity, for clipped weights too: the clip is re-searched every
    training step, so a weight beyond it stays trainable and may come back inside.

    Args:
        weight: Weights, output channels first.
        bits: Bit-width; levels ``-(2**(b-1) - 1) .. 2**(b-1) - 1``; 32 returns ``weight``.
        scale: Per-channel scale ``(C,)`` in weight units per level (e.g. from
            :func:`mse_weight_scale`); ``None`` means ``max|w_c| / (2**(b-1) - 1)``.

    Example:
        >>> import torch
        >>> w = torch.tensor([[0.5, -1.0, 0.24], [2.0, 0.1, -0.3]])
        >>> fake_quantize_weight(w, 2).tolist()  # levels {-1, 0, 1} * max|w_c|
        [[0.0, -1.0, 0.0], [2.0, 0.0, 0.0]]
        >>> fake_quantize_weight(w, 2, torch.tensor([0.5, 0.25])).tolist()  # clipped
        [[0.5, -0.5, 0.0], [0.25, 0.0, -0.25]]
    """
    # Literal 32 and 1e-12 (= FLOAT_BITS, _EPS): TorchScript cannot read module globals.
    if bits >= 32:
        return weight
    qmax = float(2 ** (bits - 1) - 1)
    w = weight.detach()
    shape = [-1] + [1] * (w.dim() - 1)
    if scale is None:
        absmax = w.abs()
        if w.dim() > 1:
            absmax = absmax.flatten(1).amax(dim=1)
        s = absmax.reshape(shape).clamp_min(1e-12) / qmax
    else:
        s = scale.detach().to(w.dtype).reshape(shape).clamp_min(1e-12)
    q = torch.clamp(torch.round(w / s), -qmax, qmax) * s
    return q + (weight - w)  # value exactly q, gradient the identity


def fake_quantize_activation(
    x: torch.Tensor, bits: int, lo: torch.Tensor, hi: torch.Tensor
) -> torch.Tensor:
    """Fake-quantize ``x`` over the fixed range ``[lo, hi]`` (0-dim tensors) at ``bits`` bits.

    Unsigned levels ``0 .. 2**b - 1`` over ``[0, hi]`` if ``lo >= 0``, symmetric signed levels
    over ``[-m, m]`` (``m = max(|lo|, |hi|)``) otherwise; identity gradient. This is the
    raw min/max quantizer a layer uses before it has been calibrated.

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
    return q + (x - xd)


def fake_quantize_lsq(
    x: torch.Tensor, step: torch.Tensor, qmin: float, qmax: float, grad_scale: float = 1.0
) -> torch.Tensor:
    """LSQ fake quantization (Esser et al., ICLR 2020): ``round(clamp(x / s, qmin, qmax)) * s``.

    Gradients: to ``x`` the identity inside ``[qmin * s, qmax * s]`` and zero outside; to the
    step ``s`` (a 0-dim tensor, in ``x`` units per level) ``grad_scale * (round(x/s) - x/s)``
    inside and ``grad_scale * qmin`` / ``grad_scale * qmax`` outside, per element.

    Example:
        >>> import torch
        >>> x = torch.tensor([-0.3, 0.26, 0.9, 5.0])
        >>> s = torch.tensor(0.25, requires_grad=True)
        >>> q = fake_quantize_lsq(x, s, 0.0, 3.0)
        >>> q.tolist()  # levels 0 (clipped up), 1, 3 (clipped down), 3 (clipped down)
        [0.0, 0.25, 0.75, 0.75]
        >>> q.sum().backward(); round(float(s.grad), 2)  # 0 + (1 - 1.04) + 3 + 3
        5.96
    """
    sg = step * grad_scale  # value exactly ``step``, gradient ``grad_scale`` times the incoming
    s = (step.detach() + (sg - sg.detach())).clamp_min(1e-12)
    v = torch.clamp(x / s, qmin, qmax)
    r = v.detach().round() + (v - v.detach())  # value an exact integer, gradient the identity
    return r * s


class _LsqTraining(torch.autograd.Function):
    """:func:`fake_quantize_lsq` with a hand-written backward, for training.

    Same values and gradients, in about half the passes over the activations that autograd
    makes through the straight-through graph (which dominates a thin network's step on a CPU).
    Evaluation and export use :func:`fake_quantize_lsq`, plain ops that every exporter reads.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: torch.Tensor, step: torch.Tensor, qmin: float, qmax: float, grad_scale: float
    ) -> torch.Tensor:
        s = step.clamp_min(_EPS)
        v = x / s
        r = v.clamp(qmin, qmax)
        inside = r == v
        r.round_()
        ctx.save_for_backward(v, r, inside, step)
        ctx.grad_scale = grad_scale
        return r * s

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        v, r, inside, step = ctx.saved_tensors
        grad_x = torch.where(inside, grad, 0.0) if ctx.needs_input_grad[0] else None
        grad_step = None
        if ctx.needs_input_grad[1]:
            # d(r * s)/ds = r - v inside the range (r = round(v)), r = qmin / qmax outside.
            d = (grad * (r - torch.where(inside, v, 0.0))).sum() * ctx.grad_scale
            grad_step = torch.where(step >= _EPS, d, 0.0).to(step.dtype).reshape(step.shape)
        return grad_x, grad_step, None, None, None


def _errors(mag: torch.Tensor, steps: torch.Tensor, qmax: torch.Tensor | float) -> torch.Tensor:
    """Sum of squared errors ``(G, R)`` of quantizing magnitudes ``mag (R, K)`` at ``steps (G, R)``
    to levels ``0..qmax``."""
    chunk = max(1, _SEARCH_CHUNK // max(1, mag.numel()))
    out = []
    for part in steps.split(chunk):
        s = part.unsqueeze(-1)
        q = torch.round(mag / s).clamp_max(qmax) * s
        out.append((q - mag).square().sum(dim=-1))
    return torch.cat(out)


def _best(mag: torch.Tensor, steps: torch.Tensor, qmax: torch.Tensor | float) -> torch.Tensor:
    index = _errors(mag, steps, qmax).argmin(dim=0, keepdim=True)
    return steps.gather(0, index).squeeze(0)


def _search_step(mag: torch.Tensor, top: torch.Tensor, qmax: torch.Tensor | float) -> torch.Tensor:
    """MSE-optimal steps ``(R,)`` for magnitudes ``mag (R, K) >= 0`` whose maxima are ``top``."""
    base = (top / qmax).clamp_min(_EPS)  # the max-abs step
    kw: dict[str, Any] = {"device": mag.device, "dtype": mag.dtype}
    coarse = 2.0 ** torch.linspace(-_CLIP_OCTAVES, 0.0, _COARSE_GRID, **kw)
    best = _best(mag, base.unsqueeze(0) * coarse.unsqueeze(1), qmax)
    ratio = 2.0 ** (_CLIP_OCTAVES / (_COARSE_GRID - 1))  # between neighbours of the coarse grid
    fine = torch.cat([torch.ones(1, **kw), torch.linspace(1 / ratio, ratio, _FINE_GRID, **kw)])
    return _best(mag, best.unsqueeze(0) * fine.unsqueeze(1), qmax)


@torch.no_grad()
def mse_weight_scale(
    weight: torch.Tensor, bits: int, *, near: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-output-channel scale ``(C,)`` that minimises the weights' quantization MSE.

    Searched over clips ``max|w_c| * 2**-10 .. max|w_c|`` for the narrow symmetric levels of
    :func:`fake_quantize_weight` (38 elementwise passes over the weights). With
    ``near``, a previous scale ``(C,)``, only ``near / 1.1 .. near * 1.1`` and the max-abs
    scale are searched (13 passes): one SGD step moves weights little, so training tracks the
    optimum this way.

    Example:
        >>> import torch
        >>> _ = torch.manual_seed(0)
        >>> w = torch.randn(4, 576)
        >>> def mse(s): return float((fake_quantize_weight(w, 2, s) - w).square().mean())
        >>> round(mse(None), 2), round(mse(mse_weight_scale(w, 2)), 2)  # max-abs vs MSE clip
        (0.76, 0.2)
    """
    w = weight.detach()
    mag = w.abs().reshape(w.shape[0], -1)
    qmax = _signed_qmax(bits)
    if near is None:
        return _search_step(mag, mag.amax(dim=1), qmax)
    kw: dict[str, Any] = {"device": mag.device, "dtype": mag.dtype}
    window = torch.cat([torch.ones(1, **kw), torch.linspace(1 / _TRACK, _TRACK, _TRACK_GRID, **kw)])
    steps = near.to(mag.dtype).clamp_min(_EPS).unsqueeze(0) * window.unsqueeze(1)
    max_abs = (mag.amax(dim=1) / qmax).clamp_min(_EPS)  # always a candidate: no channel gets stuck
    return _best(mag, torch.cat([steps, max_abs.unsqueeze(0)]), qmax)


@torch.no_grad()
def mse_activation_step(x: torch.Tensor, bits: int, *, signed: bool) -> torch.Tensor:
    """The step (0-dim tensor, ``x`` units per level) that minimises ``x``'s quantization MSE.

    Levels are ``0 .. 2**b - 1`` if not ``signed``, else ``-(2**(b-1) - 1) .. 2**(b-1) - 1``.
    The clip is searched relative to ``max|x|`` over the whole tensor; the error is measured
    on at most 16,384 of its values (a fixed pseudo-random subset; the global RNG is left
    alone). An all-zero ``x`` gives a step of 1.

    Example:
        >>> import torch
        >>> _ = torch.manual_seed(0)
        >>> x = torch.randn(10_000); x[:5] = 20.0  # outliers
        >>> round(float(mse_activation_step(x, 4, signed=True)), 2)  # raw max: 20 / 7 = 2.86
        0.64
    """
    flat = x.detach().reshape(-1)
    top = flat.abs().amax()
    if flat.numel() > _CALIBRATION_SAMPLES:
        generator = torch.Generator().manual_seed(0)
        index = torch.randint(flat.numel(), (_CALIBRATION_SAMPLES,), generator=generator)
        flat = flat[index.to(flat.device)]
    qmax = _signed_qmax(bits) if signed else _unsigned_qmax(bits)
    step = _search_step(flat.abs().unsqueeze(0), top.reshape(1), qmax).squeeze(0)
    return torch.where(top > 0, step, torch.ones_like(step))


class _QuantMixin(nn.Module):
    """Quantizer state and logic shared by :class:`QuantConv2d` and :class:`QuantLinear`.

    (No class-level annotations: TorchScript would read them, as unresolvable strings.)
    """

    def _init_quant(self, weight_bits: int, activation_bits: int, calibration_batches: int) -> None:
        self.weight_bits = check_bits(weight_bits, what="weight_bits")
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
        x, w = self._quantize(x)
        return F.linear(x, w, self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, {self._quant_repr()}"
