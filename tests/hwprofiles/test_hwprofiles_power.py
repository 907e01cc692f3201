"""Energy sensors: RAPL counters read from a sysfs tree, NVML absent here, clean fallbacks."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from autoprune.errors import UnknownNameError
from autoprune.hwprofiles import HardwareCoster, estimate_with_tvm, load_profile
from autoprune.hwprofiles._power import (
    POWERCAP_ENV,
    EnergyMeasurement,
    NvmlSensor,
    RaplSensor,
    find_energy_sensor,
    list_energy_sensors,
    measure_energy,
)
from autoprune.spaces import Candidate


def _zone(root: Path, name: str, energy_uj: int, max_uj: int = 1_000_000) -> Path:
    zone = root / name
    zone.mkdir(parents=True)
    (zone / "energy_uj").write_text(f"{energy_uj}\n")
    (zone / "max_energy_range_uj").write_text(f"{max_uj}\n")
    return zone


def test_rapl_sums_packages_ignores_subzones_and_unwraps(tmp_path: Path) -> None:
    package0 = _zone(tmp_path, "intel-rapl:0", 900_000)
    package1 = _zone(tmp_path, "intel-rapl:1", 10)
    _zone(tmp_path, "intel-rapl:0:0", 5)  # core sub-zone: already inside package 0
    sensor = RaplSensor(tmp_path)
    assert [z.name for z in sensor.zones] == ["intel-rapl:0", "intel-rapl:1"]
    assert sensor.read_mj() == 0.0
    (package0 / "energy_uj").write_text("50000\n")  # wrapped: +150,000 uJ
    (package1 / "energy_uj").write_text("2010\n")  # +2,000 uJ
    assert sensor.read_mj() == pytest.approx(152.0)


def test_measure_energy_per_call(tmp_path: Path) -> None:
    package = _zone(tmp_path, "intel-rapl:0", 0, max_uj=10**12)
    sensor = RaplSensor(tmp_path)
    now = [0.0]
    counter = [0]

    def call() -> None:  # each call burns 2 mJ and takes 0.25 s
        counter[0] += 2000
        (package / "energy_uj").write_text(str(counter[0]))
        now[0] += 0.25

    result = measure_energy(call, sensor, min_seconds=1.0, clock=lambda: now[0])
    assert result.calls == 4 and result.seconds == pytest.approx(1.0)
    assert result.energy_mj == pytest.approx(2.0)
    assert result.power_w == pytest.approx(0.008)
    assert result.source == "measured" and result.sensor == "rapl"
    assert EnergyMeasurement.from_dict(result.to_dict()) == result


def test_missing_sensors_fall_back_to_none(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv(POWERCAP_ENV, str(tmp_path))  # an empty tree: no RAPL zone
    assert find_energy_sensor("cpu") is None
    with pytest.raises(UnknownNameError, match="unknown energy sensor kind 'tpu'.*cpu, gpu"):
        find_energy_sensor("tpu")


def test_sensors_are_registered_per_kind_and_tried_in_order(tmp_path: Path, monkeypatch) -> None:
    assert list_energy_sensors("cpu") == ["rapl"] and list_energy_sensors("gpu") == ["nvml"]
    assert RaplSensor.name == "rapl" and NvmlSensor.name == "nvml"
    _zone(tmp_path, "intel-rapl:0", 7)
    monkeypatch.setenv(POWERCAP_ENV, str(tmp_path))
    sensor = find_energy_sensor("cpu")
    assert isinstance(sensor, RaplSensor) and sensor.zones == [tmp_path / "intel-rapl:0"]


def test_nvml_is_found_exactly_when_the_driver_answers() -> None:
    import pynvml

    try:
        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
        driver = True
    except pynvml.NVMLError:
        driver = False
    sensor = find_energy_sensor("gpu")
    assert (sensor is not None) == driver
    if sensor is not None:
        assert sensor.read_mj() >= 0


@pytest.fixture
def rapl_at_five_watts(tmp_path: Path, monkeypatch):
    """A RAPL tree whose package counter a thread advances at 5 W, found through the env var."""
    package = _zone(tmp_path, "intel-rapl:0", 0, max_uj=10**15)
    monkeypatch.setenv(POWERCAP_ENV, str(tmp_path))
    stop = threading.Event()
    start = time.monotonic()

    def advance() -> None:
        while not stop.is_set():
            temporary = package / "energy_uj.tmp"
            temporary.write_text(str(int(5e6 * (time.monotonic() - start))))  # 5 W in uJ/s
            os.replace(temporary, package / "energy_uj")
            time.sleep(0.001)

    thread = threading.Thread(target=advance, daemon=True)
    thread.start()
    yield
    stop.set()
    thread.join()


def test_a_search_on_a_host_with_rapl_reports_measured_energy(rapl_at_five_watts) -> None:
    candidate = Candidate(model="resnet20", num_classes=10, in_channels=1, input_shape=(1, 8, 8))
    profile = load_profile("host")
    coster = HardwareCoster(profile, latency="measured")
    values = coster(candidate, estimate_with_tvm(candidate, candidate.input_shape, profile))
    assert values["latency_source"] == "measured" and values["energy_source"] == "measured"
    energy = values["latency_measurement"]["energy"]
    assert energy["sensor"] == "rapl" and energy["power_w"] == pytest.approx(5.0, rel=0.3)
    assert values["energy_mj"] == pytest.approx(energy["energy_mj"])
    assert "rapl counter" in values["hardware_method"]


def test_without_a_sensor_measured_latency_keeps_estimated_energy(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv(POWERCAP_ENV, str(tmp_path))  # an empty tree: no RAPL zone
    candidate = Candidate(model="resnet20", num_classes=10, in_channels=1, input_shape=(1, 8, 8))
    profile = load_profile("host")
    values = HardwareCoster(profile, latency="measured")(
        candidate, estimate_with_tvm(candidate, candidate.input_shape, profile)
    )
    assert values["latency_source"] == "measured" and values["energy_source"] == "estimated"
    assert values["latency_measurement"]["energy"] is None
