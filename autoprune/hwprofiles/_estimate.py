"""Analytic latency (per-layer roofline) and energy (Horowitz-style) estimates.

Used wherever the target device cannot be measured. Every number it returns is labelled
``"estimated"``. The model, per layer of a :class:`~autoprune.spaces.CostReport` (batch 1):

* precision: the narrowest native precision of the profile whose bit width covers
  ``max(weight_bits, activation_bits)``; sub-native widths (4 bits) run at int8 where int8 is
  native, else at the next wider native precision.
* compute time = ``macs / (peak_macs_per_s[precision] * compute_efficiency[precision] *
  kernel_class_efficiency[class])``; here a ``linear``/``matmul`` layer is class ``fc`` and every
  other layer ``conv`` (the per-kernel estimate tells 3x3, depthwise and pointwise kernels apart).
* memory time = bytes moved / ``(memory_bandwidth_bytes_per_s * memory_efficiency)``, with input
  and output activations at ``activation_bits`` and weights at ``weight_bits``, each rounded up
  to a whole-byte load width (8, 16 or 32 bits): no device loads packed sub-byte tensors
  natively, so a 4-bit layer moves what an 8-bit one moves (sub-native widths save size, not
  latency); a layer whose width the board does not run (int8 on a Nano, fp16 on a Raspberry
  Pi 4) runs at, and moves data at, the wider precision it falls back to.
* latency = ``max(compute, memory) + kernel_launch_overhead``; zero-MAC elementwise layers that a
  compiler fuses into the producing conv (batchnorm, activations) cost memory time only.
* energy = ``energy_scale * (macs * e_mac + 2 * macs * e_sram + dram_bytes * e_dram)`` +
  ``idle_power_w * latency``; the DRAM term counts packed bytes (``bits / 8``), so sub-native
  widths do save modelled energy.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal

from autoprune.errors import ConfigError
from autoprune.hwprofiles._profile import PRECISION_BITS, DeviceProfile
from autoprune.spaces import CostReport, LayerCost

__all__ = [
    "DRAM_PJ_PER_BYTE",
    "DRAM_READ_32BIT_PJ",
    "FP16_ADD_PJ",
    "FP16_MULT_PJ",
    "FP32_ADD_PJ",
    "FP32_MULT_PJ",
    "FUSED_ELEMENTWISE_OPS",
    "INT8_ADD_PJ",
    "INT8_MULT_PJ",
    "INT32_ADD_PJ",
    "MAC_PJ",
    "SRAM_READ_32BIT_PJ",
    "HardwareEstimate",
    "LayerEstimate",
    "estimate_hardware",
    "latency_label",
]

_logger = logging.getLogger("autoprune.hwprofiles")

# Energy per operation at 45 nm, 0.9 V, in picojoules: M. Horowitz, "Computing's energy problem
# (and what we can do about it)", ISSCC 2014, Figure 1.1.9 (also the table in Han et al.,
# "Learning both Weights and Connections for Efficient Neural Networks", NeurIPS 2015).
DRAM_READ_32BIT_PJ = 640.0
SRAM_READ_32BIT_PJ = 5.0  # 8 KB SRAM
FP32_MULT_PJ = 3.7
FP32_ADD_PJ = 0.9
FP16_MULT_PJ = 1.1
FP16_ADD_PJ = 0.4
INT32_ADD_PJ = 0.1
INT8_MULT_PJ = 0.2
INT8_ADD_PJ = 0.03  # listed for completeness; int8 MACs accumulate in int32, see MAC_PJ

DRAM_PJ_PER_BYTE = DRAM_READ_32BIT_PJ / 4  # 160 pJ/byte
_SRAM_PJ_PER_BYTE = SRAM_READ_32BIT_PJ / 4  # SRAM read energy scales with the bits read

#: Energy of one multiply-accumulate (mult + add) by execution precision, pJ at 45 nm. int8
#: kernels accumulate the int8 x int8 products in int32 (TVM's ``conv2d(..., out_dtype="int32")``,
#: cuDNN/TensorRT IMMA, x86 VNNI), so an int8 MAC is an int8 mult plus an int32 add.
MAC_PJ: Mapping[str, float] = MappingProxyType(
    {
        "fp32": FP32_MULT_PJ + FP32_ADD_PJ,
        "fp16": FP16_MULT_PJ + FP16_ADD_PJ,
        "int8": INT8_MULT_PJ + INT32_ADD_PJ,
    }
)

#: Zero-MAC elementwise ops that TVM's FuseOps (and TensorRT's layer fusion) merge into the
#: epilogue of the preceding conv/linear kernel. They launch no kernel of their own, so they are
#: charged no launch overhead; their memory time is still counted (a conservative upper bound:
#: fully fused, the tensor would stay in registers).
FUSED_ELEMENTWISE_OPS = frozenset(
    {
        "batchnorm",
        "relu",
        "relu6",
        "hardtanh",
        "leakyrelu",
        "sigmoid",
        "hardsigmoid",
        "silu",
        "hardswish",
        "gelu",
        "tanh",
        "identity",
    }
)


def latency_label(source: str, expected_error: float | None) -> str:
    """``"estimated, +-18 %"`` for an estimate with a known error, else just ``source``.

    Example:
        >>> latency_label("estimated", 0.176), latency_label("measured", None)
        ('estimated, +-18 %', 'measured')
    """
    if source == "estimated" and expected_error is not None:
        return f"estimated, +-{expected_error * 100:.0f} %"
    return source


def _storage_bits(bits: int) -> int:
    """Bits per element as loaded from DRAM by a native kernel: 1..8 -> 8, 9..16 -> 16, else 32."""
    return 8 if bits <= 8 else 16 if bits <= 16 else 32


def _precision(layer: LayerCost, profile: DeviceProfile) -> str:
    for attr in ("weight_bits", "activation_bits"):
        bits = getattr(layer, attr)
        if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 32:
            raise ConfigError(
                f"layer {layer.name!r}: {attr}={bits!r} is not a bit width; allowed 1..32 "
                f"(32 = float); fix the bit-width choices in the search space"
            )
    needed = max(layer.weight_bits, layer.activation_bits)
    covering = [p for p in profile.native_precisions if PRECISION_BITS[p] >= needed]
    if covering:
        return min(covering, key=PRECISION_BITS.__getitem__)
    # Wider than every native precision (e.g. fp32 on an int8-only accelerator): run at the
    # widest one rather than fail; the estimate is then optimistic, so say so.
    widest = profile.native_precisions[0]
    _logger.debug(
        "layer %r needs %d bits; %s runs it at %s", layer.name, needed, profile.name, widest
    )
    return widest


@dataclass(frozen=True)
class LayerEstimate:
    """Estimated latency and energy of one layer of a :class:`~autoprune.spaces.CostReport`.

    Attributes:
        name: the layer's module name (as in ``LayerCost.name``).
        op: the layer's op (``"conv2d"``, ``"linear"``, ``"batchnorm"``, ...).
        precision: the precision it executes at on the device (``"fp32"``, ``"fp16"``, ``"int8"``).
        latency_ms: estimated latency, milliseconds (launch overhead included).
        energy_mj: estimated energy, millijoules (idle power over ``latency_ms`` included).
        bound: ``"compute"`` or ``"memory"``: which roofline term is larger.
        compute_ms: compute term, ms (0 for zero-MAC layers).
        memory_ms: memory term, ms.
        dram_energy_mj: the DRAM-traffic part of ``energy_mj``, mJ.
        static_energy_mj: the idle-power part of ``energy_mj``, mJ.

    Example:
        A 3x3 conv, 64 -> 64 channels at 56x56 (115.6 M MACs), fp32 on the Orin Nano profile:
        ``LayerEstimate(name='layer1.0.conv1', op='conv2d', precision='fp32', latency_ms=0.826,
        energy_mj=2.83, bound='compute', compute_ms=0.821, memory_ms=0.0368,
        dram_energy_mj=0.0505, static_energy_mj=2.48)`` (values rounded).
    """

    name: str
    op: str
    precision: str
    latency_ms: float
    energy_mj: float
    bound: Literal["compute", "memory"]
    compute_ms: float = 0.0
    memory_ms: float = 0.0
    dram_energy_mj: float = 0.0
    static_energy_mj: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict; ``LayerEstimate.from_dict(e.to_dict()) == e``."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LayerEstimate:
        """Inverse of :meth:`to_dict`."""
        return cls(**data)


@dataclass(frozen=True)
class HardwareEstimate:
    """Estimated batch-1 latency and energy of a model on a device, with a per-layer breakdown.

    Attributes:
        latency_ms: sum of the layers' latencies (layers run one after another), ms.
        energy_mj: sum of the layers' energies, mJ.
        latency_source: always ``"estimated"`` here (measurements say ``"measured"``).
        energy_source: always ``"estimated"`` here.
        layers: one :class:`LayerEstimate` per layer of the cost report, in execution order.
        method: how the numbers were made, e.g.
            ``"per-layer roofline over profile jetson-orin-nano"``.
        profile: name of the device profile used.
        expected_error: typical relative error of ``latency_ms`` (0.18 = +-18 %), the profile's
            cross-validated calibration error; ``None`` when the profile was never calibrated.

    Example:
        >>> from autoprune.hwprofiles import load_profile
        >>> from autoprune.spaces import CostReport, LayerCost
        >>> conv = LayerCost(name="layer1.0.conv1", op="conv2d", macs=115_605_504, params=36_864,
        ...     weight_bits=8, activation_bits=8, input_elements=200_704,
        ...     output_elements=200_704, weight_elements=36_864)
        >>> costs = CostReport(input_shape=(64, 56, 56), macs=conv.macs, params=conv.params,
        ...     size_bytes=36_864, layers=(conv,))
        >>> est = estimate_hardware(costs, load_profile("jetson"))
        >>> round(est.latency_ms, 3), round(est.energy_mj, 3), est.latency_source
        (0.066, 0.268, 'estimated')
    """

    latency_ms: float
    energy_mj: float
    layers: tuple[LayerEstimate, ...]
    method: str
    profile: str
    latency_source: Literal["measured", "estimated"] = "estimated"
    energy_source: Literal["measured", "estimated"] = "estimated"
    expected_error: float | None = None

    @property
    def latency_label(self) -> str:
        """``"estimated, +-18 %"``, ``"estimated"`` or ``"measured"``: how far to trust it."""
        return latency_label(self.latency_source, self.expected_error)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict; ``HardwareEstimate.from_dict(e.to_dict()) == e``."""
        data = dataclasses.asdict(self)
        data["layers"] = [layer.to_dict() for layer in self.layers]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HardwareEstimate:
        """Inverse of :meth:`to_dict`."""
        fields = dict(data)
        fields["layers"] = tuple(LayerEstimate.from_dict(layer) for layer in data["layers"])
        return cls(**fields)


