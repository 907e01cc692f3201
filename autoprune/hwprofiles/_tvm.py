"""TVM-built code on this host: :class:`TvmRunner`, and the check that TVM computes as PyTorch.

Import, build and timing run in a kept worker process with a timeout (:mod:`._workers`), so a
TVM crash or hang becomes a :class:`LatencyMeasurement` with ``error`` set. Without a tuning
database the code measured is **untuned**: TVM's default CPU pipeline fuses and legalizes but
schedules nothing, so kernels are naive loops and records say so (``tuned=False``); they are no
latency signal for the search (``docs/tvm.md``). With a database the kernels tuned there by
MetaSchedule (:mod:`._tune`) are applied (``tuned=True``).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from typing import Any

from torch import nn

from autoprune.errors import ConfigError
from autoprune.hwprofiles._cache import package_version
from autoprune.hwprofiles._database import check_database_dir, record_count
from autoprune.hwprofiles._power import find_energy_sensor, measure_energy
from autoprune.hwprofiles._profile import DeviceProfile
from autoprune.hwprofiles._records import (
    LatencyMeasurement,
    MeasureProtocol,
    check_input_shape,
    default_threads,
)
from autoprune.hwprofiles._relax import (
    host_arch,
    import_to_relax,
    local_profile,
    profile_threads,
    resolve_target,
)
from autoprune.hwprofiles._runner import LatencyRunner
from autoprune.hwprofiles._tune import TuningReport, build_tuned, tune_model
from autoprune.hwprofiles._workers import (
    DEFAULT_TIMEOUT_S,
    ModelLike,
    example_input,
    fingerprint,
    model_from_payload,
    model_payload,
    run_in_worker,
)

__all__ = [
    "OutputMismatchError",
    "TvmRunner",
    "check_outputs_match",
    "measure_tvm_latency",
]


class OutputMismatchError(RuntimeError):
    """TVM's output differs from PyTorch's beyond the tolerance, or could not be computed."""


# --------------------------------------------------------------------------------------------
# worker jobs
# --------------------------------------------------------------------------------------------


def _build_local(payload: Mapping[str, Any]) -> tuple[Any, Any, Any, nn.Module, Any]:
    """Import, build and load on this CPU: ``(vm, device, tvm input, model, torch input)``."""
    import tvm
    from tvm import relax

    shape = tuple(payload["input_shape"])
    model = model_from_payload(payload["model"])
    target = resolve_target(payload["target"])
    mod = import_to_relax(model, shape)
    if payload.get("database_dir") is not None:
        executable = build_tuned(mod, target, payload["database_dir"])
    else:
        executable = tvm.compile(mod, target=tvm.target.Target(target))
    device = tvm.cpu()
    vm = relax.VirtualMachine(executable, device)
    x = example_input(shape)
    return vm, device, tvm.runtime.tensor(x.numpy(), device), model, x


def _tvm_latency_job(payload: Mapping[str, Any]) -> dict[str, Any]:
    """Worker body of :class:`TvmRunner`: per-repeat times (ms), the built target, energy."""
    import tvm

    protocol = MeasureProtocol.from_dict(payload["protocol"])
    vm, device, x, _, _ = _build_local(payload)
    for _ in range(protocol.warmup):
        vm["main"](x)
    timer = vm.time_evaluator(
        "main",
        device,
        number=protocol.number,
        repeat=protocol.repeat,
        min_repeat_ms=int(protocol.min_repeat_ms),
    )
    result = timer(x)
    target = str(tvm.target.Target(resolve_target(payload["target"])))
    energy = None
    sensor = find_energy_sensor("cpu")  # local code runs on this CPU; absent in VMs and CI
    if sensor is not None:
        energy = measure_energy(lambda: vm["main"](x), sensor).to_dict()
    return {"runs_ms": [float(s) * 1e3 for s in result.results], "target": target, "energy": energy}


def _outputs_job(payload: Mapping[str, Any]) -> tuple[float, bool]:
    """Worker body of :func:`check_outputs_match`: max abs difference, and ``allclose``."""
    import numpy as np
    import torch

    vm, _, x_tvm, model, x = _build_local(payload)
    out = vm["main"](x_tvm)
    got = (out[0] if not hasattr(out, "numpy") else out).numpy()
    with torch.no_grad():
        want = model(x).numpy()
    if got.shape != want.shape:
        raise ValueError(f"TVM output shape {got.shape} != PyTorch output shape {want.shape}")
    if not np.isfinite(got).all():
        raise ValueError("TVM output holds NaN or inf")
    max_abs = float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64))))
    return max_abs, bool(np.allclose(got, want, rtol=payload["rtol"], atol=payload["atol"]))


# --------------------------------------------------------------------------------------------
# the runner
# --------------------------------------------------------------------------------------------


class TvmRunner(LatencyRunner):
    """TVM-built code for a profile whose target runs on this host's CPU (``backend="tvm"``).

    :meth:`prepare` tunes the model's kernels that the database lacks with MetaSchedule
    (:func:`~autoprune.hwprofiles.tune_model`, ``tuning_trials_per_task`` trials per fused
    kernel, at most ``1000 *`` that in all) when a database folder is given and
    ``tuning_trials_per_task > 0``; otherwise it does nothing. :meth:`measure` builds with the
    database's tuned kernels whenever ``database_dir`` is given (``tuned=True``; kernels without
    a record stay untuned), else untuned. Records carry the energy read from RAPL while the code
    ran, where RAPL can be read.

    Cache key: model fingerprint (candidate hash), profile name, target, input shape, protocol,
    ``tuned``, TVM version and machine, and when tuned the database folder and its record count
    (more tuning, new key).

    Args:
        profile: a profile or its name; its target must run here (``"host"``).
        database_dir: the run's MetaSchedule database folder (``<run_dir>/tuning/<profile>``),
            or ``None`` for untuned code. It must hold a database by the time of
            :meth:`measure` (:meth:`prepare` creates it).
        tuning_trials_per_task: trials per new fused kernel in :meth:`prepare` (0: no tuning).
        tuning_timeout_s: wall-clock limit of the tuning worker, seconds (default
            ``timeout_s``).
        protocol, cache_dir, timeout_s: as for :class:`LatencyRunner`; the default protocol
            uses the profile's ``num-cores`` threads (else the cores available).

    Raises:
        ConfigError: the profile's target does not run on this host.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU())  # or a Candidate
        >>> m = TvmRunner("host").measure(net, (1, 16, 16))
        >>> m.ok, m.tuned, m.backend, m.latency_ms > 0
        (True, False, 'tvm', True)
    """

    backend = "tvm"
    job = staticmethod(_tvm_latency_job)

    def __init__(
        self,
        profile: DeviceProfile | str,
        *,
        database_dir: str | os.PathLike[str] | None = None,
        tuning_trials_per_task: int = 0,
        tuning_timeout_s: float | None = None,
        protocol: MeasureProtocol | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        super().__init__(protocol=protocol, cache_dir=cache_dir, timeout_s=timeout_s)
        self.profile = local_profile(profile)
        self.database_dir = database_dir
        self.tuning_trials_per_task = tuning_trials_per_task
        self.tuning_timeout_s = tuning_timeout_s

    @property
    def tunes(self) -> bool:
        """Whether :meth:`prepare` tunes (a database folder and trials per task > 0)."""
        return self.database_dir is not None and self.tuning_trials_per_task > 0

    @property
    def tuned(self) -> bool:
        return self.database_dir is not None

    @property
    def profile_name(self) -> str | None:
        return self.profile.name

    def prepare(self, model: ModelLike, input_shape: tuple[int, int, int]) -> TuningReport | None:
        """Tune ``model``'s new kernels into the database; ``None`` when this runner does not
        tune (see the class docstring).

        Raises:
            TuningError: the tuning worker failed (exception, crash or timeout).
        """
        if not self.tunes:
            return None
        trials = self.tuning_trials_per_task
        return tune_model(
            model,
            input_shape,
            self.profile,
            database_dir=self.database_dir,  # type: ignore[arg-type]
            max_trials=trials * 1000,
            trials_per_task=trials,
            timeout_s=self.timeout_s if self.tuning_timeout_s is None else self.tuning_timeout_s,
        )

    def default_protocol(self) -> MeasureProtocol:
        return MeasureProtocol(threads=profile_threads(self.profile))

    def cache_key(
        self, model: ModelLike, shape: tuple[int, int, int], protocol: MeasureProtocol
    ) -> dict[str, Any]:
        database = check_database_dir(self.database_dir)
        key: dict[str, Any] = {
            "backend": "tvm",
            "model": fingerprint(model),
            "profile": self.profile.name,
            "target": self.profile.tvm_target_spec(),
            "input_shape": list(shape),
            "protocol": protocol.to_dict(),
            "tuned": self.tuned,
            "tvm": package_version("apache-tvm"),
            "machine": host_arch(),
        }
        if database is not None:
            key["database"] = {"dir": database, "records": record_count(database)}
        return key

    def payload(
        self, model: ModelLike, shape: tuple[int, int, int], protocol: MeasureProtocol
    ) -> dict[str, Any]:
        return {
            "model": model_payload(model),
            "input_shape": shape,
            "target": self.profile.tvm_target_spec(),
            "protocol": protocol.to_dict(),
            "database_dir": check_database_dir(self.database_dir),
        }

    def failure_target(self) -> str:
        return json.dumps(self.profile.tvm_target_spec(), sort_keys=True)

    def describe(self) -> str:
        return f"TVM on {self.profile.name} ({'tuned' if self.tuned else 'untuned'})"


def measure_tvm_latency(
    model: ModelLike,
    input_shape: tuple[int, int, int],
    profile: DeviceProfile | str,
    *,
    protocol: MeasureProtocol | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    database_dir: str | os.PathLike[str] | None = None,
) -> LatencyMeasurement:
    """``TvmRunner(profile, database_dir=..., protocol=..., cache_dir=..., timeout_s=...)
    .measure(model, input_shape)``: no tuning, the database's tuned kernels when given."""
    runner = TvmRunner(
        profile,
        database_dir=database_dir,
        protocol=protocol,
        cache_dir=cache_dir,
        timeout_s=timeout_s,
    )
    return runner.measure(model, input_shape)


