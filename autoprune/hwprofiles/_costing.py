"""Latency and energy of a candidate on its target: measured where reachable, else estimated.

``latency="auto"`` measures TVM-built code when the target can be reached (the ``host`` profile
on this machine, or any board behind an RPC tracker) and estimates it from the profile
elsewhere; ``"measured"`` insists (an unreachable target is a config error); ``"estimated"``
never measures. Every figure carries its source.

Energy is measured where a sensor exists (:mod:`._power`: RAPL counters on this host's CPU,
read by the measuring worker while the code runs). Otherwise it is the analytic estimate, whose
idle-power part is taken over the *measured* latency when there is one, so the two figures
agree with each other.

Measured on this host, the candidate's kernels are first tuned with MetaSchedule into the run's
shared tuning database (``tuning_dir``; :mod:`._tune`), ``tuning_trials_per_task`` trials per
fused kernel the database does not hold yet, and the build uses the tuned schedules: untuned
TVM code is naive loops, no latency signal (shared/TVM.md). Boards behind RPC are measured with
TVM's default schedules (MetaSchedule over RPC is not wired yet), and the record says so.

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
from pathlib import Path
from typing import Any

from autoprune.errors import ConfigError
from autoprune.hwprofiles._estimate import HardwareEstimate
from autoprune.hwprofiles._measure import LatencyMeasurement
from autoprune.hwprofiles._profile import DeviceProfile
from autoprune.hwprofiles._rpc import RpcEndpoint, measure_rpc_latency
from autoprune.hwprofiles._tune import TuningError, TuningReport, tune_model
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
        timeout_s: wall-clock limit of one tuning, build and measurement, seconds.
        tuning_dir: the run's MetaSchedule database folder (``<run_dir>/tuning/<profile>``);
            ``None`` measures untuned code.
        tuning_trials_per_task: MetaSchedule trials per new fused kernel (0: no tuning).
    """

    profile: DeviceProfile
    latency: str = "auto"
    endpoint: RpcEndpoint | None = None
    cache_dir: str | os.PathLike[str] | None = None
    timeout_s: float = 600.0
    tuning_dir: str | os.PathLike[str] | None = None
    tuning_trials_per_task: int = 4

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

    @property
    def tunes(self) -> bool:
        """Whether measurements here are of MetaSchedule-tuned kernels."""
        return (
            self.endpoint is None
            and self.tuning_dir is not None
            and (self.tuning_trials_per_task > 0)
        )

    def tune(self, candidate: Candidate) -> TuningReport | None:
        """Tune the candidate's new kernels into the shared database (``None``: no tuning).

        Raises:
            MeasurementFailed: tuning failed or ran out of time.
        """
        if not self.tunes:
            return None
        float_candidate = dataclasses.replace(candidate, weight_bits=(), activation_bits=())
        try:
            return tune_model(
                float_candidate,
                candidate.input_shape,
                self.profile,
                database_dir=Path(self.tuning_dir),  # type: ignore[arg-type]
                max_trials=self.tuning_trials_per_task * 1000,
                trials_per_task=self.tuning_trials_per_task,
                timeout_s=self.timeout_s,
            )
        except TuningError as exc:
            raise MeasurementFailed(str(exc)) from exc

    def measure(self, candidate: Candidate) -> LatencyMeasurement:
        """Measured latency of the candidate's architecture (float kernels; see module doc).

        Tuned kernels are used when the run's database holds them (:meth:`tune` first).
        """
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
        database = self.tuning_dir if self.tunes else None
        return measure_tvm_latency(
            float_candidate,
            shape,
            self.profile,
            cache_dir=self.cache_dir,
            timeout_s=self.timeout_s,
            database_dir=database,
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
        tuning = self.tune(candidate)
        measurement = self.measure(candidate)
        if not measurement.ok:
            raise MeasurementFailed(
                f"latency measurement on {self.profile.name} failed: {measurement.error}"
            )
        if measurement.energy is not None:  # a hardware counter was read while the code ran
            energy_mj, energy_source = measurement.energy.energy_mj, "measured"
            energy_method = (
                f"{measurement.energy.sensor} counter over {measurement.energy.calls} calls "
                f"({measurement.energy.power_w:.3g} W mean, whole package)"
            )
        else:
            static_mj = sum(layer.static_energy_mj for layer in estimate.layers)
            idle_mj = self.profile.idle_power_w * measurement.latency_ms  # W x ms = mJ
            energy_mj, energy_source = estimate.energy_mj - static_mj + idle_mj, "estimated"
            energy_method = f"{estimate.method}, idle power over the measured latency"
        tuned = "untuned"
        if measurement.tuned:
            tuned = f"MetaSchedule-tuned ({self.tuning_trials_per_task} trials per kernel)"
        result = {
            "latency_ms": measurement.latency_ms,
            "latency_source": "measured",
            "energy_mj": energy_mj,
            "energy_source": energy_source,
            "hardware_method": (
                f"latency: TVM {tuned} fp32 kernels, median of "
                f"{len(measurement.runs_ms)} repeats on {measurement.target}; "
                f"energy: {energy_method}"
            ),
            "latency_measurement": measurement.to_dict(),
            "estimated_latency_ms": estimate.latency_ms,
        }
        if tuning is not None:
            result["tuning"] = tuning.to_dict()
        return result
