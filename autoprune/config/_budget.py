"""Budgets: ``<number><unit>`` strings parsed once, at the boundary, into :class:`Budget` records.

"FLOPs" means multiply-accumulates throughout (torchvision's convention: ResNet-50 at 224x224 =
4.09 GFLOPs); a budget's ``metric`` carries its unit in its name (``macs``, ``latency_ms``,
``energy_mj``, ``size_bytes``, ``params``).

Example:
    >>> parse_budget("2GFLOPs")
    Budget(metric='macs', limit=2000000000.0, spec='2gflops')
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from autoprune.errors import ConfigError

__all__ = ["BUDGET_UNITS", "Budget", "parse_budget"]

#: Budget unit -> (metric, multiplier to the metric's unit). "FLOPs" are multiply-accumulates,
#: the convention of torchvision's weight metadata (ResNet-50 at 224x224 = 4.09 GFLOPs).
BUDGET_UNITS: dict[str, tuple[str, float]] = {
    "gflops": ("macs", 1e9),
    "mflops": ("macs", 1e6),
    "ms": ("latency_ms", 1.0),
    "us": ("latency_ms", 1e-3),
    "mj": ("energy_mj", 1.0),
    "uj": ("energy_mj", 1e-3),
    "mb": ("size_bytes", 1e6),
    "kb": ("size_bytes", 1e3),
    "mparams": ("params", 1e6),
    "kparams": ("params", 1e3),
}

_BUDGET_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([a-z]+)\s*$")


@dataclass(frozen=True)
class Budget:
    """A hard constraint on one cost of a candidate, in the metric's own unit.

    ``metric`` is one of ``macs``, ``latency_ms``, ``energy_mj``, ``size_bytes``, ``params``;
    ``limit`` is in that unit (a ``2gflops`` budget has ``limit=2e9`` MACs); ``spec`` is the
    normalised string the user gave.
    """

    metric: str
    limit: float
    spec: str

    def violation(self, value: float) -> float:
        """Relative excess over the limit: ``<= 0`` when the budget holds (Optuna's convention)."""
        return (value - self.limit) / self.limit

    def describe(self, value: float | None = None) -> str:
        """Human form of the limit, or of ``value`` in the budget's unit (``"0.041 GFLOPs"``)."""
        number = self.limit if value is None else value
        unit = self.spec.lstrip("0123456789.e+-")
        _, scale = BUDGET_UNITS[unit]
        pretty = {
            "gflops": "GFLOPs",
            "mflops": "MFLOPs",
            "mparams": "M params",
            "kparams": "k params",
            "mb": "MB",
            "kb": "kB",
            "mj": "mJ",
            "uj": "uJ",
            "ms": "ms",
            "us": "us",
        }[unit]
        return f"{number / scale:.4g} {pretty}"


def parse_budget(spec: str) -> Budget:
    """Parse ``<number><unit>`` (case-insensitive) into a :class:`Budget`.

    Units: ``gflops|mflops`` (multiply-accumulates), ``ms|us`` (latency on the target),
    ``mj|uj`` (energy per inference), ``mb|kb`` (model size at the chosen bit-widths),
    ``mparams|kparams``.

    Example:
        >>> parse_budget("15ms").limit
        15.0
    """
    text = str(spec).strip().lower()
    match = _BUDGET_RE.match(text)
    allowed = "|".join(BUDGET_UNITS)
    if text.startswith("-"):
        raise ConfigError(
            f"budget {spec!r} is negative; a budget is a positive <number><unit>, "
            f"e.g. 2gflops or 15ms (units: {allowed})"
        )
    if match is None:
        raise ConfigError(
            f"budget {spec!r} is not <number><unit>; write e.g. 2gflops, 15ms, "
            f"5mj, 4mb or 1.5mparams (units: {allowed})"
        )
    number, unit = float(match.group(1)), match.group(2)
    if unit not in BUDGET_UNITS:
        raise ConfigError(f"budget {spec!r} has unknown unit {unit!r}; allowed units: {allowed}")
    metric, scale = BUDGET_UNITS[unit]
    if not math.isfinite(number * scale) or number <= 0:  # 1e303mparams overflows to inf
        raise ConfigError(f"budget {spec!r} must be a positive finite number, e.g. 2gflops or 15ms")
    return Budget(metric=metric, limit=number * scale, spec=f"{match.group(1)}{unit}")
