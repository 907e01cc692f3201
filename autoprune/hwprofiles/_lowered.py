"""The estimate a search uses: a model lowered through TVM, then a roofline per fused kernel.

:func:`estimate_with_tvm` is the glue between a candidate and :mod:`._kernels`: it builds the
candidate's float architecture, lowers it through TVM's fusion passes (:func:`fused_kernels`),
gives every fused kernel the bit-widths of the layer it computes, and estimates with
:func:`estimate_from_kernels`. The kernel list is cached per architecture, input shape and TVM
and package versions, in the run's folder and in :func:`default_kernel_cache` (kept between
runs), so a repeated architecture costs one file read, in this run or any later one.

Fake-quantized layers have no TVM importer (:mod:`._costing`), so the float architecture is
lowered and the candidate's bit-widths are put back per kernel: the k-th kernel with MACs is
matched to the first unmatched conv/linear layer with the same MAC count (in execution order);
kernels without MACs (pooling, a standalone add) take the activation width of the kernel before
them. A model TVM cannot import falls back to the per-layer estimate, and its ``method`` says so.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from torch import nn

from autoprune._files import write_atomic
from autoprune.hwprofiles._cache import cache_path, cache_root, package_version
from autoprune.hwprofiles._estimate import HardwareEstimate, estimate_hardware
from autoprune.hwprofiles._kernels import KernelCost, estimate_from_kernels, fused_kernels
from autoprune.hwprofiles._profile import DeviceProfile
from autoprune.hwprofiles._relax import export_program, translate
from autoprune.hwprofiles._workers import ModelLike, fingerprint
from autoprune.spaces import Candidate, LayerCost, build_model, cost_report, count_costs

__all__ = ["default_kernel_cache", "estimate_with_tvm", "kernel_bits"]

_logger = logging.getLogger("autoprune.hwprofiles.lowered")

#: Bump when :func:`fused_kernels` changes what it counts: cached kernel lists become misses.
KERNELS_FORMAT = 4


def kernel_bits(
    kernels: Sequence[KernelCost], layers: Sequence[LayerCost]
) -> list[tuple[int, int]] | None:
    """``(weight_bits, activation_bits)`` per kernel, from the layers the kernels compute.

    Returns ``None`` when some kernel with MACs matches no layer (see the module docstring).

    Example:
        >>> k = [KernelCost("fused_conv2d_relu", 10, 5, 4, 4, 4, "float32"),
        ...      KernelCost("max_pool2d", 4, 0, 4, 1, 0, "float32")]
        >>> layers = [LayerCost("conv", "conv2d", 5, 1, 8, 4, 1, 1, 1)]
        >>> kernel_bits(k, layers)
        [(8, 4), (4, 4)]
    """
    unmatched = [layer for layer in layers if layer.macs > 0 and layer.weight_elements > 0]
    bits: list[tuple[int, int]] = []
    current = (32, 32)
    for kernel in kernels:
        if kernel.macs > 0:
            layer = next((c for c in unmatched if c.macs == kernel.macs), None)
            if layer is None:
                return None
            unmatched.remove(layer)
            current = (layer.weight_bits, layer.activation_bits)
            bits.append(current)
        else:
            bits.append((current[1], current[1]))
    return bits


def default_kernel_cache() -> Path:
    """``$XDG_CACHE_HOME/autoprune/kernels`` (``~/.cache`` when unset): lowered kernel lists
    kept between runs and commands (searches and ``autoprune calibrate`` share it). Safe to
    delete; nothing is created here."""
    return cache_root() / "kernels"


def _read_kernels(path: Path, key: dict[str, object]) -> list[KernelCost] | None:
    """The kernel list cached at ``path`` under ``key``; ``None`` for a miss or a bad file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data["key"] == key:
            return [KernelCost.from_dict(k) for k in data["kernels"]]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        _logger.warning("ignoring unreadable kernel cache file %s (%s)", path, exc)
    return None


def _write_kernels(path: Path, key: dict[str, object], kernels: list[KernelCost]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"key": key, "kernels": [k.to_dict() for k in kernels]}
    write_atomic(path, json.dumps(payload) + "\n")


