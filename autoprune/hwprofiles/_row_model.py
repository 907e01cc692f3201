"""The latency model a calibration fit evaluates: the per-kernel estimate of each row's model
(the same numbers as :func:`~autoprune.hwprofiles.estimate_from_kernels`), for many rows in one
vectorised pass, with the factors that relate other runtimes and other publishers' setups to the
one the profile models."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from autoprune.hwprofiles._estimate import _precision, _storage_bits
from autoprune.hwprofiles._kernels import KERNEL_CLASSES, KernelCost, _dtype_bytes
from autoprune.hwprofiles._profile import PRECISION_BITS, DeviceProfile
from autoprune.hwprofiles._rows import CalibrationRow
from autoprune.spaces import LayerCost

__all__ = ["predict_latency_ms"]


@dataclass(frozen=True)
class _Arrays:
    """One row's kernels as arrays at the row's precision (what the fit evaluates fast)."""

    macs: np.ndarray
    load_bytes: np.ndarray
    classes: np.ndarray  # index into KERNEL_CLASSES
    precision: str  # the precision the board executes the row's precision at


def _arrays(kernels: Sequence[KernelCost], profile: DeviceProfile, precision: str) -> _Arrays:
    bits = PRECISION_BITS[precision]
    probe = LayerCost("probe", "conv2d", 0, 0, bits, bits, 0, 0, 0)
    executed = _precision(probe, profile)
    load = []
    for k in kernels:
        element = _dtype_bytes(k.dtype)
        activations = k.bytes_in // element + k.bytes_out // element
        weights = k.bytes_weights // element
        width = max(_storage_bits(bits), PRECISION_BITS[executed])  # as _estimate_layer
        load.append((activations + weights) * width / 8)
    return _Arrays(
        macs=np.array([k.macs for k in kernels], dtype=float),
        load_bytes=np.array(load, dtype=float),
        classes=np.array([KERNEL_CLASSES.index(k.kernel_class) for k in kernels], dtype=int),
        precision=executed,
    )


def predict_latency_ms(
    kernels: Sequence[KernelCost], profile: DeviceProfile, precision: str
) -> float:
    """The per-kernel estimate's latency (ms) of ``kernels`` run at ``precision`` on ``profile``:
    the same number as ``estimate_from_kernels(kernels, profile, precision=precision)``."""
    stack = _Stack.of([_arrays(kernels, profile, precision)])
    return float(
        _roofline_ms(stack, profile)[0] + stack.counts[0] * profile.kernel_launch_overhead_us * 1e-3
    )


@dataclass(frozen=True)
class _Stack:
    """Several rows' kernels end to end, so that a fit evaluates all rows in one pass."""

    macs: np.ndarray
    load_bytes: np.ndarray
    classes: np.ndarray  # per kernel, index into KERNEL_CLASSES
    precisions: tuple[str, ...]  # the executed precisions present
    precision: np.ndarray  # per kernel, index into precisions
    starts: np.ndarray  # per row, its first kernel
    counts: np.ndarray  # per row, its kernels

    @classmethod
    def of(cls, arrays: Sequence[_Arrays]) -> _Stack:
        precisions = tuple(sorted({a.precision for a in arrays}))
        counts = np.array([len(a.macs) for a in arrays])
        return cls(
            macs=np.concatenate([a.macs for a in arrays]),
            load_bytes=np.concatenate([a.load_bytes for a in arrays]),
            classes=np.concatenate([a.classes for a in arrays]),
            precisions=precisions,
            precision=np.repeat([precisions.index(a.precision) for a in arrays], counts),
            starts=np.concatenate([[0], np.cumsum(counts)[:-1]]),
            counts=counts,
        )


def _roofline_ms(stack: _Stack, profile: DeviceProfile) -> np.ndarray:
    """Each row's ``sum(max(compute, memory))`` over its kernels, ms (what
    :meth:`DeviceProfile.efficiency` and ``_estimate_layer`` give, for every kernel at once)."""
    factors = np.array([profile.class_factor(c) for c in KERNEL_CLASSES])
    base = np.array([profile.compute_efficiency[p] for p in stack.precisions])
    peaks = np.array([profile.peak_macs_per_s[p] for p in stack.precisions])
    rate = peaks[stack.precision] * base[stack.precision] * factors[stack.classes]
    compute = stack.macs / rate
    memory = stack.load_bytes / (profile.memory_bandwidth_bytes_per_s * profile.memory_efficiency)
    return np.add.reduceat(np.maximum(compute, memory), stack.starts) * 1e3


def _rows_latency_ms(
    stack: _Stack,
    profile: DeviceProfile,
    values: Mapping[str, float],
    rows: Sequence[CalibrationRow],
) -> np.ndarray:
    """Each row's modelled latency, ms: the profile's estimate for its own runtime, times its
    setup's ``setup_factor`` where it has one; for another runtime, ``runtime_factor *
    roofline + kernels * runtime_overhead_us`` (its own speed on the same kernels, and its own
    cost per kernel launch)."""
    own = np.array([r.runtime == profile.runtime for r in rows])
    factor = np.array(
        [
            values.get(f"setup_factor.{r.setup}", 1.0)
            if r.runtime == profile.runtime
            else values.get(f"runtime_factor.{r.runtime}", 1.0)
            for r in rows
        ]
    )
    per_kernel_us = np.array(
        [
            values.get(f"runtime_overhead_us.{r.runtime}", profile.kernel_launch_overhead_us)
            for r in rows
        ]
    )
    roofline = _roofline_ms(stack, profile)
    overhead = stack.counts * per_kernel_us * 1e-3
    return np.where(own, factor * (roofline + overhead), factor * roofline + overhead)


def _reference_setup(profile: DeviceProfile, rows: Sequence[CalibrationRow]) -> str | None:
    """The setup whose figures a fit of ``rows`` models: the one with the most rows of the
    profile's runtime (ties: the first by name); ``None`` without such rows."""
    own = [r.setup for r in rows if r.runtime == profile.runtime]
    return min(set(own), key=lambda s: (-own.count(s), s)) if own else None


def _setups_with_factor(profile: DeviceProfile, rows: Sequence[CalibrationRow]) -> list[str]:
    """The setups of the profile's runtime that get their own ``setup_factor``: every one with
    rows of at least two models except the reference. A setup of one model would only absorb
    that model's error."""
    reference = _reference_setup(profile, rows)
    models: dict[str, set[str]] = {}
    for row in rows:
        if row.runtime == profile.runtime:
            models.setdefault(row.setup, set()).add(row.model)
    return sorted(s for s, m in models.items() if s != reference and len(m) >= 2)
