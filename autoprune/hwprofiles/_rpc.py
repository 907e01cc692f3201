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

    autoprune board --rpc-tracker TRACKER:9190 --rpc-key orin-nano --host 0.0.0.0  # on the board

TVM RPC has no authentication: whoever reaches the tracker's or the server's port can run code on
the board, so both belong on a trusted network (``autoprune board`` listens on 127.0.0.1 unless
``--host`` says otherwise).

Example:
    >>> endpoint = RpcEndpoint.parse("127.0.0.1:9190", key="orin-nano")
    >>> endpoint.describe()
    'orin-nano@127.0.0.1:9190'

    With a tracker there and a board registered under the key (``tests/hwprofiles/
    test_hwprofiles_rpc.py`` starts both on loopback)::

        m = RpcRunner("jetson-orin-nano", endpoint).measure(candidate, candidate.input_shape)
        m.ok, m.source  # (True, 'measured')
"""

from __future__ import annotations

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
from autoprune.hwprofiles._cache import package_version
from autoprune.hwprofiles._library import write_library
from autoprune.hwprofiles._power import EnergyMeasurement
from autoprune.hwprofiles._profile import DeviceProfile
from autoprune.hwprofiles._records import LatencyMeasurement, MeasureProtocol
from autoprune.hwprofiles._registry import load_profile
from autoprune.hwprofiles._relax import build_for_target, import_to_relax, resolve_target
from autoprune.hwprofiles._runner import LatencyRunner
from autoprune.hwprofiles._workers import (
    ModelLike,
    example_input,
    fingerprint,
    model_from_payload,
    model_payload,
)

__all__ = ["RPC_TIMEOUT_S", "RpcEndpoint", "RpcRunner", "measure_rpc_latency"]

#: Default wall-clock limit of one RPC measurement (build here, upload, timing), seconds.
RPC_TIMEOUT_S = 900.0
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


class RpcRunner(LatencyRunner):
    """TVM-built code timed on the board behind an RPC tracker (``backend="tvm"``, untuned).

    The model is built here for the profile's target (a host-like LLVM board gets this CPU's
    ``mcpu``: a loopback server), uploaded and timed on the board; energy comes from the
    board's rails when its server offers them (``autoprune board``). :meth:`prepare` does
    nothing: MetaSchedule over RPC is not wired, so records say ``tuned=False``.

    Cache key: model fingerprint (candidate hash), profile name, target, RPC key, input shape,
    protocol and TVM version; a hit contacts no board.

    Args:
        profile: the board's profile or its name (its TVM target is the build target).
        endpoint: tracker address and key.
        protocol, cache_dir, timeout_s: as for :class:`LatencyRunner` (``timeout_s`` covers
            build, upload and timing); the default protocol's ``threads`` (the cores here) is
            recorded, the board's runtime uses its own thread pool.
    """

    backend = "tvm"
    job = staticmethod(_rpc_latency_job)

    def __init__(
        self,
        profile: DeviceProfile | str,
        endpoint: RpcEndpoint,
        *,
        protocol: MeasureProtocol | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        timeout_s: float = RPC_TIMEOUT_S,
    ) -> None:
        super().__init__(protocol=protocol, cache_dir=cache_dir, timeout_s=timeout_s)
        self.profile = load_profile(profile) if isinstance(profile, str) else profile
        self.endpoint = endpoint
        self._target: str | dict[str, Any] | None = None

    @property
    def target_spec(self) -> str | dict[str, Any]:
        """The build target: the profile's, with this CPU's ``mcpu`` for a dict LLVM target."""
        if self._target is None:
            spec = self.profile.tvm_target_spec()
            if isinstance(spec, dict) and spec.get("kind") == "llvm":
                spec = resolve_target(spec)  # a host-like board: its mcpu is this CPU's
            self._target = spec
        return self._target

    @property
    def profile_name(self) -> str | None:
        return self.profile.name

    def cache_key(
        self, model: ModelLike, shape: tuple[int, int, int], protocol: MeasureProtocol
    ) -> dict[str, Any]:
        return {
            "backend": "tvm-rpc",
            "model": fingerprint(model),
            "profile": self.profile.name,
            "target": self.target_spec,
            "rpc_key": self.endpoint.key,
            "input_shape": list(shape),
            "protocol": protocol.to_dict(),
            "tuned": False,
            "tvm": package_version("apache-tvm"),
        }

    def payload(
        self, model: ModelLike, shape: tuple[int, int, int], protocol: MeasureProtocol
    ) -> dict[str, Any]:
        endpoint = self.endpoint
        return {
            "model": model_payload(model),
            "input_shape": shape,
            "target": self.target_spec,
            "protocol": protocol.to_dict(),
            "endpoint": {
                "host": endpoint.host,
                "port": endpoint.port,
                "key": endpoint.key,
                "session_timeout_s": endpoint.session_timeout_s,
            },
        }

    def failure_target(self) -> str:
        return str(self.target_spec)

    def measured_target(self, answer: Mapping[str, Any]) -> str:
        return f"{answer['target']} via rpc {self.endpoint.describe()}"

    def describe(self) -> str:
        return f"TVM on {self.profile.name} over RPC ({self.endpoint.describe()})"


def measure_rpc_latency(
    model: ModelLike,
    input_shape: tuple[int, int, int],
    profile: DeviceProfile | str,
    endpoint: RpcEndpoint,
    *,
    protocol: MeasureProtocol | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    timeout_s: float = RPC_TIMEOUT_S,
) -> LatencyMeasurement:
    """``RpcRunner(profile, endpoint, protocol=..., cache_dir=..., timeout_s=...)
    .measure(model, input_shape)``."""
    runner = RpcRunner(
        profile, endpoint, protocol=protocol, cache_dir=cache_dir, timeout_s=timeout_s
    )
    return runner.measure(model, input_shape)