def _layer_class(layer: LayerCost) -> str:
    return "fc" if layer.op.casefold() in ("linear", "matmul", "addmm", "bmm") else "conv"


def _estimate_layer(
    layer: LayerCost, profile: DeviceProfile, kernel_class: str | None = None
) -> LayerEstimate:
    precision = _precision(layer, profile)
    prec_bits = PRECISION_BITS[precision]
    activations = layer.input_elements + layer.output_elements

    # Latency: whole-byte loads only, so sub-byte widths move as much data as int8.
    # A width the board lacks (int8 on a Nano) runs, and moves, at the wider precision.
    floor = (
        prec_bits if prec_bits > _storage_bits(max(layer.weight_bits, layer.activation_bits)) else 0
    )
    load_bytes = (
        activations * max(floor, _storage_bits(layer.activation_bits))
        + layer.weight_elements * max(floor, _storage_bits(layer.weight_bits))
    ) / 8
    memory_s = load_bytes / (profile.memory_bandwidth_bytes_per_s * profile.memory_efficiency)
    efficiency = profile.efficiency(precision, kernel_class or _layer_class(layer))
    compute_s = layer.macs / (profile.peak_macs_per_s[precision] * efficiency)
    fused = layer.macs == 0 and layer.op.casefold() in FUSED_ELEMENTWISE_OPS
    overhead_s = 0.0 if fused else profile.kernel_launch_overhead_us * 1e-6
    latency_ms = (max(compute_s, memory_s) + overhead_s) * 1e3

    # Energy: DRAM traffic at the packed widths (bits / 8), MACs and their two SRAM operand
    # reads at the execution precision; all scaled from 45 nm to the device's process node.
    dram_bytes = (
        activations * layer.activation_bits + layer.weight_elements * layer.weight_bits
    ) / 8
    mac_pj = layer.macs * MAC_PJ[precision]
    sram_pj = 2 * layer.macs * _SRAM_PJ_PER_BYTE * prec_bits / 8
    dram_pj = dram_bytes * DRAM_PJ_PER_BYTE
    dram_mj = dram_pj * profile.energy_scale * 1e-9
    dynamic_mj = (mac_pj + sram_pj + dram_pj) * profile.energy_scale * 1e-9
    static_mj = profile.idle_power_w * latency_ms  # W x ms = mJ

    return LayerEstimate(
        name=layer.name,
        op=layer.op,
        precision=precision,
        latency_ms=latency_ms,
        energy_mj=dynamic_mj + static_mj,
        bound="compute" if compute_s > memory_s else "memory",
        compute_ms=compute_s * 1e3,
        memory_ms=memory_s * 1e3,
        dram_energy_mj=dram_mj,
        static_energy_mj=static_mj,
    )


