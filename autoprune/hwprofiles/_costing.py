"""Latency and energy of a candidate on its target: measured where reachable, else estimated.

``latency="auto"`` measures TVM-built code when the target can be reached (the ``host`` profile
on this machine, or any board behind an RPC tracker) and estimates it from the profile
elsewhere; ``"measured"`` insists (an unreachable target is a config error); ``"estimated"``
never measures. Every figure carries its source.

Energy is measured only where a sensor exists (:mod:`._power`). Otherwise it is the analytic
estimate, whose idle-power part is taken over the *measured* latency when there is one, so the
two figures agree with each other.

Fake-quantized layers (bit-widths below 32) have no TVM importer yet: a candidate with such
layers is measured with float kernels for its architecture, and the record says so
(``measured_precision: fp32``). Sub-native bit-widths save size, not latency (DESIGN.md).

Example:
    >>> coster = HardwareCoster(load_profile("jetson"), latency="auto")
    >>> coster.measures
    False
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any

from autoprune.errors import ConfigError
from autoprune.hwprofiles._estimate import HardwareEstimate
from autoprune.hwprofiles._measure import LatencyMeasurement
from autoprune.hwprofiles._profile import DeviceProfile
from autoprune.hwprofiles._rpc import RpcEndpoint, measure_rpc_latency
from autoprune.hwprofiles._tvm import is_local_target, measure_tvm_latency
from autoprune.spaces import Candidate

__all__ = ["LATENCY_MODES", "HardwareCoster", "MeasurementFailed"]

LATENCY_MODES = ("auto", "measured", "estimated")


class MeasurementFailed(RuntimeError):
    """A latency measurement came back with an error (build failure, crash, timeout)."""


@dataclass
class HardwareCoster:
    """Turns a candidate and its estimate into the latency and energy a search uses.

    Attributes:
        profile: the target.
        latency: ``"auto"``, ``"measured"`` or ``"estimated"`` (see the module docstring).
        endpoint: the RPC tracker and key of the board, when it is remote.
        cache_dir: measurement cache (``<run_dir>/hw-cache``); a repeated architecture is free.
        timeout_s: wall-clock limit of one build and measurement, seconds.
    """

    profile: DeviceProfile
    latency: str = "auto"
    endpoint: RpcEndpoint | None = None
    cache_dir: str | os.PathLike[str] | None = None
    timeout_s: float = 600.0

    def __post_init__(self) -> None:
        if self.latency not in LATENCY_MODES:
            raise ConfigError(
                f"hardware.latency must be one of {', '.join(LATENCY_MODES)}, "
                f"but got {self.latency!r}"
            )
        if self.latency == "measured" and not self.reachable:
            raise ConfigError(
                f"hardware.latency is 'measured' but target {self.profile.name} cannot be "
                f"reached from here: pass --rpc-tracker HOST:PORT --rpc-key KEY for the board, "
                f"or set hardware.latency=auto"
            )

    @property
    def reachable(self) -> bool:
        """Whether code for the target can be run: locally, or through an RPC tracker."""
        return self.endpoint is not None or is_local_target(self.profile.tvm_target_spec())

    @property
    def measures(self) -> bool:
        """Whether latency will be measured (``False``: estimated)."""
        return self.latency != "estimated" and self.reachable

    def measure(self, candidate: Candidate) -> LatencyMeasurement:
        """Measured latency of the candidate's architecture (float kernels; see module doc)."""
        float_candidate = dataclasses.replace(candidate, weight_bits=(), activation_bits=())
        shape = candidate.input_shape
        if self.endpoint is not None:
            return measure_rpc_latency(
                float_candidate,
                shape,
                self.profile,
                self.endpoint,
                cache_dir=self.cache_dir,
                timeout_s=self.timeout_s,
            )
        return measure_tvm_latency(
            float_candidate, shape, self.profile, cache_dir=self.cache_dir, timeout_s=self.timeout_s
        )

    def __call__(self, candidate: Candidate, estimate: HardwareEstimate) -> dict[str, Any]:
        """``latency_ms``, ``energy_mj``, their sources and how they were made.

        Raises:
            MeasurementFailed: latency was to be measured and the measurement failed.
        """
        if not self.measures:
            return {
                "latency_ms": estimate.latency_ms,
                "latency_source": estimate.latency_source,
                "energy_mj": estimate.energy_mj,
                "energy_source": estimate.energy_source,
                "hardware_method": estimate.method,
            }
        measurement = self.measure(candidate)
        if not measurement.ok:
            raise MeasurementFailed(
                f"latency measurement on {self.profile.name} failed: {measurement.error}"
            )
        static_mj = sum(layer.static_energy_mj for layer in estimate.layers)
        energy_mj = (
            estimate.energy_mj - static_mj + self.profile.idle_power_w * (measurement.latency_ms)
        )  # W x ms = mJ
        tuned = "tuned" if measurement.tuned else "untuned"
        return {
            "latency_ms": measurement.latency_ms,
            "latency_source": "measured",
            "energy_mj": energy_mj,
            "energy_source": "estimated",
            "hardware_method": (
                f"latency: TVM {tuned} fp32 kernels, median of "
                f"{len(measurement.runs_ms)} repeats on {measurement.target}; "
                f"energy: {estimate.method}, idle power over the measured latency"
            ),
            "latency_measurement": measurement.to_dict(),
            "estimated_latency_ms": estimate.latency_ms,
        }
