"""Measured energy: hardware energy counters where they can be read, and nothing pretended.

Sensors are registered per kind of target (:func:`register_energy_sensor`), as the project's
other extension points are; two are built in:

- **RAPL** (``"rapl"``, kind ``"cpu"``, x86): the package energy counters under
  ``/sys/class/powercap/intel-rapl:N/energy_uj`` (microjoules, wrapping at
  ``max_energy_range_uj``); readable on bare metal, usually not in VMs.
- **NVML** (``"nvml"``, kind ``"gpu"``, NVIDIA GPUs, through nvidia-ml-py): the board's
  total-energy counter (``nvmlDeviceGetTotalEnergyConsumption``, millijoules, Volta and newer).

Where no sensor of the kind can be read (VMs, CI machines, no driver), :func:`find_energy_sensor`
returns ``None`` and callers fall back to the analytic estimate, labelled ``estimated``. A
Jetson's power rails are read on the board itself, over RPC (:mod:`._board`).

Example:
    >>> sensor = find_energy_sensor("cpu")
    >>> sensor is None or sensor.name == "rapl"
    True
"""

from __future__ import annotations

import abc
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

from autoprune.errors import UnknownNameError

__all__ = [
    "EnergyMeasurement",
    "EnergySensor",
    "NvmlSensor",
    "RaplSensor",
    "find_energy_sensor",
    "list_energy_sensors",
    "measure_energy",
    "register_energy_sensor",
]

_logger = logging.getLogger("autoprune.hwprofiles")
#: Where RAPL zones are read; ``AUTOPRUNE_POWERCAP_ROOT`` overrides it (a container that
#: bind-mounts the host's ``/sys/class/powercap`` elsewhere).
RAPL_ROOT = Path("/sys/class/powercap")
POWERCAP_ENV = "AUTOPRUNE_POWERCAP_ROOT"


@dataclass(frozen=True)
class EnergyMeasurement:
    """Energy per call of a workload, read from a hardware counter.

    ``energy_mj`` is millijoules per call (whole-package or whole-board energy, so it includes
    idle power over the call's duration); ``power_w`` the mean power over the window.
    """

    energy_mj: float
    power_w: float
    sensor: str
    calls: int
    seconds: float
    source: str = "measured"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EnergyMeasurement:
        return cls(**data)


class EnergySensor(abc.ABC):
    """A cumulative energy counter. ``read_mj`` is called before and after a window of work.

    A registered sensor class (:func:`register_energy_sensor`) is constructed without arguments
    by :meth:`probe`; its constructor raises when the counter cannot be read on this machine.
    """

    name: str

    @abc.abstractmethod
    def read_mj(self) -> float:
        """Cumulative energy in millijoules since an arbitrary origin (monotonic, unwrapped)."""

    @classmethod
    def probe(cls) -> EnergySensor | None:
        """This machine's sensor of this class, or ``None`` where it cannot be read.

        Absence (``ImportError``, ``OSError``) is normal and logged at debug level only; other
        errors propagate.
        """
        try:
            return cls()
        except (ImportError, OSError) as exc:
            _logger.debug("no %s energy sensor: %s", cls.name, exc)
            return None


_Sensor = TypeVar("_Sensor", bound=type[EnergySensor])
#: kind -> sensor name -> class, in registration order (the order they are tried).
_SENSORS: dict[str, dict[str, type[EnergySensor]]] = {}


def register_energy_sensor(name: str, *, kind: str) -> Callable[[_Sensor], _Sensor]:
    """Register an :class:`EnergySensor` class as ``name`` for targets of ``kind``.

    ``kind`` is a profile's kind (``"cpu"``, ``"gpu"``); :func:`find_energy_sensor` tries the
    sensors of a kind in registration order. The class gets ``name`` as its ``name``.

    Example:
        >>> @register_energy_sensor("fake", kind="npu")
        ... class FakeSensor(EnergySensor):
        ...     def read_mj(self) -> float:
        ...         return 0.0
        >>> find_energy_sensor("npu").name
        'fake'
    """

    def decorator(cls: _Sensor) -> _Sensor:
        registered = _SENSORS.setdefault(kind, {})
        if name in registered and registered[name] is not cls:
            raise ValueError(f"energy sensor {name!r} is already registered for kind {kind!r}")
        cls.name = name
        registered[name] = cls
        return cls

    return decorator


