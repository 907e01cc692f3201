"""Device profiles and hardware cost estimates.

Profiles are YAML data, one file per device in ``profiles/`` (every number with its provenance),
loaded into a frozen :class:`DeviceProfile` by name, alias or path. :func:`estimate_hardware`
turns the exact per-layer costs of :mod:`autoprune.spaces` into an estimated batch-1 latency
(per-layer roofline with per-device efficiency factors) and energy (Horowitz's 45 nm energies
scaled per device, plus idle power), labelled ``"estimated"``.

Example:
    >>> from autoprune.hwprofiles import estimate_hardware, list_profiles, load_profile
    >>> [p.name for p in list_profiles()][:2]
    ['host', 'jetson-agx-orin']
    >>> profile = load_profile("jetson")  # alias of jetson-orin-nano
    >>> profile.channel_multiple
    8
"""

from __future__ import annotations

from autoprune.hwprofiles._costing import LATENCY_MODES, HardwareCoster, MeasurementFailed
from autoprune.hwprofiles._estimate import HardwareEstimate, LayerEstimate, estimate_hardware
from autoprune.hwprofiles._kernels import KernelCost, estimate_from_kernels, fused_kernels
from autoprune.hwprofiles._library import target_host_arch, write_library
from autoprune.hwprofiles._lowered import estimate_with_tvm, kernel_bits
from autoprune.hwprofiles._measure import (
    LatencyMeasurement,
    MeasureProtocol,
    measure_pytorch_latency,
)
from autoprune.hwprofiles._power import (
    EnergyMeasurement,
    EnergySensor,
    find_energy_sensor,
    measure_energy,
)
from autoprune.hwprofiles._profile import PRECISION_BITS, DeviceProfile
from autoprune.hwprofiles._registry import PROFILE_DIR, list_profiles, load_profile
from autoprune.hwprofiles._rpc import RpcEndpoint, measure_rpc_latency
from autoprune.hwprofiles._tune import TuningError, TuningReport, build_tuned, tune_model
from autoprune.hwprofiles._tvm import (
    OutputMismatchError,
    build_for_target,
    check_outputs_match,
    import_to_relax,
    is_local_target,
    measure_tvm_latency,
)

__all__ = [
    "LATENCY_MODES",
    "PRECISION_BITS",
    "PROFILE_DIR",
    "DeviceProfile",
    "EnergyMeasurement",
    "EnergySensor",
    "HardwareCoster",
    "HardwareEstimate",
    "KernelCost",
    "LatencyMeasurement",
    "LayerEstimate",
    "MeasureProtocol",
    "MeasurementFailed",
    "OutputMismatchError",
    "RpcEndpoint",
    "TuningError",
    "TuningReport",
    "build_for_target",
    "build_tuned",
    "check_outputs_match",
    "estimate_from_kernels",
    "estimate_hardware",
    "estimate_with_tvm",
    "find_energy_sensor",
    "fused_kernels",
    "kernel_bits",
    "import_to_relax",
    "is_local_target",
    "list_profiles",
    "load_profile",
    "measure_energy",
    "measure_pytorch_latency",
    "measure_rpc_latency",
    "measure_tvm_latency",
    "target_host_arch",
    "tune_model",
    "write_library",
]