def check_outputs_match(
    model: ModelLike,
    input_shape: tuple[int, int, int],
    profile: DeviceProfile | str,
    *,
    rtol: float = 1e-4,
    atol: float = 1e-4,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    database_dir: str | os.PathLike[str] | None = None,
) -> float:
    """Max absolute difference between TVM's and PyTorch's outputs on ``randn(1, *input_shape)``.

    Both run in one worker process (eval mode, seed-0 input); the TVM side is built for
    ``profile`` as :class:`TvmRunner` builds it (with the tuned kernels of ``database_dir``
    when given).

    Raises:
        OutputMismatchError: the outputs are not close (``|tvm - torch| <= atol + rtol *
            |torch|`` fails somewhere), or the worker failed (exception, crash, timeout).
        ConfigError: the profile's target does not run on this host.

    Example:
        >>> check_outputs_match(nn.Conv2d(1, 8, 3), (1, 16, 16), "host") < 1e-5
        True
    """
    shape = check_input_shape(input_shape)
    profile = local_profile(profile)
    for name, value in (("rtol", rtol), ("atol", atol)):
        if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
            raise ConfigError(f"`{name}` must be a finite number >= 0, but got {value!r}")
    payload = {
        "model": model_payload(model),
        "input_shape": shape,
        "target": profile.tvm_target_spec(),
        "rtol": float(rtol),
        "atol": float(atol),
        "database_dir": check_database_dir(database_dir),
    }
    ok, value = run_in_worker(
        _outputs_job, payload, threads=default_threads(), timeout_s=timeout_s, keep="tvm"
    )
    if not ok:
        raise OutputMismatchError(f"could not compare TVM and PyTorch outputs: {value}")
    max_abs, close = value
    if not close:
        raise OutputMismatchError(
            f"TVM and PyTorch outputs differ by up to {max_abs:.3g} (rtol={rtol}, atol={atol})"
        )
    return max_abs
