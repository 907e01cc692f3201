"""The RPC path for real, on loopback: a TVM tracker and server stand in for a board."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from torch import nn

from autoprune.errors import ConfigError
from autoprune.hwprofiles import MeasureProtocol
from autoprune.hwprofiles._rpc import RpcEndpoint, measure_rpc_latency

KEY = "autoprune-test-board"
PROTOCOL = MeasureProtocol(warmup=1, number=5, repeat=3, min_repeat_ms=10.0, threads=1)


@pytest.fixture(scope="module")
def tracker() -> Iterator[RpcEndpoint]:
    pytest.importorskip("tornado")
    from tvm import rpc
    from tvm.rpc.tracker import Tracker

    tracker = Tracker(host="127.0.0.1", port=9190, port_end=9290, silent=True)
    server = rpc.Server(
        host="127.0.0.1",
        port=9300,
        port_end=9400,
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
