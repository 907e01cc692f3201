"""Measured latency on a board behind a TVM RPC tracker.

The model is built here for the profile's target (cross-built for a board: CUDA kernels through
nvcc, aarch64 host code through the Debian cross compiler, :mod:`._library`), uploaded to an RPC
server registered with the tracker under ``key``, and timed there with TVM's time evaluator
under the same :class:`MeasureProtocol` as local measurements. The whole job runs in a worker
process with a timeout, so an unreachable tracker, a missing board or a crash becomes a
:class:`LatencyMeasurement` with ``error`` set.

Serving a board (on the board, with TVM's runtime installed)::

    python -m tvm.exec.rpc_tracker --host 0.0.0.0 --port 9190            # anywhere reachable
    python -m tvm.exec.rpc_server --tracker TRACKER:9190 --key orin-nano # on the board

or, to have energy measured from the board's power rails too (:mod:`._board`)::

    autoprune board --rpc-tracker TRACKER:9190 --rpc-key orin-nano       # on the board

Example:
    >>> endpoint = RpcEndpoint.parse("127.0.0.1:9190", key="host")
    >>> m = measure_rpc_latency(candidate, candidate.input_shape, "host", endpoint)
    >>> m.ok, m.source
    (True, 'measured')
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autoprune.errors import ConfigError
from autoprune.hwprofiles._board import ENERGY_FUNCTION, JetsonRailSensor
from autoprune.hwprofiles._measure import (
    LatencyMeasurement,
    MeasureProtocol,
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
)
from autoprune.hwprofiles._power import EnergyMeasurement
from autoprune.hwprofiles._profile import DeviceProfile
from autoprune.hwprofiles._registry import load_profile

__all__ = ["RpcEndpoint", "measure_rpc_latency"]

_logger = logging.getLogger("autoprune.hwprofiles")
_ADDRESS = re.compile(r"^\s*([A-Za-z0-9_.\-]+|\[[0-9a-fA-F:]+\]):([0-9]{1,5})\s*$")


@dataclass(frozen=True)
class RpcEndpoint:
    """A TVM RPC tracker (``host``, ``port``) and the ``key`` its board registered under.

    ``session_timeout_s`` bounds one remote session (upload, load, timing), seconds.
    """

    host: str
    port: int
    key: str
    session_timeout_s: float = 600.0

    @classmethod
    def parse(cls, tracker: str, *, key: str) -> RpcEndpoint:
        """``"HOST:PORT"`` and a key -> endpoint; a malformed address is a ConfigError."""
        match = _ADDRESS.match(tracker)
        if match is None or not 0 < int(match.group(2)) < 65536:
            raise ConfigError(
                f"--rpc-tracker {tracker!r} is not HOST:PORT; write e.g. 127.0.0.1:9190"
            )
        if not key or not key.strip():
            raise ConfigError(
                "--rpc-key must name the key the board's RPC server registered "
                "with (python -m tvm.exec.rpc_server --key KEY)"
            )
        return cls(host=match.group(1).strip("[]"), port=int(match.group(2)), key=key.strip())

    def describe(self) -> str:
        return f"{self.key}@{self.host}:{self.port}"


def _remote_device(remote: Any, target: Any) -> Any:
    kind = target.kind.name
    if kind == "cuda":
        return remote.cuda(0)
    if kind == "llvm":
        return remote.cpu(0)
    raise ValueError(f"no RPC device for target kind {kind!r}")


def _rpc_latency_job(payload: Mapping[str, Any]) -> dict[str, Any]:
    """Worker body: build here, upload, time on the board; per-repeat times in ms."""
    import tvm
    from tvm import relax, rpc

    from autoprune.hwprofiles._library import write_library
    from autoprune.hwprofiles._tvm import build_for_target, import_to_relax

    shape = tuple(payload["input_shape"])
    protocol = MeasureProtocol.from_dict(payload["protocol"])
    model = model_from_payload(payload["model"])
    spec = payload["target"]
    executable = build_for_target(import_to_relax(model, shape), spec)
    target = tvm.target.Target(spec)
    with tempfile.TemporaryDirectory(prefix="autoprune-rpc-") as folder:
        library = write_library(executable, spec, Path(folder))
        if library.suffix != ".so":
            raise RuntimeError(
                f"no linked library for {spec!r}: install the cross compiler "
                f"(apt-get install g++-aarch64-linux-gnu)"
            )
        endpoint = payload["endpoint"]
        tracker = rpc.connect_tracker(endpoint["host"], endpoint["port"])
        remote = tracker.request(
            endpoint["key"], priority=1, session_timeout=int(endpoint["session_timeout_s"])
        )
        remote.upload(str(library))
        module = remote.load_module(library.name)
    device = _remote_device(remote, target)
    vm = relax.VirtualMachine(module, device)
    x = tvm.runtime.tensor(example_input(shape).numpy(), device)
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
    return {
        "runs_ms": [float(s) * 1e3 for s in result.results],
        "target": str(target),
        "energy": _board_energy(remote, vm, device, x, protocol),
    }


def _board_energy(
    remote: Any, vm: Any, device: Any, x: Any, protocol: MeasureProtocol
) -> dict[str, Any] | None:
    """Energy per call from the board's rails (``autoprune board``), or ``None`` without them.

    The board's cumulative energy is read before and after a window of at least one second of
    back-to-back calls: mean power over the window times the mean time of one call.
    """
    try:
        read_mj = remote.get_function(ENERGY_FUNCTION)
    except Exception:  # noqa: BLE001 - a plain TVM server has no such function
        return None
    if read_mj is None or read_mj() < 0:  # no function, or a board without readable rails
        return None
    window = vm.time_evaluator("main", device, number=protocol.number, repeat=1, min_repeat_ms=1000)
    start_mj, start_s = read_mj(), time.perf_counter()
    per_call_s = window(x).mean
    seconds = time.perf_counter() - start_s
    power_w = (read_mj() - start_mj) / 1e3 / seconds
    return EnergyMeasurement(
        energy_mj=power_w * per_call_s * 1e3,
        power_w=power_w,
        sensor=JetsonRailSensor.name,
        calls=max(1, int(seconds / per_call_s)),
        seconds=seconds,
    ).to_dict()


def measure_rpc_latency(
    model: Any,
    input_shape: tuple[int, int, int],
    profile: DeviceProfile | str,
    endpoint: RpcEndpoint,
    *,
    protocol: MeasureProtocol | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    timeout_s: float = 900.0,
) -> LatencyMeasurement:
    """Build ``model`` for ``profile`` here and time it on the board behind ``endpoint``.

    Args:
        model: an ``nn.Module`` (module-level classes) or a :class:`~autoprune.spaces.Candidate`.
        input_shape: ``(C, H, W)`` of one input, pixels.
        profile: the board's profile (its TVM target is the build target).
        endpoint: tracker address and key.
        protocol: timing protocol; default ``MeasureProtocol(threads=<cores here>)`` (``threads``
            is recorded; the board's runtime uses its own thread pool).
        cache_dir: cache folder; a hit (same model, profile, target, shape, protocol, key, TVM
            version) contacts no board.
        timeout_s: wall-clock limit of the worker (build, upload, timing), seconds.
    """
    shape = check_input_shape(input_shape)
    profile = load_profile(profile) if isinstance(profile, str) else profile
    spec = profile.tvm_target_spec()
    if isinstance(spec, dict) and spec.get("kind") == "llvm":
        from autoprune.hwprofiles._tvm import resolve_target

        spec = resolve_target(spec)  # a host-like board: its mcpu is this CPU's (loopback)
    protocol = protocol or MeasureProtocol(threads=default_threads())
    fields: dict[str, Any] = {
        "protocol": protocol,
        "backend": "tvm",
        "tuned": False,
        "profile": profile.name,
        "input_shape": shape,
    }
    key = {
        "backend": "tvm-rpc",
        "model": fingerprint(model),
        "profile": profile.name,
        "target": spec,
        "rpc_key": endpoint.key,
        "input_shape": list(shape),
        "protocol": protocol.to_dict(),
        "tuned": False,
        "tvm": package_version("apache-tvm"),
    }
    cached = cache_load(cache_dir, key)
    if cached is not None:
        return cached
    payload = {
        "model": model_payload(model),
        "input_shape": shape,
        "target": spec,
        "protocol": protocol.to_dict(),
        "endpoint": {
            "host": endpoint.host,
            "port": endpoint.port,
            "key": endpoint.key,
            "session_timeout_s": endpoint.session_timeout_s,
        },
    }
    _logger.info("building for %s and timing on %s over RPC", profile.name, endpoint.describe())
    ok, value = run_in_worker(
        _rpc_latency_job, payload, threads=protocol.threads, timeout_s=timeout_s
    )
    if not ok:
        _logger.warning("RPC latency measurement on %s failed: %s", endpoint.describe(), value)
        return failed(value, target=str(spec), **fields)
    target = f"{value['target']} via rpc {endpoint.describe()}"
    energy = value.get("energy")
    measurement = from_runs(
        value["runs_ms"],
        target=target,
        energy=EnergyMeasurement.from_dict(energy) if energy else None,
        **fields,
    )
    cache_store(cache_dir, key, measurement)
    return measurement
