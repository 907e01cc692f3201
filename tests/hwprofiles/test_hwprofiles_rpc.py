"""The RPC path for real, on loopback: a TVM tracker and server stand in for a board."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from autoprune.errors import ConfigError
from autoprune.hwprofiles import MeasureProtocol
from autoprune.hwprofiles._board import (
    SYSFS_ENV,
    JetsonRailSensor,
    find_board_sensor,
    serve_board,
)
from autoprune.hwprofiles._rpc import RpcEndpoint, measure_rpc_latency

KEY = "autoprune-test-board"
PROTOCOL = MeasureProtocol(warmup=1, number=5, repeat=3, min_repeat_ms=10.0, threads=1)


def free_port() -> int:
    """A port nobody listens on now: the system's pick. TVM binds the first free one of
    ``free_port()..free_port() + 100``, so a port taken in between costs nothing."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def tracker() -> Iterator[RpcEndpoint]:
    from tvm import rpc
    from tvm.rpc.tracker import Tracker

    port = free_port()
    tracker = Tracker(host="127.0.0.1", port=port, port_end=port + 100, silent=True)
    port = free_port()
    server = rpc.Server(
        host="127.0.0.1",
        port=port,
        port_end=port + 100,
        key=KEY,
        tracker_addr=("127.0.0.1", tracker.port),
        silent=True,
    )
    try:
        yield RpcEndpoint(host="127.0.0.1", port=tracker.port, key=KEY, session_timeout_s=120)
    finally:
        server.terminate()
        tracker.terminate()


def tiny() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 10),
    )


def test_latency_measured_through_tracker_and_server(tracker: RpcEndpoint, tmp_path) -> None:
    measurement = measure_rpc_latency(
        tiny(), (1, 16, 16), "host", tracker, protocol=PROTOCOL, cache_dir=tmp_path, timeout_s=180
    )
    assert measurement.ok, measurement.error
    assert measurement.latency_ms > 0 and len(measurement.runs_ms) == PROTOCOL.repeat
    assert measurement.source == "measured" and measurement.protocol == PROTOCOL
    assert f"via rpc {KEY}@127.0.0.1:{tracker.port}" in measurement.target
    assert measurement.energy is None  # TVM's plain server has no power rails to offer
    again = measure_rpc_latency(
        tiny(), (1, 16, 16), "host", tracker, protocol=PROTOCOL, cache_dir=tmp_path, timeout_s=0.001
    )  # a hit starts no worker
    assert again == measurement


def test_board_that_never_answers_is_an_error_record(tracker: RpcEndpoint) -> None:
    nobody = RpcEndpoint(
        host=tracker.host, port=tracker.port, key="no-such-board", session_timeout_s=5
    )
    measurement = measure_rpc_latency(
        tiny(), (1, 16, 16), "host", nobody, protocol=PROTOCOL, timeout_s=15
    )
    assert not measurement.ok and measurement.error


@pytest.mark.parametrize("address", ["127.0.0.1", "host:port", ":9190", "127.0.0.1:99999"])
def test_bad_tracker_address(address: str) -> None:
    with pytest.raises(ConfigError, match="HOST:PORT"):
        RpcEndpoint.parse(address, key="k")


def test_parse() -> None:
    endpoint = RpcEndpoint.parse("127.0.0.1:9190", key=" orin ")
    assert (endpoint.host, endpoint.port, endpoint.key) == ("127.0.0.1", 9190, "orin")
    with pytest.raises(ConfigError, match="rpc-key"):
        RpcEndpoint.parse("127.0.0.1:9190", key="")


def _orin_rails(sysfs: Path, millivolts: int, milliamps: int) -> None:
    """An Orin-style INA3221 hwmon tree: VDD_IN at the given voltage and current."""
    hwmon = sysfs / "bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon3"
    hwmon.mkdir(parents=True)
    for channel, label in ((1, "VDD_IN"), (2, "VDD_CPU_GPU_CV"), (3, "VDD_SOC")):
        (hwmon / f"in{channel}_label").write_text(f"{label}\n")
        (hwmon / f"in{channel}_input").write_text(f"{millivolts}\n")
        (hwmon / f"curr{channel}_input").write_text(f"{milliamps // channel}\n")