def list_energy_sensors(kind: str) -> list[str]:
    """Names of the sensors registered for ``kind``, in the order they are tried.

    Raises:
        UnknownNameError: no sensor is registered for ``kind`` (the message lists the kinds).
    """
    if kind not in _SENSORS:
        raise UnknownNameError("energy sensor kind", kind, list(_SENSORS))
    return list(_SENSORS[kind])


@register_energy_sensor("rapl", kind="cpu")
class RaplSensor(EnergySensor):
    """Sum of the RAPL package domains (``intel-rapl:N``, not their sub-zones).

    ``root`` defaults to ``$AUTOPRUNE_POWERCAP_ROOT``, else ``/sys/class/powercap``. Counters
    wrap at ``max_energy_range_uj``; a wrap between two reads is unwrapped, which assumes reads
    less than one wrap period apart (minutes on current CPUs).

    Raises:
        FileNotFoundError: no package zone under ``root``.
    """

    def __init__(self, root: Path | None = None) -> None:
        if root is None:
            root = Path(os.environ.get(POWERCAP_ENV, str(RAPL_ROOT)))
        self.zones = sorted(
            p for p in root.glob("intel-rapl:*") if p.name.count(":") == 1 and p.is_dir()
        )
        if not self.zones:
            raise FileNotFoundError(f"no RAPL package zone under {root}")
        self._ranges = [self._read(z / "max_energy_range_uj") for z in self.zones]
        self._last = [self._read(z / "energy_uj") for z in self.zones]
        self._total_uj = 0.0

    @staticmethod
    def _read(path: Path) -> int:
        return int(path.read_text().strip())

    def read_mj(self) -> float:
        for i, zone in enumerate(self.zones):
            now = self._read(zone / "energy_uj")
            delta = now - self._last[i]
            if delta < 0:  # the counter wrapped
                delta += self._ranges[i]
            self._total_uj += delta
            self._last[i] = now
        return self._total_uj / 1e3


@register_energy_sensor("nvml", kind="gpu")
class NvmlSensor(EnergySensor):
    """The total-energy counter of one NVIDIA GPU, through nvidia-ml-py (``pynvml``).

    Raises:
        ImportError: no ``pynvml``.
        pynvml.NVMLError: no driver, no such GPU, or a GPU older than Volta.
    """

    def __init__(self, index: int = 0) -> None:
        import pynvml

        pynvml.nvmlInit()  # raises pynvml.NVMLError (LibraryNotFound) without a driver
        self._pynvml = pynvml
        self._handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        pynvml.nvmlDeviceGetTotalEnergyConsumption(self._handle)  # Volta+; raises before

    @classmethod
    def probe(cls) -> EnergySensor | None:
        """As :meth:`EnergySensor.probe`; NVML's own errors also mean "absent"."""
        try:
            return super().probe()
        except Exception as exc:  # pynvml.NVMLError and its subclasses
            if type(exc).__module__.startswith("pynvml"):
                _logger.debug("no %s energy sensor: %s", cls.name, exc)
                return None
            raise

    def read_mj(self) -> float:
        return float(self._pynvml.nvmlDeviceGetTotalEnergyConsumption(self._handle))


def find_energy_sensor(kind: str) -> EnergySensor | None:
    """The first registered sensor for ``kind`` that can be read here, or ``None``.

    ``"cpu"`` tries RAPL, ``"gpu"`` NVML (:func:`register_energy_sensor` adds others). Absence
    is normal (VMs, CI, machines without a driver) and is logged at debug level only.

    Raises:
        UnknownNameError: no sensor is registered for ``kind`` (the message lists the kinds).
    """
    for name in list_energy_sensors(kind):
        sensor = _SENSORS[kind][name].probe()
        if sensor is not None:
            return sensor
    return None


def measure_energy(
    call: Callable[[], object],
    sensor: EnergySensor,
    *,
    min_seconds: float = 1.0,
    clock: Callable[[], float] = time.perf_counter,
) -> EnergyMeasurement:
    """Run ``call`` repeatedly for at least ``min_seconds`` and read the energy per call.

    Energy counters update every few milliseconds (RAPL about 1 ms, NVML about 10-100 ms), so the
    window must be long compared with that; one second is the default.
    """
    call()  # warm-up, outside the window
    start_mj, start_s = sensor.read_mj(), clock()
    calls = 0
    while True:
        call()
        calls += 1
        elapsed = clock() - start_s
        if elapsed >= min_seconds:
            break
    energy_mj = sensor.read_mj() - start_mj
    return EnergyMeasurement(
        energy_mj=energy_mj / calls,
        power_w=energy_mj / 1e3 / elapsed,
        sensor=sensor.name,
        calls=calls,
        seconds=elapsed,
    )
