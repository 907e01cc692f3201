"""Latency and energy of a candidate on its target: measured where reachable, else estimated.

``latency="auto"`` measures TVM-built code when the target can be reached (the ``host`` profile
on this machine, or any board behind an RPC tracker) and estimates it from the profile
elsewhere; ``"measured"`` insists (an unreachable target is a config error); ``"estimated"``
never measures. Every figure carries its source. Measuring goes through the latency runner of
the target (:func:`create_latency_runner`).

Energy is measured where a sensor exists (:mod:`._power`: RAPL counters on this host's CPU,
read by the measuring worker while the code runs; a Jetson's rails over RPC). Otherwise it is
the analytic estimate, whose idle-power part is taken over the *measured* latency when there is
one, so the two figures agree with each other.

Measured on this host, the candidate's kernels are first tuned with MetaSchedule into the run's
shared tuning database (``tuning_dir``; :mod:`._tune`), ``tuning_trials_per_task`` trials per
fused kernel the database does not hold yet, and the build uses the tuned schedules: untuned
TVM code is naive loops, no latency signal (``docs/tvm.md``). Boards behind RPC are measured
with TVM's default schedules (MetaSchedule over RPC is not wired yet), and the record says so.

Fake-quantized layers (bit-widths below 32) have no TVM importer yet: a candidate with such
layers is measured with float kernels for its architecture, and the method says so (``fp32
kernels``). Sub-native bit-widths save size, not latency.

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

from torch import nn

from autoprune.config import ESTIMATORS, LATENCY_MODES, check_latency_mode
from autoprune.errors import ConfigError
from autoprune.hwprofiles._cache import cache_root
from autoprune.hwprofiles._estimate import HardwareEstimate, estimate_hardware
from autoprune.hwprofiles._lowered import estimate_with_tvm
from autoprune.hwprofiles._profile import DeviceProfile
from autoprune.hwprofiles._records import LatencyMeasurement, MeasureProtocol, check_int
from autoprune.hwprofiles._registry import load_profile
from autoprune.hwprofiles._relax import is_local_target
from autoprune.hwprofiles._rpc import RpcEndpoint, RpcRunner
from autoprune.hwprofiles._runner import LatencyRunner
from autoprune.hwprofiles._tune import TuningError, TuningReport
from autoprune.hwprofiles._tvm import TvmRunner
from autoprune.spaces import Candidate, CostReport, cost_report, count_costs

__all__ = [
    "LATENCY_MODES",
    "HardwareCoster",
    "MeasurementFailed",
    "candidate_costs",
    "create_latency_runner",
    "default_tuning_dir",
    "model_costs",
]


class MeasurementFailed(RuntimeError):
    """A latency measurement came back with an error (build failure, crash, timeout)."""


def create_latency_runner(
    profile: DeviceProfile | str,
    *,
    endpoint: RpcEndpoint | None = None,
    protocol: MeasureProtocol | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    timeout_s: float | None = None,
    tuning_dir: str | os.PathLike[str] | None = None,
    tuning_trials_per_task: int = 0,
    tuning_timeout_s: float | None = None,
) -> LatencyRunner:
    """The runner that measures TVM-built code for ``profile``.

    * ``endpoint`` given: an :class:`RpcRunner` (the board behind that tracker; untuned).
    * else the profile's target runs on this host: a :class:`TvmRunner`, tuning into
      ``tuning_dir`` in :meth:`~LatencyRunner.prepare` and building with it when
      ``tuning_trials_per_task > 0`` (else untuned, ``tuning_dir`` unused).

    Args:
        profile: a profile or its name.
        endpoint: the RPC tracker and key of the board, or ``None``.
        protocol: timing protocol; ``None``: the runner's default.
        cache_dir: latency cache folder; ``None``: no cache.
        timeout_s: wall-clock limit of one measurement worker, seconds; ``None``: the runner's
            default (600 s for a TvmRunner, 900 s for an RpcRunner).
        tuning_dir: the MetaSchedule database folder (a run's ``<run_dir>/tuning/<profile>``,
            or :func:`default_tuning_dir`).
        tuning_trials_per_task: MetaSchedule trials per new fused kernel (0: no tuning).
        tuning_timeout_s: wall-clock limit of the tuning worker, seconds; ``None``:
            ``timeout_s``.

    Raises:
        ConfigError: the target does not run here and no endpoint is given (one line: the
            target and the fix), or ``tuning_trials_per_task`` is negative.
        UnknownNameError: no profile of that name.

    Example:
        >>> type(create_latency_runner("host")).__name__
        'TvmRunner'
        >>> create_latency_runner("jetson")
        Traceback (most recent call last):
        autoprune.errors.ConfigError: target jetson-orin-nano does not run on this machine: ...
    """
    profile = load_profile(profile) if isinstance(profile, str) else profile
    check_int(tuning_trials_per_task, "tuning_trials_per_task", 0)
    limit: dict[str, Any] = {} if timeout_s is None else {"timeout_s": timeout_s}
    if endpoint is not None:
        return RpcRunner(profile, endpoint, protocol=protocol, cache_dir=cache_dir, **limit)
    if not is_local_target(profile.tvm_target_spec()):
        raise ConfigError(
            f"target {profile.name} does not run on this machine: measure it on the "
            f"board with --rpc-tracker HOST:PORT --rpc-key KEY, or drop --measure"
        )
    return TvmRunner(
        profile,
        database_dir=tuning_dir if tuning_trials_per_task > 0 else None,
        tuning_trials_per_task=tuning_trials_per_task,
        tuning_timeout_s=tuning_timeout_s,
        protocol=protocol,
        cache_dir=cache_dir,
        **limit,
    )


def default_tuning_dir(profile: DeviceProfile | str) -> Path:
    """Tuning database folder kept between ``autoprune profile --measure`` calls.

    ``$XDG_CACHE_HOME/autoprune/tuning/<profile name>``, with ``~/.cache`` when
    ``XDG_CACHE_HOME`` is unset or empty. Nothing is created.

    Example:
        >>> import os
        >>> os.environ["XDG_CACHE_HOME"] = "/cache"
        >>> default_tuning_dir("local")
        PosixPath('/cache/autoprune/tuning/host')
    """
    name = (load_profile(profile) if isinstance(profile, str) else profile).name
    return cache_root() / "tuning" / name


def _float(candidate: Candidate) -> Candidate:
    """The candidate's architecture with float layers (what TVM can import)."""
    return dataclasses.replace(candidate, weight_bits=(), activation_bits=())


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
        estimator: ``"kernels"`` (per fused TVM kernel) or ``"layers"`` (per layer, no TVM).
        shared_cache_dir: kernel lists kept between runs (a search's is
            :func:`default_kernel_cache`); ``None``: only ``cache_dir``.
    """

    profile: DeviceProfile
    latency: str = "auto"
    endpoint: RpcEndpoint | None = None
    cache_dir: str | os.PathLike[str] | None = None
    timeout_s: float = 600.0
    tuning_dir: str | os.PathLike[str] | None = None
    tuning_trials_per_task: int = 4
    estimator: str = "kernels"
    shared_cache_dir: str | os.PathLike[str] | None = None

    def __post_init__(self) -> None:
        check_latency_mode(self.latency)
        if self.estimator not in ESTIMATORS:
            raise ConfigError(
                f"`hardware.estimator` must be one of {', '.join(ESTIMATORS)}, but got "
                f"{self.estimator!r}"
            )
        if self.latency == "measured" and not self.reachable:
            raise ConfigError(
                f"hardware.latency is 'measured' but target {self.profile.name} cannot be "
                f"reached from here: pass --rpc-tracker HOST:PORT --rpc-key KEY for the board, "
                f"or set hardware.latency=auto"
            )

    def estimate(self, candidate: Candidate, costs: CostReport | None = None) -> HardwareEstimate:
        """The estimated latency and energy of ``candidate`` at its input shape on the profile,
        by the coster's ``estimator`` (``costs``: its cost count, when already made)."""
        if self.estimator == "layers":
            if costs is None:
                costs = cost_report(candidate)
            return estimate_hardware(costs, self.profile)
        return estimate_with_tvm(
            candidate,
            candidate.input_shape,
            self.profile,
            cache_dir=self.cache_dir,
            shared_cache_dir=self.shared_cache_dir,
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

    def runner(self) -> LatencyRunner:
        """The target's latency runner with the current settings (:func:`create_latency_runner`).

        Made at each call: a run sets ``cache_dir`` and ``tuning_dir`` after construction.

        Raises:
            ConfigError: the target cannot be reached from here.
        """
        return create_latency_runner(
            self.profile,
            endpoint=self.endpoint,
            cache_dir=self.cache_dir,
            timeout_s=self.timeout_s,
            tuning_dir=self.tuning_dir,
            tuning_trials_per_task=self.tuning_trials_per_task,
        )

    def tune(self, candidate: Candidate) -> TuningReport | None:
        """Tune the candidate's new kernels into the shared database (``None``: no tuning).

        Raises:
            MeasurementFailed: tuning failed or ran out of time.
        """
        if not self.tunes:
            return None
        return self._prepare(self.runner(), candidate)

    def measure(self, candidate: Candidate) -> LatencyMeasurement:
        """Measured latency of the candidate's architecture (float kernels; see module doc).

        Tuned kernels are used when the run's database holds them (:meth:`tune` first).
        """
        return self.runner().measure(_float(candidate), candidate.input_shape)

    @staticmethod
    def _prepare(runner: LatencyRunner, candidate: Candidate) -> TuningReport | None:
        try:
            return runner.prepare(_float(candidate), candidate.input_shape)
        except TuningError as exc:
            raise MeasurementFailed(str(exc)) from exc

    def __call__(self, candidate: Candidate, estimate: HardwareEstimate) -> dict[str, Any]:
        """``latency_ms``, ``energy_mj``, their sources and how they were made.

        Raises:
            MeasurementFailed: latency was to be measured and the measurement failed.
        """
        if not self.measures:
            return {
                "latency_ms": estimate.latency_ms,
                "latency_source": estimate.latency_source,
                "latency_expected_error": estimate.expected_error,
                "energy_mj": estimate.energy_mj,
                "energy_source": estimate.energy_source,
                "hardware_method": estimate.method,
            }
        runner = self.runner()
        tuning = self._prepare(runner, candidate)
        measurement = runner.measure(_float(candidate), candidate.input_shape)
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


def _exact(costs: CostReport) -> dict[str, int]:
    return {"macs": costs.macs, "params": costs.params, "size_bytes": costs.size_bytes}


def candidate_costs(
    candidate: Candidate, profile: DeviceProfile, coster: HardwareCoster | None = None
) -> dict[str, Any]:
    """Exact costs of a candidate and its latency and energy on the target, as flat fields.

    Keys, in order: ``macs``, ``params``, ``size_bytes`` (exact, counted on the meta device:
    shapes only, no weights), then the coster's (``latency_ms``, ``latency_source``,
    ``energy_mj``, ``energy_source``, ``hardware_method``, and when measured
    ``latency_measurement``, ``estimated_latency_ms`` and ``tuning``). The estimate comes from
    the candidate's fused TVM kernels (:func:`estimate_with_tvm`, cached in the coster's
    ``cache_dir``); ``coster`` decides whether latency is measured instead (default: the
    estimate). Latency in ms, energy in mJ per batch-1 inference.

    Raises:
        MeasurementFailed: latency was to be measured and the build or measurement failed.
    """
    costs = cost_report(candidate)
    coster = coster or HardwareCoster(profile, latency="estimated")
    return {**_exact(costs), **coster(candidate, coster.estimate(candidate, costs))}


def model_costs(
    model: nn.Module,
    input_shape: tuple[int, int, int],
    profile: DeviceProfile,
    *,
    precision: str = "fp32",
) -> dict[str, Any]:
    """MACs, params, size_bytes and estimated latency_ms and energy_mj of a model on a target,
    run at ``precision`` (``fp32``, ``fp16``, ``int8``; see :func:`estimate_with_tvm`).

    Keys, in order: ``macs``, ``params``, ``size_bytes``, ``latency_ms``, ``latency_source``,
    ``latency_expected_error`` (fraction or ``None``), ``precision`` (as executed),
    ``energy_mj``, ``energy_source``, ``hardware_method`` (:func:`estimate_with_tvm`, no cache).
    """
    costs = count_costs(model, input_shape)
    hardware = estimate_with_tvm(model, input_shape, profile, precision=precision)
    executed = sorted({layer.precision for layer in hardware.layers})
    return {
        **_exact(costs),
        "latency_ms": hardware.latency_ms,
        "latency_source": hardware.latency_source,
        "latency_expected_error": hardware.expected_error,
        "precision": ",".join(executed) or precision,
        "energy_mj": hardware.energy_mj,
        "energy_source": hardware.energy_source,
        "hardware_method": hardware.method,
    }
