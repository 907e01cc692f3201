"""Zero-cost proxies: scores of an untrained network that rank candidates in milliseconds.

* :func:`synflow` (Tanaka et al., NeurIPS 2020; as a NAS proxy, Abdelfattah et al., ICLR 2021):
  the sum over parameters of ``|theta * dR/dtheta|`` where ``R`` is the network's summed output
  for an all-ones input after every parameter is replaced by its absolute value. Data-free; it
  grows with the number and the connectivity of the paths through the network. Computed in
  float64 (the product over layers overflows float32 for deep nets); reported as ``log``.
* :func:`naswot` (Mellor et al., ICML 2021): for a batch of inputs, the binary ReLU activation
  pattern of each input; the score is ``log |det K|`` of the kernel ``K[i, j]`` = number of
  units on which inputs ``i`` and ``j`` agree. Networks that separate inputs well at
  initialisation train well.

Both evaluate the network in eval mode (batch norm at its initial statistics, an affine
identity) and leave its parameters as they were. The ``proxy`` evaluator finds them by name in
a registry (:func:`register_proxy`, :func:`list_proxies`); a new proxy is one decorated
function ``(model, inputs: ProxyInputs) -> float``, higher meaning better.

Example:
    >>> from torch import nn
    >>> _ = torch.manual_seed(0)
    >>> narrow = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(144, 10))
    >>> wide = nn.Sequential(nn.Conv2d(1, 16, 3), nn.ReLU(), nn.Flatten(), nn.Linear(576, 10))
    >>> log_synflow(narrow, (1, 8, 8)) < log_synflow(wide, (1, 8, 8))
    True
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from autoprune.errors import UnknownNameError

__all__ = [
    "ProxyInputs",
    "ProxyScore",
    "list_proxies",
    "log_synflow",
    "naswot",
    "proxy_score",
    "register_proxy",
]


@dataclass(frozen=True)
class ProxyInputs:
    """What a proxy may look at: the input shape ``(C, H, W)`` it scores at, and ``batch()``,
    a batch of normalised training images at that shape (loaded only if a proxy asks)."""

    shape: tuple[int, int, int]
    batch: Callable[[], torch.Tensor]


#: A proxy: ``(untrained model, inputs) -> score`` (higher is better; ``-inf`` for degenerate).
ProxyScore = Callable[[nn.Module, ProxyInputs], float]
_PROXIES: dict[str, ProxyScore] = {}


def register_proxy(name: str) -> Callable[[ProxyScore], ProxyScore]:
    """Register a proxy under ``name`` (the value of the ``proxy`` evaluator's ``proxy`` key)."""

    def decorator(score: ProxyScore) -> ProxyScore:
        known = _PROXIES.get(name)
        assert known is None or known.__qualname__ == score.__qualname__, (
            f"proxy {name!r} registered twice"
        )
        _PROXIES[name] = score
        return score

    return decorator


def list_proxies() -> list[str]:
    """Names of the registered proxies, sorted."""
    return sorted(_PROXIES)


def proxy_score(name: str) -> ProxyScore:
    """The proxy registered as ``name``; an unknown name lists the valid ones."""
    if name not in _PROXIES:
        raise UnknownNameError("proxy", name, list_proxies())
    return _PROXIES[name]


def log_synflow(model: nn.Module, input_shape: tuple[int, int, int]) -> float:
    """Natural log of the synflow score of ``model`` (untrained) for inputs of ``(C, H, W)``.

    Returns ``-inf`` when every path is dead (score 0). The model is restored afterwards
    (parameters, dtype, train/eval mode).
    """
    was_training = model.training
    state = {k: v.clone() for k, v in model.state_dict().items()}
    dtype = next((p.dtype for p in model.parameters()), torch.float32)
    try:
        model.eval()
        model.double()
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.abs_()
        model.zero_grad(set_to_none=True)
        output = model(torch.ones((1, *input_shape), dtype=torch.float64))
        output.sum().backward()
        score = sum(
            float((p.detach() * p.grad).abs().sum())
            for p in model.parameters()
            if p.grad is not None
        )
    finally:
        model.zero_grad(set_to_none=True)
        model.to(dtype)
        model.load_state_dict(state)
        model.train(was_training)
    return math.log(score) if score > 0 else -math.inf


def naswot(model: nn.Module, inputs: torch.Tensor) -> float:
    """NASWOT score (``log |det K|``, natural log) of ``model`` on a batch ``inputs`` (N, C, H, W).

    Every ``nn.ReLU`` (and ``ReLU6``) output contributes its units' on/off pattern. Returns
    ``-inf`` when ``K`` is singular (two inputs with identical patterns everywhere).
    """
    codes: list[torch.Tensor] = []

    def record(_module: nn.Module, _inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        codes.append((out.detach().flatten(1) > 0).to(torch.float64))

    relus = [m for m in model.modules() if isinstance(m, nn.ReLU | nn.ReLU6)]
    hooks = [m.register_forward_hook(record) for m in relus]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(inputs)
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    if not codes:
        raise ValueError("naswot needs ReLU activations, but the model has no nn.ReLU modules")
    pattern = torch.cat(codes, dim=1)
    kernel = pattern @ pattern.T + (1 - pattern) @ (1 - pattern).T
    sign, logdet = torch.linalg.slogdet(kernel)
    return float(logdet) if float(sign) != 0 else -math.inf


@register_proxy("log_synflow")
def _log_synflow(model: nn.Module, inputs: ProxyInputs) -> float:
    """Synflow (Tanaka et al. 2020), data-free, as a natural log."""
    return log_synflow(model, inputs.shape)


@register_proxy("naswot")
def _naswot(model: nn.Module, inputs: ProxyInputs) -> float:
    """NASWOT (Mellor et al. 2021) on a batch of training images."""
    return naswot(model, inputs.batch())
