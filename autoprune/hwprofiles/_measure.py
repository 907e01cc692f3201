"""Measured latency: the protocol and record, PyTorch timing, worker processes and the disk cache.

Every measurement runs in a fresh worker process (``multiprocessing`` "spawn" context) with a
timeout, so a crash (a segfault in a compiler), a hang or an exception in the worker becomes a
:class:`LatencyMeasurement` whose ``error`` says what happened, never an exception that kills the
caller. A fresh process also keeps timings clean: PyTorch timed right after TVM ran in the same
process was 2-10x slow once (shared/TVM.md).

The TVM side (:func:`~autoprune.hwprofiles.measure_tvm_latency`) lives in ``_tvm.py``; this
module holds what both backends share.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import multiprocessing
import os
import pickle
import platform
import statistics
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

from torch import nn

from autoprune.errors import ConfigError
from autoprune.hwprofiles._power import EnergyMeasurement
from autoprune.spaces import Candidate

__all__ = [
    "LatencyMeasurement",
    "MeasureProtocol",
    "measure_pytorch_latency",
]

_logger = logging.getLogger("autoprune.hwprofiles.measure")

#: Default wall-clock limit of one worker process (interpreter start, imports, build, timing), s.
DEFAULT_TIMEOUT_S = 600.0

ModelLike = nn.Module | Candidate


# --------------------------------------------------------------------------------------------
# records
# --------------------------------------------------------------------------------------------


def _check_int(value: object, what: str, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"`{what}` must be an integer >= {minimum}, but got {value!r}")


@dataclass(frozen=True, kw_only=True)
class MeasureProtocol:
    """How a latency was measured; recorded with every :class:`LatencyMeasurement`.

    The protocol is TVM's ``time_evaluator`` (the one MetaSchedule's runner uses), applied the
    same way to PyTorch: ``warmup`` untimed calls, then ``repeat`` timed repeats; each repeat runs
    the model ``number`` times back to back and records the mean time of one call. When a repeat
    takes less than ``min_repeat_ms``, ``number`` is raised (to ``max(min_repeat_ms / per-call
    time + 1, 1.618 * number)``) and the repeat is taken again, so short models are timed over
    at least ``min_repeat_ms`` per repeat.

    Attributes:
        warmup: untimed calls before the first repeat (caches, lazy initialisation).
        number: calls per repeat (a floor; raised as above).
        repeat: timed repeats; the reported latency is their median.
        min_repeat_ms: minimum duration of one repeat, milliseconds (TVM takes it as an integer:
            fractions are dropped there).
        threads: CPU threads the model may use (``TVM_NUM_THREADS``, ``torch.set_num_threads``).

    Example:
        >>> MeasureProtocol(threads=2)
        MeasureProtocol(warmup=1, number=10, repeat=5, min_repeat_ms=50.0, threads=2)
    """

    warmup: int = 1
    number: int = 10
    repeat: int = 5
    min_repeat_ms: float = 50.0
    threads: int

    def __post_init__(self) -> None:
        _check_int(self.warmup, "warmup", 0)
        _check_int(self.number, "number", 1)
        _check_int(self.repeat, "repeat", 1)
        _check_int(self.threads, "threads", 1)
        ms = self.min_repeat_ms
        if isinstance(ms, bool) or not isinstance(ms, int | float) or not 0 <= ms < math.inf:
            raise ConfigError(f"`min_repeat_ms` must be a number >= 0, but got {ms!r}")
        object.__setattr__(self, "min_repeat_ms", float(ms))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; ``MeasureProtocol.from_dict(p.to_dict()) == p``."""
        return {
            "warmup": self.warmup,
            "number": self.number,
            "repeat": self.repeat,
            "min_repeat_ms": self.min_repeat_ms,
            "threads": self.threads,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MeasureProtocol:
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`ConfigError`."""
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise ConfigError(
                f"unknown measure protocol key(s) {unknown}; valid keys: {', '.join(names)}"
            )
        return cls(**dict(data))


def default_threads() -> int:
    """CPU cores this process may run on (its affinity mask), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True, kw_only=True)
