"""Fake quantizers: rounding to a bit-width's grid with straight-through gradients, and the
search for the clip of least squared error.

Each quantizer's forward value is exactly ``q``, a value of the grid (at most ``2**b`` levels at
``b`` bits), written as ``q + (x - x.detach())`` so that the backward pass sees the identity
(straight-through, Bengio et al. 2013). They are plain torch ops that branch only on the
bit-width, never on tensor values, so a model holding them exports (``torch.onnx.export``,
``torch.jit.trace``/``script``, ``torch.export``). A bit-width of 32 (:data:`FLOAT_BITS`)
means float: the input comes back unchanged.

Grids: weights symmetric narrow-range per output channel, ``-(2**(b-1) - 1) .. 2**(b-1) - 1``
(at 2 bits ternary, ``{-1, 0, 1}``), and at 1 bit binary, ``{-1, 1}`` (BinaryConnect, Courbariaux
et al. 2015) times the channel's mean ``|w|``, the scale of least squared error for a sign grid
(XNOR-Net, Rastegari et al. 2016); activations (2 bits and up) unsigned ``0 .. 2**b - 1`` or
symmetric like the weights. Steps and scales are in the input's units per level.

Example:
    >>> import torch
    >>> w = torch.tensor([[0.5, -1.0, 0.24]])
    >>> fake_quantize_weight(w, 2).tolist()  # levels {-1, 0, 1} * max|w|
    [[0.0, -1.0, 0.0]]
"""

from __future__ import annotations

from typing import Any

import torch

from autoprune.errors import ConfigError

__all__ = [
    "FLOAT_BITS",
    "MIN_WEIGHT_BITS",
    "check_bits",
    "fake_quantize_activation",
    "fake_quantize_lsq",
    "fake_quantize_weight",
    "mse_activation_step",
    "mse_weight_scale",
]

#: The bit-width that means "float, not quantized".
FLOAT_BITS = 32
_MIN_BITS = 2  # symmetric narrow-range grids need 2 ** (b - 1) - 1 >= 1
#: The narrowest weight bit-width: 1 bit is the binary grid, sign times a per-channel scale.
MIN_WEIGHT_BITS = 1
_MAX_BITS = 16
_EPS = 1e-12  # smallest scale: an all-zero tensor quantizes to zeros, not NaN

# MSE range search: a geometric grid of clips from max down to max / 2**_CLIP_OCTAVES (factor
# sqrt(2) apart), then a linear grid between the best one's neighbours: 21 + 17 candidates find
# the optimum to within the fine grid's spacing (~5 %), where the error curve is flat.
_CLIP_OCTAVES = 10
_COARSE_GRID = 21
_FINE_GRID = 16
_SEARCH_CHUNK = 1 << 18  # candidate x element products per block (1 MiB of float32)
_CALIBRATION_SAMPLES = 1 << 14  # activation values the MSE is estimated on, per batch
# Weight scales during training: the last step's x, 11 points in x/1.1 .. x*1.1, and max-abs.
_TRACK = 1.1
_TRACK_GRID = 11


def check_bits(bits: int, *, what: str, lowest: int = _MIN_BITS) -> int:
    """Validate a bit-width: an int in ``lowest``..16 (2 for activations, :data:`MIN_WEIGHT_BITS`
    for weights), or 32 (float).

    Raises:
        ConfigError: quoting the bad value and the allowed ones.

    Example:
        >>> check_bits(8, what="weight_bits")
        8
    """
    if isinstance(bits, bool) or not isinstance(bits, int):
        raise ConfigError(
            f"`{what}` must be an integer in {lowest}..{_MAX_BITS} or {FLOAT_BITS} (float), "
            f"but got {bits!r}"
        )
    if bits != FLOAT_BITS and not lowest <= bits <= _MAX_BITS:
        raise ConfigError(
            f"`{what}` must be in {lowest}..{_MAX_BITS} or {FLOAT_BITS} (float), but got "
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
        bits: Bit-width; levels ``-(2**(b-1) - 1) .. 2**(b-1) - 1``, at 1 bit ``{-1, 1}``
            (``w >= 0`` is ``+1``); 32 returns ``weight``.
        scale: Per-channel scale ``(C,)`` in weight units per level (e.g. from
            :func:`mse_weight_scale`); ``None`` means ``max|w_c| / (2**(b-1) - 1)``, at 1 bit
            ``mean|w_c|``.

    Example:
        >>> import torch
        >>> w = torch.tensor([[0.5, -1.0, 0.24], [2.0, 0.1, -0.3]])
        >>> fake_quantize_weight(w, 2).tolist()  # levels {-1, 0, 1} * max|w_c|
        [[0.0, -1.0, 0.0], [2.0, 0.0, 0.0]]
        >>> fake_quantize_weight(w, 2, torch.tensor([0.5, 0.25])).tolist()  # clipped
        [[0.5, -0.5, 0.0], [0.25, 0.0, -0.25]]
        >>> [round(v, 4) for v in fake_quantize_weight(w, 1)[0].tolist()]  # +-mean|w_c|
        [0.58, -0.58, 0.58]
    """
    # Literal 32 and 1e-12 (= FLOAT_BITS, _EPS): TorchScript cannot read module globals.
    if bits >= 32:
        return weight
    w = weight.detach()
    shape = [-1] + [1] * (w.dim() - 1)
    if bits == 1:
        if scale is None:
            s = w.abs().reshape(w.shape[0], -1).mean(dim=1).reshape(shape).clamp_min(1e-12)
        else:
            s = scale.detach().to(w.dtype).reshape(shape).clamp_min(1e-12)
        return torch.where(w >= 0, s, -s) + (weight - w)
    qmax = float(2 ** (bits - 1) - 1)
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

    Same values and gradients, in fewer passes over the activations than autograd makes through
    the straight-through graph. Evaluation and export use :func:`fake_quantize_lsq`, plain ops
    that every exporter reads.
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
    to levels ``0..qmax``. Works through blocks of rows, every candidate at once, so that the
    temporaries stay in cache however large the layer."""
    rows = max(1, _SEARCH_CHUNK // max(1, steps.shape[0] * mag.shape[1]))
    out = []
    for m, s in zip(mag.split(rows), steps.split(rows, dim=1), strict=True):
        s = s.unsqueeze(-1)
        q = torch.div(m, s).round_().clamp_max_(qmax).mul_(s).sub_(m)
        out.append(q.square_().sum(dim=-1))
    return torch.cat(out, dim=1)


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
    optimum this way. At 1 bit the optimum is closed-form: ``mean|w_c|``.

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
    if bits == 1:
        return mag.mean(dim=1).clamp_min(_EPS)
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