def _cached_kernels(
    float_model: ModelLike,
    module: nn.Module,
    input_shape: tuple[int, int, int],
    cache_dir: str | os.PathLike[str] | None,
    shared_dir: str | os.PathLike[str] | None = None,
) -> list[KernelCost]:
    """The model's fused kernels: from ``cache_dir``, else from ``shared_dir`` (copied into
    ``cache_dir``), else lowered and written to both. A shared folder that cannot be written
    is skipped with a warning: the run's own cache is enough for the run."""
    key = {
        "backend": "kernels",  # the file's prefix (cache_path)
        "model": fingerprint(float_model),
        "input_shape": list(input_shape),
        "tvm": package_version("apache-tvm"),
        "torch": package_version("torch"),
        "format": KERNELS_FORMAT,
    }
    own = cache_path(cache_dir, key) if cache_dir is not None else None
    kernels = _read_kernels(own, key) if own is not None else None
    if kernels is not None:
        return kernels
    shared = cache_path(shared_dir, key) if shared_dir is not None else None
    kernels = _read_kernels(shared, key) if shared is not None else None
    if kernels is None:
        kernels = lowered_kernels(module, input_shape)
        if shared is not None:
            try:
                _write_kernels(shared, key, kernels)
            except OSError as exc:
                _logger.warning("cannot keep the kernel list in %s (%s)", shared.parent, exc)
    if own is not None:
        _write_kernels(own, key, kernels)
    return kernels


def lowered_kernels(module: nn.Module, input_shape: tuple[int, int, int]) -> list[KernelCost]:
    """``module``'s fused kernels at batch 1, imported without PyTorch's decompositions.

    The decompositions are most of an import's time (``benchmarks/kernel_import.py``).
    Without them the CNNs of the zoo give the same kernels, with the same costs; names differ
    (``adaptive_avg_pool2d`` for ``mean``), and hard-swish and GELU fuse into fewer elementwise
    ops (``docs/tvm.md``). A model that TVM cannot translate so is translated with them, from
    the same exported program (exported once).

    Raises:
        Exception: whatever the export, or the translation with decompositions, raises.
    """
    exported = export_program(module, input_shape)
    try:
        return fused_kernels(translate(exported, decompose=False))
    except Exception as exc:  # noqa: BLE001 - an op TVM translates only once decomposed
        _logger.debug("importing without decompositions failed (%s); decomposing", exc)
    return fused_kernels(translate(exported, decompose=True))


def estimate_with_tvm(
    model: ModelLike,
    input_shape: tuple[int, int, int],
    profile: DeviceProfile,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    shared_cache_dir: str | os.PathLike[str] | None = None,
    precision: str = "fp32",
) -> HardwareEstimate:
    """Batch-1 latency (ms) and energy (mJ) of ``model`` on ``profile``, per fused TVM kernel.

    Args:
        model: a :class:`Candidate` (its bit-widths are honoured per kernel) or a float
            ``nn.Module``.
        input_shape: ``(C, H, W)`` of one input, pixels.
        profile: the target device.
        cache_dir: folder for the kernel lists (e.g. ``<run_dir>/hw-cache``); ``None``: none.
        shared_cache_dir: a folder of kernel lists kept between runs (a search's is
            :func:`default_kernel_cache`), read when ``cache_dir`` misses and written on each
            lowering; ``None``: none.
        precision: ``fp32``, ``fp16`` or ``int8`` for a float module (a candidate's bit-widths
            decide its own); a precision the profile lacks runs at the narrowest native one
            that covers it (int8 on the Nano runs at fp16).

    Example:
        >>> from autoprune.hwprofiles import load_profile
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        >>> estimate_with_tvm(net, (3, 8, 8), load_profile("jetson")).method
        'per fused TVM kernel (1 kernels) over profile jetson-orin-nano'
    """
    if isinstance(model, Candidate):
        costs = (
            cost_report(model)
            if tuple(input_shape) == model.input_shape
            else count_costs(build_model(model, device="meta"), input_shape)
        )
        float_model: ModelLike = dataclasses.replace(model, weight_bits=(), activation_bits=())
        module = build_model(float_model, seed=0)
    else:
        costs = count_costs(model, input_shape)
        float_model = module = model
    try:
        kernels = _cached_kernels(
            float_model, module.eval(), input_shape, cache_dir, shared_cache_dir
        )
    except Exception as exc:  # noqa: BLE001 - any importer failure: say so, estimate per layer
        fallback = estimate_hardware(costs, profile)
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        _logger.warning("TVM could not lower the model (%s); estimating per layer", reason)
        return dataclasses.replace(
            fallback, method=f"{fallback.method} (TVM lowering failed: {reason[:200]})"
        )
    bits = kernel_bits(kernels, costs.layers)
    if bits is not None and not isinstance(model, Candidate) and precision != "fp32":
        bits = None  # a float module at the asked precision
    estimate = estimate_from_kernels(kernels, profile, bits=bits, precision=precision)
    if bits is None and any(c.weight_bits < 32 or c.activation_bits < 32 for c in costs.layers):
        _logger.warning("fused kernels do not match the model's layers; estimating them at fp32")
        estimate = dataclasses.replace(
            estimate, method=f"{estimate.method} (bit-widths not matched: fp32 kernels)"
        )
    return estimate