def estimate_hardware(costs: CostReport, profile: DeviceProfile) -> HardwareEstimate:
    """Estimate batch-1 latency (ms) and energy (mJ) of a model on a device, layer by layer.

    See the module docstring for the model. Layers run one after another (batch 1, one stream),
    so the model's latency and energy are the sums over its layers.

    Args:
        costs: exact per-layer costs at the deploy input shape (``autoprune.spaces.count_costs``);
            any object with the same attributes works.
        profile: the target device.

    Raises:
        ConfigError: a layer has a bit width outside 1..32.

    Example:
        >>> from autoprune.hwprofiles import load_profile
        >>> from autoprune.spaces import count_costs, create_model
        >>> model = create_model("resnet20", num_classes=10, in_channels=1)
        >>> est = estimate_hardware(count_costs(model, (1, 28, 28)), load_profile("jetson"))
        >>> est.method, est.layers[0].precision
        ('per-layer roofline over profile jetson-orin-nano', 'fp32')
    """
    layers = tuple(_estimate_layer(layer, profile) for layer in costs.layers)
    estimate = HardwareEstimate(
        latency_ms=sum(layer.latency_ms for layer in layers),
        energy_mj=sum(layer.energy_mj for layer in layers),
        layers=layers,
        method=f"per-layer roofline over profile {profile.name}",
        profile=profile.name,
        expected_error=profile.expected_error,
    )
    _logger.debug(
        "%s on %s: %.4f ms, %.4f mJ (estimated, %d layers)",
        getattr(costs, "input_shape", "?"),
        profile.name,
        estimate.latency_ms,
        estimate.energy_mj,
        len(layers),
    )
    return estimate
