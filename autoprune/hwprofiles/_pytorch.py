"""PyTorch eager latency on this host, timed by TVM's ``time_evaluator`` rules.

The reference the TVM-built code is compared with (``autoprune profile --measure``, the
benchmarks). Runs in a worker process of its own (:mod:`._workers`) in eval mode under
``torch.no_grad``, with ``protocol.threads`` threads.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Mapping
from typing import Any

from autoprune.hwprofiles._cache import package_version
from autoprune.hwprofiles._records import LatencyMeasurement, MeasureProtocol
from autoprune.hwprofiles._runner import LatencyRunner
from autoprune.hwprofiles._workers import (
    DEFAULT_TIMEOUT_S,
    ModelLike,
    example_input,
    fingerprint,
    model_from_payload,
    model_payload,
)

__all__ = ["PyTorchRunner", "measure_pytorch_latency", "pytorch_target", "time_calls"]


def time_calls(call: Callable[[], Any], protocol: MeasureProtocol) -> list[float]:
    """Per-repeat mean time of one ``call()``, milliseconds, by TVM's ``time_evaluator`` rules.

    ``call`` must block until its result is ready (true of PyTorch on the CPU).
    """
    for _ in range(protocol.warmup):
        call()
    call()  # untimed, as time_evaluator does before its repeats
    number = protocol.number
    runs: list[float] = []
    for _ in range(protocol.repeat):
        while True:
            start = time.perf_counter()
            for _ in range(number):
                call()
            duration_ms = (time.perf_counter() - start) * 1e3
            if duration_ms >= protocol.min_repeat_ms:
                break
            per_call = max(duration_ms / number, 1e-6)
            number = max(int(protocol.min_repeat_ms / per_call) + 1, int(number * 1.618))
        runs.append(duration_ms / number)
    return runs


def pytorch_target() -> str:
    """The ``target`` string of PyTorch measurements: ``"pytorch <version> cpu"``."""
    return f"pytorch {package_version('torch')} cpu"


def _pytorch_job(payload: Mapping[str, Any]) -> dict[str, Any]:
    """Worker body of :class:`PyTorchRunner`: the per-repeat times, ms."""
    import torch

    protocol = MeasureProtocol.from_dict(payload["protocol"])
    model = model_from_payload(payload["model"])
    x = example_input(tuple(payload["input_shape"]))
    with torch.no_grad():
        runs = time_calls(lambda: model(x), protocol)
    return {"runs_ms": runs, "target": pytorch_target(), "energy": None}


class PyTorchRunner(LatencyRunner):
    """PyTorch eager on this host's CPU (``backend="pytorch"``, ``profile=None``).

    Cache key: model fingerprint (candidate hash), input shape, protocol, torch version and
    machine. :meth:`prepare` does nothing. The default protocol uses every core available.

    Example:
        >>> from torch import nn
        >>> m = PyTorchRunner(protocol=MeasureProtocol(threads=1)).measure(
        ...     nn.Conv2d(1, 8, 3), (1, 28, 28))
        >>> m.backend, m.ok, m.latency_ms > 0
        ('pytorch', True, True)
    """

    backend = "pytorch"
    job = staticmethod(_pytorch_job)
    worker = "pytorch"

    def cache_key(
        self, model: ModelLike, shape: tuple[int, int, int], protocol: MeasureProtocol
    ) -> dict[str, Any]:
        return {
            "backend": "pytorch",
            "model": fingerprint(model),
            "input_shape": list(shape),
            "protocol": protocol.to_dict(),
            "target": pytorch_target(),
            "machine": platform.machine(),
        }

    def payload(
        self, model: ModelLike, shape: tuple[int, int, int], protocol: MeasureProtocol
    ) -> dict[str, Any]:
        return {"model": model_payload(model), "input_shape": shape, "protocol": protocol.to_dict()}

    def failure_target(self) -> str:
        return pytorch_target()

    def describe(self) -> str:
        return "PyTorch"


def measure_pytorch_latency(
    model: ModelLike,
    input_shape: tuple[int, int, int],
    *,
    protocol: MeasureProtocol | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> LatencyMeasurement:
    """``PyTorchRunner(protocol=..., cache_dir=..., timeout_s=...).measure(model, input_shape)``."""
    runner = PyTorchRunner(protocol=protocol, cache_dir=cache_dir, timeout_s=timeout_s)
    return runner.measure(model, input_shape)
