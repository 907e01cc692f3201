"""Board side of remote measurement: a TVM RPC server that can also read the board's power.

A Jetson has no cumulative energy counter, but its INA3221 monitors report the power of each
rail; :class:`JetsonRailSensor` samples them in a thread and integrates (rectangle rule,
every ``period_s``). Two sysfs layouts exist:

- L4T r35 and later (Orin): ``/sys/bus/i2c/drivers/ina3221/*/hwmon/hwmon*/in<N>_label``,
  ``in<N>_input`` (mV) and ``curr<N>_input`` (mA);
- L4T r32 (Nano, TX2, Xavier): ``/sys/bus/i2c/drivers/ina3221x/*/iio:device*/rail_name_<N>``
  and ``in_power<N>_input`` (mW).

The module's input rail (``VDD_IN``, ``POM_5V_IN``) is the whole module's power and is used when
present; otherwise the rails are summed. ``AUTOPRUNE_SYSFS_ROOT`` moves ``/sys`` (a test stands
in a tree of files in the same format).

:func:`serve_board` runs on the board (``autoprune board --rpc-tracker HOST:PORT --rpc-key
KEY``): TVM's own RPC server plus one global function, ``autoprune.energy.read_mj``, registered
in every session process. The measuring side (:mod:`._rpc`) reads it before and after a timed
window when the server offers it, and falls back to the estimate when it does not. This module
needs only TVM and the standard library, as a board has.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

__all__ = [
    "ENERGY_FUNCTION",
    "JetsonRailSensor",
    "exposure_note",
    "find_board_sensor",
    "register_board_functions",
    "serve_board",
]

_logger = logging.getLogger("autoprune.hwprofiles.board")

#: Name of the RPC global function that returns the board's cumulative energy, millijoules.
ENERGY_FUNCTION = "autoprune.energy.read_mj"
SYSFS_ENV = "AUTOPRUNE_SYSFS_ROOT"
#: Rails that carry the whole module's input power, by L4T's names.
INPUT_RAILS = ("VDD_IN", "POM_5V_IN")


def _sysfs() -> Path:
    return Path(os.environ.get(SYSFS_ENV, "/sys"))


def _read_number(path: Path) -> float:
    return float(path.read_text().strip())


def _rails(sysfs: Path) -> dict[str, tuple[Path, ...]]:
    """Rail name -> files whose values give its power: ``(mW,)`` or ``(mV, mA)``."""
    rails: dict[str, tuple[Path, ...]] = {}
    for label in sorted(sysfs.glob("bus/i2c/drivers/ina3221/*/hwmon/hwmon*/in*_label")):
        channel = label.name[2:].split("_")[0]
        volts, amps = label.parent / f"in{channel}_input", label.parent / f"curr{channel}_input"
        if volts.exists() and amps.exists():
            rails[label.read_text().strip()] = (volts, amps)
    for name in sorted(sysfs.glob("bus/i2c/drivers/ina3221x/*/iio:device*/rail_name_*")):
        power = name.parent / f"in_power{name.name.rsplit('_', 1)[1]}_input"
        if power.exists():
            rails[name.read_text().strip()] = (power,)
    return rails


class JetsonRailSensor:
    """Energy of a Jetson module, integrated from its INA3221 rail power in a thread.

    Attributes:
        rails: the rails read (the input rail alone, or every rail when there is none).
        period_s: sampling period, seconds (the monitors update about every 1-8 ms).
    """

    name = "jetson-ina3221"

    def __init__(self, sysfs: Path | None = None, *, period_s: float = 0.005) -> None:
        found = _rails(sysfs or _sysfs())
        if not found:
            raise FileNotFoundError(f"no INA3221 power rails under {sysfs or _sysfs()}")
        inputs = {name: files for name, files in found.items() if name in INPUT_RAILS}
        self._files = list((inputs or found).values())
        self.rails = tuple(inputs or found)
        self.period_s = period_s
        self._total_mj = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True, name=self.name)
        self._thread.start()

    def power_w(self) -> float:
        """Power now, watts (sum over :attr:`rails`)."""
        milliwatts = 0.0
        for files in self._files:
            if len(files) == 1:
                milliwatts += _read_number(files[0])
            else:
                milliwatts += _read_number(files[0]) * _read_number(files[1]) / 1e3
        return milliwatts / 1e3

    def _sample(self) -> None:
        last = time.monotonic()
        while not self._stop.is_set():
            watts = self.power_w()
            time.sleep(self.period_s)
            now = time.monotonic()
            with self._lock:
                self._total_mj += watts * (now - last) * 1e3
            last = now

    def read_mj(self) -> float:
        """Energy since the sensor started, millijoules."""
        with self._lock:
            return self._total_mj

    def close(self) -> None:
        """Stop the sampling thread."""
        self._stop.set()
        self._thread.join()


def find_board_sensor(sysfs: Path | None = None) -> JetsonRailSensor | None:
    """The board's rail sensor, or ``None`` where no INA3221 rails can be read."""
    try:
        return JetsonRailSensor(sysfs)
    except (FileNotFoundError, OSError, ValueError) as exc:
        _logger.debug("no board power rails: %s", exc)
        return None


_SENSOR: dict[int, JetsonRailSensor | None] = {}


def _read_mj() -> float:
    """The RPC function: cumulative board energy, mJ, or -1 when no rails can be read.

    The sensor starts on the first call in each session process (RPC sessions are forked,
    and threads do not survive a fork).
    """
    pid = os.getpid()
    if pid not in _SENSOR:
        _SENSOR[pid] = find_board_sensor()
    sensor = _SENSOR[pid]
    return -1.0 if sensor is None else sensor.read_mj()


def register_board_functions() -> None:
    """Register :data:`ENERGY_FUNCTION` in this process (TVM's ``server_init_callback``)."""
    import tvm

    tvm.register_global_func(ENERGY_FUNCTION, _read_mj, override=True)


def exposure_note(host: str) -> str:
    """One line on who can reach a board served on ``host`` and how to change it.

    TVM RPC has no authentication: whoever reaches the port can upload and run code on the board.

    Example:
        >>> exposure_note("127.0.0.1").split(":")[0]
        'listening on 127.0.0.1 only'
    """
    if host in ("127.0.0.1", "localhost", "::1"):
        return (
            f"listening on {host} only: a tracker or search on another machine cannot reach "
            f"this board; pass --host 0.0.0.0 (or this board's address) to expose it, on a "
            f"trusted network only (TVM RPC has no authentication)"
        )
    return (
        f"listening on {host}: TVM RPC has no authentication, anyone who reaches this port can "
        f"run code on this board; expose it on a trusted network only"
    )


def serve_board(
    tracker: tuple[str, int], key: str, *, host: str = "127.0.0.1", port: int = 9090
) -> object:
    """Start the board's RPC server, registered with ``tracker`` under ``key``, on ``host``.

    ``host`` defaults to loopback: TVM RPC has no authentication (:func:`exposure_note`).
    Returns the running ``tvm.rpc.Server`` (``terminate()`` stops it).
    """
    from tvm import rpc

    return rpc.Server(
        host=host,
        port=port,
        port_end=port + 100,
        key=key,
        tracker_addr=tracker,
        server_init_callback=register_board_functions,
    )
