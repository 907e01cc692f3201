"""Measured latency as data: the timing protocol, the record, and the checks both share.

A :class:`LatencyMeasurement` is what every latency runner returns (:mod:`._runner`): a latency
in milliseconds with the :class:`MeasureProtocol` that produced it, or the reason there is none
(``error`` set, latency NaN). Records round-trip through strict JSON (the disk cache, trial
attributes).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from autoprune.errors import ConfigError
from autoprune.hwprofiles._power import EnergyMeasurement

__all__ = [
    "check_known_keys",
    "LatencyMeasurement",
    "MeasureProtocol",
    "check_input_shape",
    "check_int",
    "default_threads",
    "failed",
    "from_runs",
    "warn_if_noisy",
]

_logger = logging.getLogger("autoprune.hwprofiles.measure")


def check_known_keys(cls: type, data: Mapping[str, Any], what: str) -> None:
    """Raise :class:`ConfigError` naming the keys of ``data`` that are not fields of ``cls``
    (``what``: the record's name in the message, e.g. ``"measure protocol"``)."""
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ConfigError(f"unknown {what} key(s) {unknown}; valid keys: {', '.join(names)}")


def check_int(value: object, what: str, minimum: int) -> None:
    """Raise :class:`ConfigError` unless ``value`` is an ``int`` (not a bool) ``>= minimum``."""
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
        check_int(self.warmup, "warmup", 0)
        check_int(self.number, "number", 1)
        check_int(self.repeat, "repeat", 1)
        check_int(self.threads, "threads", 1)
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
        check_known_keys(cls, data, "measure protocol")
        return cls(**dict(data))


def default_threads() -> int:
    """CPU cores this process may run on (its affinity mask), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def check_input_shape(input_shape: tuple[int, int, int]) -> tuple[int, int, int]:
    """Validate a ``(C, H, W)`` shape and return it as a tuple of ints.

    Raises:
        ConfigError: not three positive integers.
    """
    shape = tuple(input_shape)
    if len(shape) != 3 or not all(
        isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape
    ):
        raise ConfigError(
            f"`input_shape` must be (C, H, W) with positive integers, but got {input_shape!r}"
        )
    return shape  # type: ignore[return-value]


@dataclass(frozen=True, kw_only=True)
class LatencyMeasurement:
    """A measured latency, or the reason it could not be measured.

    Attributes:
        latency_ms: median over the repeats of the mean time of one batch-1 call,
            milliseconds; NaN when ``error`` is set.
        spread_ms: ``max - min`` over the repeats, milliseconds (the full range, not the IQR);
            NaN when ``error`` is set.
        runs_ms: the per-repeat times, milliseconds, in the order taken (empty on error).
        protocol: how it was measured.
        backend: ``"tvm"`` (TVM-compiled code, here or on a board) or ``"pytorch"`` (PyTorch
            eager, ``no_grad``).
        target: the TVM target the code was built for, as TVM prints it (with the host
            ``mcpu``; ``"... via rpc KEY@HOST:PORT"`` on a board), or ``"pytorch <version> cpu"``.
        source: always ``"measured"`` (estimates are :class:`HardwareEstimate`).
        tuned: whether the TVM kernels were tuned (MetaSchedule). Untuned TVM code on a CPU is
            naive loops, not a latency signal (``docs/tvm.md``).
        input_shape: ``(C, H, W)`` of the batch-1 input, pixels.
        profile: device profile name (``None`` for PyTorch, which runs on this host).
        error: why no latency came back (exception, crash, timeout), else ``None``.
        energy: energy per call read from a hardware counter while the code ran (RAPL on x86,
            NVML on NVIDIA GPUs, a Jetson's rails; :mod:`._power`), or ``None`` where no sensor
            can be read.

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
    """A successful measurement from its per-repeat times, ms (median and ``max - min``)."""
    runs = tuple(float(r) for r in runs_ms)
    return LatencyMeasurement(
        latency_ms=statistics.median(runs), spread_ms=max(runs) - min(runs), runs_ms=runs, **fields
    )


def failed(error: str, **fields: Any) -> LatencyMeasurement:
    """An error record: no latency (NaN), no runs, ``error`` set."""
    return LatencyMeasurement(
        latency_ms=math.nan, spread_ms=math.nan, runs_ms=(), error=error, **fields
    )


def warn_if_noisy(measurement: LatencyMeasurement) -> None:
    """Log a warning when the repeats spread over more than half the median.

    Threads that share cores with another process wait for each other, and a repeat can take
    many times the median. Such a record is not wrong as data (the spread says so), but it
    should not pass unnoticed.
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