class LatencyMeasurement:
    """A latency measured on this machine, or the reason it could not be.

    Attributes:
        latency_ms: median over the repeats of the mean time of one batch-1 call,
            milliseconds; NaN when ``error`` is set.
        spread_ms: ``max - min`` over the repeats, milliseconds (the full range, not the IQR);
            NaN when ``error`` is set.
        runs_ms: the per-repeat times, milliseconds, in the order taken (empty on error).
        protocol: how it was measured.
        backend: ``"tvm"`` (TVM-compiled code) or ``"pytorch"`` (PyTorch eager, ``no_grad``).
        target: the TVM target the code was built for, as TVM prints it (with the host
            ``mcpu``), or ``"pytorch <version> cpu"``.
        source: always ``"measured"`` (estimates are :class:`HardwareEstimate`).
        tuned: whether the TVM kernels were tuned (MetaSchedule). Untuned TVM code on a CPU is
            naive loops, 5-50x slower than PyTorch (shared/TVM.md): not a latency signal.
        input_shape: ``(C, H, W)`` of the batch-1 input, pixels.
        profile: device profile name (``None`` for PyTorch, which runs on this host).
        error: why no latency came back (exception, crash, timeout), else ``None``.
        energy: energy per call read from a hardware counter while the code ran (RAPL on x86,
            NVML on NVIDIA GPUs; :mod:`._power`), or ``None`` where no sensor can be read.

    Example:
        >>> m = LatencyMeasurement(latency_ms=1.5, spread_ms=0.2, runs_ms=(1.5, 1.4, 1.6),
        ...     protocol=MeasureProtocol(threads=2), backend="pytorch", target="pytorch 2.14 cpu",
        ...     input_shape=(1, 28, 28))
        >>> LatencyMeasurement.from_dict(m.to_dict()) == m
        True
    """

    latency_ms: float
    spread_ms: float
    runs_ms: tuple[float, ...]
    protocol: MeasureProtocol
    backend: Literal["tvm", "pytorch"]
    target: str
    input_shape: tuple[int, int, int]
    source: Literal["measured"] = "measured"
    tuned: bool = False
    profile: str | None = None
    error: str | None = None
    energy: EnergyMeasurement | None = None

    @property
    def ok(self) -> bool:
        """``True`` when a latency was measured (no ``error``)."""
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        """Strict-JSON dict (NaN becomes ``None``); :meth:`from_dict` inverts it."""

        def number(x: float) -> float | None:
            return None if math.isnan(x) else x

        return {
            "latency_ms": number(self.latency_ms),
            "spread_ms": number(self.spread_ms),
            "runs_ms": list(self.runs_ms),
            "protocol": self.protocol.to_dict(),
            "backend": self.backend,
            "target": self.target,
            "source": self.source,
            "tuned": self.tuned,
            "profile": self.profile,
            "input_shape": list(self.input_shape),
            "error": self.error,
            "energy": None if self.energy is None else self.energy.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LatencyMeasurement:
        """Inverse of :meth:`to_dict`."""

        def number(x: float | None) -> float:
            return math.nan if x is None else float(x)

        return cls(
            latency_ms=number(data["latency_ms"]),
            spread_ms=number(data["spread_ms"]),
            runs_ms=tuple(float(x) for x in data["runs_ms"]),
            protocol=MeasureProtocol.from_dict(data["protocol"]),
            backend=data["backend"],
            target=data["target"],
            source=data.get("source", "measured"),
            tuned=bool(data.get("tuned", False)),
            profile=data.get("profile"),
            input_shape=tuple(data["input_shape"]),  # type: ignore[arg-type]
            error=data.get("error"),
            energy=EnergyMeasurement.from_dict(data["energy"]) if data.get("energy") else None,
        )


def from_runs(runs_ms: list[float] | tuple[float, ...], **fields: Any) -> LatencyMeasurement:
    """A successful measurement from its per-repeat times (median and max - min)."""
    runs = tuple(float(r) for r in runs_ms)
    return LatencyMeasurement(
        latency_ms=statistics.median(runs), spread_ms=max(runs) - min(runs), runs_ms=runs, **fields
    )


def warn_if_noisy(measurement: LatencyMeasurement) -> None:
    """Log a warning when the repeats spread over more than half the median.

    On 2 shared cores, PyTorch with 2 threads ran 140x slower (0.87 -> 121 ms) while another
    process held one core: its OpenMP threads wait for each other. Such a record is not wrong as
    data (the spread says so), but it should not pass unnoticed.
    """
    if measurement.ok and measurement.spread_ms > 0.5 * measurement.latency_ms:
        _logger.warning(
            "noisy %s measurement: repeats spread over %.3g ms around a median of %.3g ms; "
            "is another process using the cores? (protocol threads=%d)",
            measurement.backend,
            measurement.spread_ms,
            measurement.latency_ms,
            measurement.protocol.threads,
        )


def failed(error: str, **fields: Any) -> LatencyMeasurement:
    """An error record: no latency, ``error`` set."""
    return LatencyMeasurement(
        latency_ms=math.nan, spread_ms=math.nan, runs_ms=(), error=error, **fields
    )


# --------------------------------------------------------------------------------------------
# models in worker processes
# --------------------------------------------------------------------------------------------


def model_payload(model: ModelLike) -> tuple[str, Any]:
    """What a worker needs to rebuild ``model``: a candidate dict, or the pickled module.

    Modules are pickled by reference to their classes, so they must be importable by the worker
    (``torch.nn`` layers, the model zoo, any class defined at module level of an installed
    module). Live TVM objects are never sent.
    """
    if isinstance(model, Candidate):
        return ("candidate", model.to_dict())
    if isinstance(model, nn.Module):
        try:
            return ("module", pickle.dumps(model))
        except Exception as exc:  # noqa: BLE001 - any pickling failure is a user error here
            raise ConfigError(
                f"cannot send model {type(model).__name__} to a worker process ({exc}); define "
                "its class at module level of an importable module, or pass a Candidate"
            ) from exc
    raise ConfigError(
        f"`model` must be an nn.Module or a Candidate, but got {type(model).__name__}"
    )


def model_from_payload(payload: tuple[str, Any]) -> nn.Module:
    """Rebuild the model of :func:`model_payload` in eval mode (candidates with seed 0)."""
    kind, data = payload
    if kind == "candidate":
        from autoprune.spaces import build_model

        model = build_model(Candidate.from_dict(data), seed=0)
    else:
        model = pickle.loads(data)
    return model.eval()


def fingerprint(model: ModelLike) -> str:
    """Architecture key of ``model`` for the cache: the candidate hash, or a hash of the module.

    A module's fingerprint covers its printed structure and every parameter and buffer name,
    shape and dtype, not the weight values (latency of dense code does not depend on them).

    Example:
        >>> from torch import nn
        >>> fingerprint(nn.Conv2d(1, 8, 3)) == fingerprint(nn.Conv2d(1, 8, 3))
        True
    """
    if isinstance(model, Candidate):
        return f"candidate-{model.hash}"
    parts = [repr(model)]
    for name, module in model.named_modules():
        parts.append(f"{name}:{type(module).__module__}.{type(module).__qualname__}")
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        parts.append(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}")
    digest = hashlib.sha256("\n".join(parts).encode("utf-8")).hexdigest()[:16]
    return f"module-{digest}"


def example_input(input_shape: tuple[int, int, int]) -> Any:
    """The batch-1 input every measurement and check uses: ``randn(1, C, H, W)``, seed 0."""
    import torch

    generator = torch.Generator().manual_seed(0)
    return torch.randn(1, *input_shape, generator=generator)


def check_input_shape(input_shape: tuple[int, int, int]) -> tuple[int, int, int]:
    """Validate a ``(C, H, W)`` shape and return it as a tuple of ints."""
    shape = tuple(input_shape)
    if len(shape) != 3 or not all(
        isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape
    ):
        raise ConfigError(
            f"`input_shape` must be (C, H, W) with positive integers, but got {input_shape!r}"
        )
    return shape  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------
# worker processes
# --------------------------------------------------------------------------------------------


def _worker_main(conn: Any, job: Callable[[Any], Any], payload: Any, threads: int) -> None:
    """Body of a worker process: set the threads, run ``job(payload)``, send the outcome."""
    # TVM reads TVM_NUM_THREADS when its thread pool starts, at the first parallel kernel.
    os.environ["TVM_NUM_THREADS"] = str(threads)
    try:
        import torch

        torch.set_num_threads(threads)
        outcome: tuple[str, Any] = ("ok", job(payload))
    except BaseException as exc:  # noqa: BLE001 - everything goes back to the caller as data
        last = traceback.format_exception_only(type(exc), exc)[-1].strip()
        outcome = ("error", last.splitlines()[0][:2000] if last else type(exc).__name__)
    try:
        conn.send(outcome)
    finally:
        conn.close()


def run_in_worker(
    job: Callable[[Any], Any], payload: Any, *, threads: int, timeout_s: float
) -> tuple[bool, Any]:
    """Run ``job(payload)`` in a fresh "spawn" process; ``(True, result)`` or ``(False, error)``.

    ``job`` must be a module-level function (pickled by reference). The worker is killed after
    ``timeout_s`` seconds of wall time, counted from its start (interpreter start and imports
    included, about 3 s here). A crash (segfault, ``os._exit``) or an exception in the worker
    returns ``(False, message)``; nothing raises.
    """
    if not timeout_s > 0:
        raise ConfigError(f"`timeout_s` must be > 0 seconds, but got {timeout_s!r}")
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(
        target=_worker_main, args=(sender, job, payload, threads), name="autoprune-measure"
    )
    started = time.monotonic()
    process.start()
    sender.close()  # only the child holds the sending end: its death means EOF here
    try:
        if receiver.poll(timeout_s):
            try:
                status, value = receiver.recv()
            except (EOFError, OSError):
                process.join(5.0)
                return False, _died(process.exitcode)
            process.join(5.0)
            return status == "ok", value
        _logger.warning("measurement worker passed its %.3g s limit; killing it", timeout_s)
        return False, f"timeout: the worker passed its limit of {timeout_s:.3g} s and was killed"
    finally:
        receiver.close()
        if process.is_alive():
            process.kill()
        process.join(5.0)
        _logger.debug("worker %s finished in %.2f s", process.pid, time.monotonic() - started)


def _died(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        import signal

        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"crash: the worker was killed by {name} (exit code {exitcode})"
    return f"crash: the worker exited with code {exitcode} before reporting a result"


# --------------------------------------------------------------------------------------------
# disk cache
# --------------------------------------------------------------------------------------------


def package_version(name: str) -> str:
    """Installed version of a distribution, or ``"absent"`` (read without importing it)."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "absent"


def cache_path(cache_dir: str | os.PathLike[str], key: Mapping[str, Any]) -> Path:
    """File of ``key`` under ``cache_dir``: ``<backend>-<sha256 of the canonical key>.json``."""
    canonical = json.dumps(dict(key), sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:20]
    return Path(cache_dir) / f"{key['backend']}-{digest}.json"


def cache_load(
    cache_dir: str | os.PathLike[str] | None, key: Mapping[str, Any]
) -> LatencyMeasurement | None:
    """The cached measurement of ``key``, or ``None`` (no cache, a miss, or an unreadable file)."""
    if cache_dir is None:
        return None
    path = cache_path(cache_dir, key)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("key") != json.loads(json.dumps(dict(key))):
            return None
        measurement = LatencyMeasurement.from_dict(data["measurement"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, ConfigError) as exc:
        _logger.warning("ignoring unreadable latency cache file %s (%s)", path, exc)
        return None
    _logger.debug("latency cache hit %s", path.name)
    return measurement


def cache_store(
    cache_dir: str | os.PathLike[str] | None,
    key: Mapping[str, Any],
    measurement: LatencyMeasurement,
) -> None:
    """Write ``measurement`` under ``key`` (atomically); error records are not cached."""
    if cache_dir is None or not measurement.ok:
        return
    path = cache_path(cache_dir, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps({"key": dict(key), "measurement": measurement.to_dict()}, indent=1)
    temporary = path.with_suffix(f".{os.getpid()}.tmp")
    temporary.write_text(text + "\n", encoding="utf-8")
    os.replace(temporary, path)


# --------------------------------------------------------------------------------------------
# timing
# --------------------------------------------------------------------------------------------


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


def _pytorch_job(payload: dict[str, Any]) -> dict[str, Any]:
    """Worker body of :func:`measure_pytorch_latency`: the per-repeat times, ms."""
    import torch

    protocol = MeasureProtocol.from_dict(payload["protocol"])
    model = model_from_payload(payload["model"])
    x = example_input(tuple(payload["input_shape"]))
    with torch.no_grad():
        runs = time_calls(lambda: model(x), protocol)
    return {"runs_ms": runs}


def pytorch_target() -> str:
    """The ``target`` string of PyTorch measurements: ``"pytorch <version> cpu"``."""
    return f"pytorch {package_version('torch')} cpu"


def measure_pytorch_latency(
    model: ModelLike,
    input_shape: tuple[int, int, int],
    *,
    protocol: MeasureProtocol | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> LatencyMeasurement:
    """Batch-1 latency of ``model`` in PyTorch eager on this host, by the TVM protocol.

    Runs in a fresh worker process (eval mode, ``torch.no_grad``, ``protocol.threads`` threads)
    so that its timing is not disturbed by TVM in the caller and a failure comes back as a
    record with ``error`` set. The input is ``randn(1, *input_shape)``.

    Args:
        model: an ``nn.Module`` (picklable: module-level classes) or a :class:`Candidate`
            (built with ``build_model(candidate, seed=0)`` in the worker).
        input_shape: ``(C, H, W)`` of one input, pixels.
        protocol: the timing protocol; default ``MeasureProtocol(threads=<cores available>)``.
        cache_dir: where results are cached as JSON, keyed by model fingerprint (candidate
            hash), input shape, protocol and torch version; ``None`` disables the cache.
        timeout_s: wall-clock limit of the worker, seconds.

    Example:
        >>> from torch import nn
        >>> m = measure_pytorch_latency(nn.Conv2d(1, 8, 3), (1, 28, 28),
        ...                             protocol=MeasureProtocol(threads=1))
        >>> m.backend, m.ok, m.latency_ms > 0   # about 0.02 ms here
        ('pytorch', True, True)
    """
    shape = check_input_shape(input_shape)
    protocol = protocol or MeasureProtocol(threads=default_threads())
    target = pytorch_target()
    fields: dict[str, Any] = {
        "protocol": protocol,
        "backend": "pytorch",
        "target": target,
        "input_shape": shape,
    }
    key = {
        "backend": "pytorch",
        "model": fingerprint(model),
        "input_shape": list(shape),
        "protocol": protocol.to_dict(),
        "target": target,
        "machine": platform.machine(),
    }
    cached = cache_load(cache_dir, key)
    if cached is not None:
        return cached
    payload = {"model": model_payload(model), "input_shape": shape, "protocol": protocol.to_dict()}
    ok, value = run_in_worker(_pytorch_job, payload, threads=protocol.threads, timeout_s=timeout_s)
    if not ok:
        _logger.warning("PyTorch latency measurement failed: %s", value)
        return failed(value, **fields)
    measurement = from_runs(value["runs_ms"], **fields)
    warn_if_noisy(measurement)
    cache_store(cache_dir, key, measurement)
    return measurement
