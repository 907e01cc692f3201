"""Device profiles and hardware cost estimates.

Profiles are YAML data, one file per device in ``profiles/`` (every number with its provenance),
loaded into a frozen :class:`DeviceProfile` by name, alias or path. :func:`estimate_hardware`
turns the exact per-layer costs of :mod:`autoprune.spaces` into an estimated batch-1 latency
(per-layer roofline with per-device efficiency factors) and energy (Horowitz's 45 nm energies
scaled per device, plus idle power), labelled ``"estimated"``.

Where the target can be run, latency is measured by a :class:`LatencyRunner`
(:func:`create_latency_runner`: :class:`TvmRunner` on this host, :class:`RpcRunner` on a board
behind a TVM RPC tracker; :class:`PyTorchRunner` for the PyTorch eager reference), and
:class:`HardwareCoster` turns a candidate into the latency and energy a search uses
(:func:`candidate_costs`, :func:`model_costs`). The TVM facts this relies on are in
``docs/tvm.md``.

Board profiles are fitted to published measurements (``calibration/rows.csv``) by
:func:`fit_profile` (``autoprune calibrate``); ``docs/calibration.md`` says how, and how far to
trust the result (``DeviceProfile.expected_error``).

Example:
    >>> from autoprune.hwprofiles import estimate_hardware, list_profiles, load_profile
    >>> [p.name for p in list_profiles()][:2]
    ['host', 'jetson-agx-orin']
    >>> profile = load_profile("jetson")  # alias of jetson-orin-nano
    >>> profile.channel_multiple
    8
"""

from __future__ import annotations

from autoprune.hwprofiles._board import exposure_note, find_board_sensor, serve_board
from autoprune.hwprofiles._calibrate import CalibrationFit, fit_profile
from autoprune.hwprofiles._costing import (
    LATENCY_MODES,
    HardwareCoster,
    MeasurementFailed,
    candidate_costs,
    create_latency_runner,
    default_tuning_dir,
    model_costs,
)
from autoprune.hwprofiles._database import check_database_files
from autoprune.hwprofiles._estimate import (
    HardwareEstimate,
    LayerEstimate,
    estimate_hardware,
    latency_label,
)
from autoprune.hwprofiles._kernels import KernelCost, estimate_from_kernels, fused_kernels
from autoprune.hwprofiles._library import target_host_arch, write_library
from autoprune.hwprofiles._lowered import default_kernel_cache, estimate_with_tvm, kernel_bits
from autoprune.hwprofiles._power import (
    EnergyMeasurement,
    EnergySensor,
    find_energy_sensor,
    list_energy_sensors,
    measure_energy,
    register_energy_sensor,
)
from autoprune.hwprofiles._profile import PRECISION_BITS, DeviceProfile
from autoprune.hwprofiles._pytorch import PyTorchRunner, measure_pytorch_latency
from autoprune.hwprofiles._records import LatencyMeasurement, MeasureProtocol
from autoprune.hwprofiles._registry import PROFILE_DIR, list_profiles, load_profile, profile_file
from autoprune.hwprofiles._relax import (
    build_for_target,
    import_to_relax,
    is_local_target,
    resolve_target,
)
from autoprune.hwprofiles._rows import CalibrationRow, kernels_for_rows, load_rows
from autoprune.hwprofiles._rpc import RpcEndpoint, RpcRunner, measure_rpc_latency
from autoprune.hwprofiles._runner import LatencyRunner
from autoprune.hwprofiles._tune import TuningError, TuningReport, build_tuned, tune_model
from autoprune.hwprofiles._tvm import (
    OutputMismatchError,
    TvmRunner,
    check_outputs_match,
    measure_tvm_latency,
)

__all__ = [
    "LATENCY_MODES",
    "PRECISION_BITS",
    "PROFILE_DIR",
    "CalibrationFit",
    "CalibrationRow",
    "DeviceProfile",
    "EnergyMeasurement",
    "EnergySensor",
    "HardwareCoster",
    "HardwareEstimate",
    "KernelCost",
    "LatencyMeasurement",
    "LatencyRunner",
    "LayerEstimate",
    "MeasureProtocol",
    "MeasurementFailed",
    "OutputMismatchError",
    "PyTorchRunner",
    "RpcEndpoint",
    "RpcRunner",
    "TuningError",
    "TuningReport",
    "TvmRunner",
    "build_for_target",
    "build_tuned",
    "candidate_costs",
    "check_database_files",
    "check_outputs_match",
    "create_latency_runner",
    "default_kernel_cache",
    "default_tuning_dir",
    "estimate_from_kernels",
    "estimate_hardware",
    "estimate_with_tvm",
    "exposure_note",
    "find_board_sensor",
    "fit_profile",
    "find_energy_sensor",
    "fused_kernels",
    "import_to_relax",
    "is_local_target",
    "kernel_bits",
    "kernels_for_rows",
    "latency_label",
    "list_energy_sensors",
    "list_profiles",
    "load_profile",
    "load_rows",
    "measure_energy",
    "measure_pytorch_latency",
    "measure_rpc_latency",
    "measure_tvm_latency",
    "model_costs",
    "profile_file",
    "register_energy_sensor",
    "resolve_target",
    "serve_board",
    "target_host_arch",
    "tune_model",
    "write_library",
]
