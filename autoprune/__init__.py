"""autoprune: hardware-aware AutoML search for CNN compression.

A controller proposes per-layer widths, per-stage depth, input resolution and per-layer
bit-widths for a base CNN; each candidate is built as a physically smaller network, trained from
scratch, costed on a target device, and kept on a Pareto front of accuracy vs latency vs energy
under hard budgets. "FLOPs" means multiply-accumulates throughout (torchvision's convention:
ResNet-50 at 224x224 = 4.09 GFLOPs).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Run", "__version__", "open_run", "search"]

if TYPE_CHECKING:
    from autoprune.api import Run, open_run
    from autoprune.api import search as search


def __getattr__(name: str) -> Any:
    """The Python API (:mod:`autoprune.api`), imported on first use: ``import autoprune`` stays
    cheap for the CLI, which imports torch and Optuna only for the commands that need them."""
    if name == "search":  # the subpackage, which called is the API's search
        return importlib.import_module("autoprune.search")
    if name in ("Run", "open_run"):
        return getattr(importlib.import_module("autoprune.api"), name)
    raise AttributeError(f"module 'autoprune' has no attribute {name!r}")
