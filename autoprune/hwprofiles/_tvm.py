"""TVM backend: import a PyTorch model to Relax, build it for a profile, measure it on this host.

The path is TVM 0.27's (shared/TVM.md): ``torch.export.export`` -> ``from_exported_program`` ->
``tvm.compile`` -> ``relax.VirtualMachine``, timed with the VM's ``time_evaluator``. Builds and
measurements run in a fresh worker process with a timeout (see ``_measure.py``), so a TVM crash
or hang becomes a :class:`LatencyMeasurement` with ``error`` set.

By default the code measured here is **untuned**: TVM's default CPU pipeline fuses and
legalizes but schedules nothing, so kernels are naive loops, 5-50x slower than PyTorch eager on
this CPU. Records say so (``tuned=False``); they are no latency signal for the search. With
``database_dir=`` the kernels tuned by MetaSchedule (``_tune.py``) are applied
(``tuned=True``). ``tvm`` is imported lazily, in the worker (and by :func:`import_to_relax` and
:func:`build_for_target` when called directly).
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from autoprune.errors import ConfigError
from autoprune.hwprofiles._measure import (
    DEFAULT_TIMEOUT_S,
    LatencyMeasurement,
    MeasureProtocol,
    ModelLike,
    cache_load,
    cache_store,
    check_input_shape,
    default_threads,
    example_input,
    failed,
    fingerprint,
    from_runs,
    model_from_payload,
    model_payload,
    package_version,
    run_in_worker,
    warn_if_noisy,
)
from autoprune.hwprofiles._power import EnergyMeasurement, find_energy_sensor, measure_energy
from autoprune.hwprofiles._profile import DeviceProfile
from autoprune.hwprofiles._registry import load_profile

if TYPE_CHECKING:
    import tvm

__all__ = [
    "OutputMismatchError",
    "build_for_target",
    "check_outputs_match",
    "import_to_relax",
    "is_local_target",
    "measure_tvm_latency",
    "resolve_target",
]

_logger = logging.getLogger("autoprune.hwprofiles.tvm")

TargetSpec = str | Mapping[str, Any]


class OutputMismatchError(RuntimeError):
    """TVM's output differs from PyTorch's beyond the tolerance, or could not be computed."""


# --------------------------------------------------------------------------------------------
# import and build (in the calling process; the measuring functions call them in a worker)
# --------------------------------------------------------------------------------------------


def import_to_relax(model: nn.Module, input_shape: tuple[int, int, int]) -> tvm.IRModule:
    """Import ``model`` (set to eval mode) at batch 1 into a Relax ``IRModule``.

    ``torch.export.export(model.eval(), (randn(1, *input_shape),))`` then TVM's
    ``from_exported_program``; the module's ``main`` takes one ``(1, C, H, W)`` float32 tensor
    and returns a 1-tuple.

    Raises:
        Exception: whatever ``torch.export`` or the TVM frontend raise for an op they do not
            support (e.g. ``AssertionError: Unsupported function types ['rrelu_...']``).

    Example:
        >>> from torch import nn
        >>> mod = import_to_relax(nn.Conv2d(1, 8, 3), (1, 16, 16))
        >>> "main" in [gv.name_hint for gv in mod.get_global_vars()]
        True
    """
    import torch
    from tvm.relax.frontend.torch import from_exported_program

    shape = check_input_shape(input_shape)
    exported = torch.export.export(model.eval(), (example_input(shape),))
    return from_exported_program(exported)


def _host_arch() -> str:
    arch = platform.machine().lower()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(arch, arch)


def is_local_target(target_spec: TargetSpec) -> bool:
    """Whether code built for ``target_spec`` runs on this host's CPU.

    True for ``"llvm"`` and for a dict-form LLVM target whose ``mtriple`` (if any) names this
    machine's architecture; false for tags (``"nvidia/jetson-nano"``) and cross targets.

    Example:
        >>> is_local_target({"kind": "llvm", "mtriple": "x86_64-linux-gnu"})  # on x86_64
        True
        >>> is_local_target("nvidia/jetson-orin-nano")
        False
    """
    if isinstance(target_spec, str):
        return target_spec.strip() == "llvm"
    if target_spec.get("kind") != "llvm":
        return False
    triple = str(target_spec.get("mtriple", ""))
    return not triple or triple.split("-")[0].lower() == _host_arch()


def resolve_target(target_spec: TargetSpec) -> str | dict[str, Any]:
    """The target to build with: a local LLVM target gets this CPU's ``mcpu``.

    LLVM rejects ``mcpu=native`` with the ``x86_64-linux-gnu`` triple and the plain ``"llvm"``
    target carries a conda triple (shared/TVM.md), so the host's CPU name is asked of LLVM
    (``tvm.target.codegen.llvm_get_system_cpu()``, e.g. ``"rocketlake"``) at build time; it is
    not in the profile because it is per machine. Other targets are returned unchanged; an
    explicit ``mcpu`` is kept.

    Example:
        >>> resolve_target({"kind": "llvm", "mtriple": "x86_64-linux-gnu", "num-cores": 2})
        {'kind': 'llvm', 'mtriple': 'x86_64-linux-gnu', 'num-cores': 2, 'mcpu': 'rocketlake'}
    """
    if isinstance(target_spec, str):
        if target_spec.strip() != "llvm":
            return target_spec
        target_spec = {"kind": "llvm", "mtriple": f"{_host_arch()}-linux-gnu"}
    spec = dict(target_spec)
    if is_local_target(spec) and "mcpu" not in spec:
        import tvm

        spec["mcpu"] = tvm.target.codegen.llvm_get_system_cpu()
    return spec


def build_for_target(mod: tvm.IRModule, target_spec: TargetSpec) -> tvm.runtime.Executable:
    """Compile a Relax module with ``tvm.compile`` for ``target_spec`` (via :func:`resolve_target`).

    ``target_spec`` is a tag string or a dict-form target, as
    :meth:`DeviceProfile.tvm_target_spec` returns it (CLI strings like ``"llvm -mcpu=x"`` are
    rejected by TVM 0.27). The default pipeline is used: no tuning. A resnet20 at 1x16x16
    builds in about 1 s here.

    Example:
        >>> ex = build_for_target(import_to_relax(nn.Conv2d(1, 8, 3), (1, 16, 16)),
        ...                       load_profile("host").tvm_target_spec())
        >>> type(ex).__name__
        'VMExecutable'
    """
    import tvm

    return tvm.compile(mod, target=tvm.target.Target(resolve_target(target_spec)))


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
        from autoprune.hwprofiles._tune import build_tuned

        executable = build_tuned(mod, target, payload["database_dir"])
    else:
        executable = tvm.compile(mod, target=tvm.target.Target(target))
    device = tvm.cpu()
    vm = relax.VirtualMachine(executable, device)
    x = example_input(shape)
    return vm, device, tvm.runtime.tensor(x.numpy(), device), model, x


def _tvm_latency_job(payload: Mapping[str, Any]) -> dict[str, Any]:
    """Worker body of :func:`measure_tvm_latency`: per-repeat times (ms) and the target."""
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
# public measuring functions
# --------------------------------------------------------------------------------------------


def _local_profile(profile: DeviceProfile | str) -> DeviceProfile:
    profile = load_profile(profile) if isinstance(profile, str) else profile
    spec = profile.tvm_target_spec()
    if not is_local_target(spec):
        raise ConfigError(
            f"profile {profile.name!r} targets {spec!r}, which does not run on this "
            f"{_host_arch()} host; measured latency needs a local LLVM target (profile 'host'); "
            "use estimate_hardware() for other devices"
        )
    return profile


def _check_database_dir(database_dir: str | os.PathLike[str] | None) -> str | None:
    """The absolute tuning database folder, or ``None``; one without a database is refused."""
    if database_dir is None:
        return None
    from autoprune.hwprofiles._tune import WORKLOADS_NAME

    folder = Path(database_dir).resolve()
    if not (folder / WORKLOADS_NAME).is_file():
        raise ConfigError(
            f"`database_dir` {str(folder)!r} holds no MetaSchedule database ({WORKLOADS_NAME}); "
            "run tune_model(..., database_dir=...) first, or pass database_dir=None (untuned)"
        )
    return str(folder)


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
    """Build ``model`` with TVM for ``profile`` and measure its batch-1 latency on this host.

    Import, build and timing run in a fresh worker process limited to ``timeout_s`` seconds; an
    exception (an op the frontend rejects), a crash (segfault) or a timeout comes back as a
    record with ``error`` set, never as an exception. Without ``database_dir`` the code is
    untuned (``tuned=False``): naive loops, not a latency signal (module docstring). With it,
    the kernels tuned there by :func:`~autoprune.hwprofiles.tune_model` are applied
    (``tuned=True``; kernels without a record stay untuned). Successful records are cached
    under ``cache_dir`` keyed by the model fingerprint (candidate hash), profile name, input
    shape, protocol, target, TVM version and, when tuned, the database folder and its record
    count (more tuning, new key); a hit starts no worker.

    Args:
        model: an ``nn.Module`` (picklable: module-level classes) or a :class:`Candidate`
            (built with ``build_model(candidate, seed=0)`` in the worker).
        input_shape: ``(C, H, W)`` of one input, pixels.
        profile: a profile or its name; its target must run here (``"host"``).
        protocol: the timing protocol; default ``MeasureProtocol(threads=<profile num-cores, or
            the cores available>)``.
        cache_dir: cache folder (e.g. ``<run_dir>/hw-cache``); ``None`` disables the cache.
        timeout_s: wall-clock limit of the worker (start, import, build, timing), seconds.
        database_dir: a MetaSchedule tuning database folder (``tune_model``'s), or ``None``
            for untuned code.

    Raises:
        ConfigError: the profile's target does not run on this host, ``database_dir`` holds
            no tuning database, or a bad argument.

    Example:
        >>> from autoprune.spaces import Candidate
        >>> c = Candidate(model="resnet20", num_classes=10, in_channels=1,
        ...               input_shape=(1, 16, 16))
        >>> m = measure_tvm_latency(c, c.input_shape, "host")
        >>> m.ok, m.tuned, m.latency_ms   # untuned: about 7.4 ms here; PyTorch 0.9 ms
        (True, False, 7.36...)
    """
    shape = check_input_shape(input_shape)
    profile = _local_profile(profile)
    spec = profile.tvm_target_spec()
    if protocol is None:
        cores = spec.get("num-cores") if isinstance(spec, Mapping) else None
        protocol = MeasureProtocol(threads=int(cores) if cores else default_threads())
    database = _check_database_dir(database_dir)
    tuned = database is not None
    fields: dict[str, Any] = {
        "protocol": protocol,
        "backend": "tvm",
        "tuned": tuned,
        "profile": profile.name,
        "input_shape": shape,
    }
    key = {
        "backend": "tvm",
        "model": fingerprint(model),
        "profile": profile.name,
        "target": spec,
        "input_shape": list(shape),
        "protocol": protocol.to_dict(),
        "tuned": tuned,
        "tvm": package_version("apache-tvm"),
        "machine": _host_arch(),
    }
    if database is not None:
        from autoprune.hwprofiles._tune import record_count

        key["database"] = {"dir": database, "records": record_count(database)}
    cached = cache_load(cache_dir, key)
    if cached is not None:
        return cached
    payload = {
        "model": model_payload(model),
        "input_shape": shape,
        "target": spec,
        "protocol": protocol.to_dict(),
        "database_dir": database,
    }
    _logger.info(
        "building and timing %s on %s with TVM (%s)",
        key["model"],
        profile.name,
        "tuned" if tuned else "untuned",
    )
    ok, value = run_in_worker(
        _tvm_latency_job, payload, threads=protocol.threads, timeout_s=timeout_s
    )
    if not ok:
        _logger.warning("TVM latency measurement on %s failed: %s", profile.name, value)
        return failed(value, target=json.dumps(spec, sort_keys=True), **fields)
    energy = value.get("energy")
    measurement = from_runs(
        value["runs_ms"],
        target=value["target"],
        energy=None if energy is None else EnergyMeasurement.from_dict(energy),
        **fields,
    )
    warn_if_noisy(measurement)
    cache_store(cache_dir, key, measurement)
    return measurement


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
    ``profile`` as :func:`measure_tvm_latency` builds it (with the tuned kernels of
    ``database_dir`` when given).

    Raises:
        OutputMismatchError: the outputs are not close (``|tvm - torch| <= atol + rtol *
            |torch|`` fails somewhere), or the worker failed (exception, crash, timeout).
        ConfigError: the profile's target does not run on this host.

    Example:
        >>> check_outputs_match(nn.Conv2d(1, 8, 3), (1, 16, 16), "host")  # about 1e-7
        5.960464477539063e-08
    """
    shape = check_input_shape(input_shape)
    profile = _local_profile(profile)
    for name, value in (("rtol", rtol), ("atol", atol)):
        if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
            raise ConfigError(f"`{name}` must be a finite number >= 0, but got {value!r}")
    payload = {
        "model": model_payload(model),
        "input_shape": shape,
        "target": profile.tvm_target_spec(),
        "rtol": float(rtol),
        "atol": float(atol),
        "database_dir": _check_database_dir(database_dir),
    }
    ok, value = run_in_worker(_outputs_job, payload, threads=default_threads(), timeout_s=timeout_s)
    if not ok:
        raise OutputMismatchError(f"could not compare TVM and PyTorch outputs: {value}")
    max_abs, close = value
    if not close:
        raise OutputMismatchError(
            f"TVM and PyTorch outputs differ by up to {max_abs:.3g} (rtol={rtol}, atol={atol})"
        )
    return max_abs
