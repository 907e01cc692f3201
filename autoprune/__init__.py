"""autoprune: hardware-aware AutoML search for CNN compression.

A controller proposes per-layer widths, per-stage depth, input resolution and per-layer
bit-widths for a base CNN; each candidate is built as a physically smaller network, trained from
scratch, costed on a target device, and kept on a Pareto front of accuracy vs latency vs energy
under hard budgets. "FLOPs" means multiply-accumulates throughout (torchvision's convention:
ResNet-50 at 224x224 = 4.09 GFLOPs).
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]
