"""Measured energy: hardware energy counters where they can be read, and nothing pretended.

Two sensors are read here:

- **RAPL** (x86): the package energy counters under ``/sys/class/powercap/intel-rapl:N/energy_uj``
  (microjoules, wrapping at ``max_energy_range_uj``); readable on bare metal, usually not in VMs.
- **NVML** (NVIDIA GPUs, through nvidia-ml-py): the board's total-energy counter
  (``nvmlDeviceGetTotalEnergyConsumption``, millijoules, Volta and newer).

Where neither exists (this build machine has neither), :func:`find_energy_sensor` returns
``None`` and callers fall back to the analytic estimate, labelled ``estimated``. A Jetson's power
rails are read on the board itself, over RPC, by the measurement backend.

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
from typing import Any

__all__ = [
    "EnergyMeasurement",
    "EnergySensor",
    "NvmlSensor",
    "RaplSensor",
    "find_energy_sensor",
    "measure_energy",
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
    """A cumulative energy counter. ``read_mj`` is called before and after a window of work."""

    name: str

    @abc.abstractmethod
    def read_mj(self) -> float:
        """Cumulative energy in millijoules since an arbitrary origin (monotonic, unwrapped)."""


class RaplSensor(EnergySensor):
    """Sum of the RAPL package domains (``intel-rapl:N``, not their sub-zones).

    Counters wrap at ``max_energy_range_uj``; a wrap between two reads is unwrapped, which
    assumes reads less than one wrap period apart (minutes on current CPUs).
    """

    name = "rapl"

    def __init__(self, root: Path = RAPL_ROOT) -> None:
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


class NvmlSensor(EnergySensor):
    """The total-energy counter of one NVIDIA GPU, through nvidia-ml-py (``pynvml``)."""

    name = "nvml"

    def __init__(self, index: int = 0) -> None:
        import pynvml

        pynvml.nvmlInit()  # raises pynvml.NVMLError (LibraryNotFound here) without a driver
        self._pynvml = pynvml
        self._handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        pynvml.nvmlDeviceGetTotalEnergyConsumption(self._handle)  # Volta+; raises before

    def read_mj(self) -> float:
        return float(self._pynvml.nvmlDeviceGetTotalEnergyConsumption(self._handle))


def find_energy_sensor(kind: str, *, rapl_root: Path | None = None) -> EnergySensor | None:
    """The energy counter for a ``"gpu"`` (NVML) or ``"cpu"`` (RAPL) target, or ``None``.

    Absence is normal (VMs, CI, machines without a driver) and is logged at debug level only.
    ``rapl_root`` defaults to ``$AUTOPRUNE_POWERCAP_ROOT``, else ``/sys/class/powercap``.
    """
    if rapl_root is None:
        rapl_root = Path(os.environ.get(POWERCAP_ENV, str(RAPL_ROOT)))
    try:
        if kind == "gpu":
            return NvmlSensor()
        if kind == "cpu":
            return RaplSensor(rapl_root)
    except (ImportError, OSError) as exc:
        _logger.debug("no %s energy sensor: %s", kind, exc)
        return None
    except Exception as exc:  # pynvml.NVMLError and its subclasses
        if type(exc).__module__.startswith("pynvml"):
            _logger.debug("no %s energy sensor: %s", kind, exc)
            return None
        raise
    raise ValueError(f"kind must be 'gpu' or 'cpu', but got {kind!r}")


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