def test_board_server_reports_energy_from_its_power_rails(tmp_path: Path, monkeypatch) -> None:
    from tvm.rpc.tracker import Tracker

    _orin_rails(tmp_path / "sys", millivolts=5000, milliamps=1000)  # VDD_IN: 5 W
    monkeypatch.setenv(SYSFS_ENV, str(tmp_path / "sys"))  # inherited by the server's processes
    port = free_port()
    tracker = Tracker(host="127.0.0.1", port=port, port_end=port + 100, silent=True)
    server = serve_board(("127.0.0.1", tracker.port), "board", host="127.0.0.1", port=free_port())
    try:
        endpoint = RpcEndpoint(host="127.0.0.1", port=tracker.port, key="board")
        measurement = measure_rpc_latency(
            tiny(), (1, 16, 16), "host", endpoint, protocol=PROTOCOL, timeout_s=180
        )
    finally:
        server.terminate()
        tracker.terminate()
    assert measurement.ok, measurement.error
    energy = measurement.energy
    assert energy is not None and energy.sensor == "jetson-ina3221"
    assert energy.power_w == pytest.approx(5.0, rel=0.05)  # the input rail only, not the sum
    assert energy.seconds >= 1.0
    # Energy per call = power x the mean time of a call in the window (calls back to back): about
    # the power x the median latency. A call of this tiny model takes about 10 us, so the two
    # timings differ with the machine's load, both ways (0.72x and more than 1x seen in CI).
    per_call_mj = energy.power_w * energy.seconds / energy.calls * 1e3
    assert energy.energy_mj == pytest.approx(per_call_mj, rel=0.1)
    assert 0.4 <= energy.energy_mj / (5.0 * measurement.latency_ms) <= 10.0


def _wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 120.0) -> float:
    """Poll ``condition`` until it holds; the time it was seen to hold (time.monotonic())."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"no {what} within {timeout_s:g} s"
        time.sleep(0.005)
    return time.monotonic()


def test_rail_sensor_reads_l4t_r32_iio_rails_and_sums_without_an_input_rail(tmp_path) -> None:
    iio = tmp_path / "bus/i2c/drivers/ina3221x/6-0040/iio:device0"
    iio.mkdir(parents=True)
    for channel, (name, milliwatts) in enumerate((("GPU", 1500), ("CPU", 700))):
        (iio / f"rail_name_{channel}").write_text(f"{name}\n")
        (iio / f"in_power{channel}_input").write_text(f"{milliwatts}\n")
    # The sensor sums power x the time between its samples, from its thread's start to its
    # last sample (which ends after close() is called). So whatever the scheduler does, its
    # energy lies between 2.2 W x [a moment after its first sample, close()] and 2.2 W x
    # [before it started, after it stopped].
    before = time.monotonic()
    sensor = JetsonRailSensor(tmp_path, period_s=0.002)
    try:
        assert sensor.rails == ("GPU", "CPU") and sensor.power_w() == pytest.approx(2.2)
        started = _wait_for(lambda: sensor.read_mj() > 0, "the sensor's first sample")
        _wait_for(lambda: sensor.read_mj() >= 2.2 * 50, "50 ms of samples")  # 2.2 W x 50 ms
        closing = time.monotonic()
    finally:
        sensor.close()
    after = time.monotonic()
    energy_mj = sensor.read_mj()
    assert 2.2 * (closing - started) * 1e3 <= energy_mj * (1 + 1e-9)
    assert energy_mj <= 2.2 * (after - before) * 1e3 * (1 + 1e-9)
    assert find_board_sensor(tmp_path / "empty") is None


def test_autoprune_board_serves_through_the_tracker_until_ctrl_c(tmp_path: Path) -> None:
    from tvm.rpc.tracker import Tracker

    _orin_rails(tmp_path / "sys", millivolts=5000, milliamps=1500)
    port = free_port()
    tracker = Tracker(host="127.0.0.1", port=port, port_end=port + 100, silent=True)
    command = [sys.executable, "-m", "autoprune.cli", "board", "--host", "127.0.0.1"]
    command += ["--port", str(free_port())]
    command += ["--rpc-tracker", f"127.0.0.1:{tracker.port}", "--rpc-key", "cli-board"]
    # PYTHONFAULTHANDLER: if the board does not stop, SIGABRT makes it print every thread's stack.
    env = {**os.environ, SYSFS_ENV: str(tmp_path / "sys"), "PYTHONFAULTHANDLER": "1"}
    log = tmp_path / "board.log"
    with log.open("w") as errors:
        process = subprocess.Popen(
            command,
            env=env,
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
            # A suite run as a background job of a non-interactive shell inherits SIGINT
            # ignored, and Python keeps it so: the board gets Ctrl-C as a terminal sends it.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
    try:
        assert "power rails VDD_IN: 7.50 W now" in process.stdout.readline()
        assert "serving as 'cli-board'" in process.stdout.readline()
        endpoint = RpcEndpoint(host="127.0.0.1", port=tracker.port, key="cli-board")
        measurement = measure_rpc_latency(
            tiny(), (1, 16, 16), "host", endpoint, protocol=PROTOCOL, timeout_s=180
        )
        assert measurement.ok and measurement.energy is not None
        process.send_signal(signal.SIGINT)
        try:
            status = process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGABRT)
            process.wait(timeout=30)
            status = None
        assert status == 130, f"the board did not stop on SIGINT; its stderr:\n{log.read_text()}"
    finally:
        process.kill()
        tracker.terminate()
