"""The three latency runners share one template: real worker processes, real caches on disk.

No board is needed: an RPC measurement builds the model here before it contacts the tracker, so a
model that cannot even be exported fails the same way for all three runners. Cache hits are shown
with a time limit no worker could meet (a worker that started would come back as a timeout).
"""

from __future__ import annotations

import dataclasses
import math
import platform
from pathlib import Path

import pytest
import torch
from torch import nn

from autoprune.errors import ConfigError
from autoprune.hwprofiles import (
    HardwareCoster,
    LatencyMeasurement,
    LatencyRunner,
    MeasureProtocol,
    PyTorchRunner,
    RpcEndpoint,
    RpcRunner,
    TuningError,
    TvmRunner,
    candidate_costs,
    create_latency_runner,
    default_tuning_dir,
    estimate_hardware,
    load_profile,
    model_costs,
)
from autoprune.hwprofiles._cache import cache_path, cache_store
from autoprune.hwprofiles._workers import fingerprint
from autoprune.spaces import Candidate, build_model, count_costs

QUICK = MeasureProtocol(warmup=1, number=2, repeat=3, min_repeat_ms=5.0, threads=1)
SHAPE = (1, 8, 8)
NOBODY = RpcEndpoint(host="127.0.0.1", port=9, key="no-board", session_timeout_s=5)
CANDIDATE = Candidate(model="resnet20", num_classes=10, in_channels=1, input_shape=SHAPE)


def _runners(cache_dir: Path | None = None, timeout_s: float = 120.0) -> list[LatencyRunner]:
    options = {"protocol": QUICK, "cache_dir": cache_dir, "timeout_s": timeout_s}
    return [
        PyTorchRunner(**options),
        TvmRunner("host", **options),
        RpcRunner("host", NOBODY, **options),
    ]


def _record(runner: LatencyRunner, runs_ms: tuple[float, ...]) -> LatencyMeasurement:
    return LatencyMeasurement(
        latency_ms=sorted(runs_ms)[len(runs_ms) // 2],
        spread_ms=max(runs_ms) - min(runs_ms),
        runs_ms=runs_ms,
        protocol=QUICK,
        backend=runner.backend,
        target=f"stored for {runner.describe()}",
        input_shape=SHAPE,
        profile=runner.profile_name,
    )


@pytest.mark.parametrize("runner", _runners(), ids=["pytorch", "tvm", "rpc"])
def test_a_failing_worker_job_is_an_error_record_for_every_runner(runner: LatencyRunner) -> None:
    # nn.Linear(5, 3) on a (1, 1, 8, 8) input: PyTorch's forward and torch.export both fail.
    m = runner.measure(nn.Linear(5, 3), SHAPE)
    assert not m.ok and (m.error or "").startswith("RuntimeError")  # the worker's exception
    assert math.isnan(m.latency_ms) and math.isnan(m.spread_ms) and m.runs_ms == ()
    assert m.backend == runner.backend and m.profile == runner.profile_name
    assert m.protocol == QUICK and m.input_shape == SHAPE and m.tuned is False
    assert m.target == runner.failure_target()


@pytest.mark.parametrize("kind", ["pytorch", "tvm", "rpc"])
def test_a_cache_hit_starts_no_worker(kind: str, tmp_path: Path) -> None:
    index = ["pytorch", "tvm", "rpc"].index(kind)
    runner = _runners(tmp_path, timeout_s=0.001)[index]
    model = nn.Conv2d(1, 4, 3)
    stored = _record(runner, (1.0, 1.25, 1.5))
    cache_store(tmp_path, runner.cache_key(model, SHAPE, QUICK), stored)
    assert runner.measure(model, SHAPE) == stored  # no worker: it could not have finished
    miss = runner.measure(nn.Conv2d(1, 8, 3), SHAPE)  # another architecture, another key
    assert miss.error is not None and miss.error.startswith("timeout")
    assert len(list(tmp_path.iterdir())) == 1  # error records are not cached


def test_cache_keys_and_file_names_are_the_ones_existing_caches_hold(tmp_path: Path) -> None:
    model = nn.Conv2d(1, 4, 3)
    torch_version = torch.__version__.split("+")[0]
    key = PyTorchRunner().cache_key(model, SHAPE, QUICK)
    assert key == {
        "backend": "pytorch",
        "model": fingerprint(model),
        "input_shape": list(SHAPE),
        "protocol": QUICK.to_dict(),
        "target": f"pytorch {torch_version} cpu",
        "machine": platform.machine(),
    }
    assert cache_path(tmp_path, key).name.startswith("pytorch-")
    host = load_profile("host").tvm_target_spec()
    key = TvmRunner("host").cache_key(model, SHAPE, QUICK)
    assert [*key] == [
        *("backend", "model", "profile", "target", "input_shape", "protocol", "tuned", "tvm"),
        "machine",
    ]
    assert (key["backend"], key["target"], key["tuned"]) == ("tvm", host, False)
    key = RpcRunner("jetson", NOBODY).cache_key(model, SHAPE, QUICK)
    assert key["backend"] == "tvm-rpc" and key["rpc_key"] == "no-board"
    assert key["target"] == "nvidia/jetson-orin-nano" and "machine" not in key


def test_the_factory_picks_the_runner_of_the_target(tmp_path: Path) -> None:
    assert type(create_latency_runner("host")) is TvmRunner
    assert type(create_latency_runner("jetson", endpoint=NOBODY)) is RpcRunner
    assert type(create_latency_runner("host", endpoint=NOBODY)) is RpcRunner
    tuning = create_latency_runner("host", tuning_dir=tmp_path, tuning_trials_per_task=4)
    assert isinstance(tuning, TvmRunner) and tuning.tunes and tuning.tuned
    untuned = create_latency_runner("host", tuning_dir=tmp_path, tuning_trials_per_task=0)
    assert isinstance(untuned, TvmRunner) and not untuned.tunes and not untuned.tuned
    assert create_latency_runner("host").timeout_s == 600.0
    assert create_latency_runner("host", endpoint=NOBODY).timeout_s == 900.0
    assert create_latency_runner("host", timeout_s=5.0).timeout_s == 5.0


def test_the_factory_refuses_a_target_it_cannot_reach_in_one_line() -> None:
    with pytest.raises(ConfigError) as info:
        create_latency_runner("jetson")
    message = str(info.value)
    assert "\n" not in message and "jetson-orin-nano" in message
    assert "--rpc-tracker HOST:PORT --rpc-key KEY" in message and "--measure" in message
    with pytest.raises(ConfigError, match="tuning_trials_per_task"):
        create_latency_runner("host", tuning_trials_per_task=-1)


def test_prepare_is_a_no_op_except_for_a_tuning_tvm_runner(tmp_path: Path) -> None:
    model = nn.Conv2d(1, 4, 3)
    for runner in _runners():
        assert runner.prepare(model, SHAPE) is None  # no tuning database: nothing to do
    assert TvmRunner("host", database_dir=tmp_path).prepare(model, SHAPE) is None  # 0 trials
    tuning = TvmRunner("host", database_dir=tmp_path, tuning_trials_per_task=1, timeout_s=0.5)
    with pytest.raises(TuningError, match="timeout"):
        tuning.prepare(model, SHAPE)


def test_the_coster_measures_through_the_runner_and_its_cache(tmp_path: Path) -> None:
    profile = load_profile("host")
    quantized = dataclasses.replace(
        CANDIDATE, weight_bits={"layer1.0.conv1": 8}, activation_bits={"layer1.0.conv1": 8}
    )
    coster = HardwareCoster(
        profile, latency="measured", cache_dir=tmp_path, timeout_s=0.001, tuning_trials_per_task=0
    )
    runner = coster.runner()
    assert isinstance(runner, TvmRunner) and runner.cache_dir == tmp_path
    float_candidate = dataclasses.replace(quantized, weight_bits=(), activation_bits=())
    stored = _record(runner, (2.0, 2.5, 3.0))
    cache_store(
        tmp_path, runner.cache_key(float_candidate, SHAPE, runner.default_protocol()), stored
    )
    estimate = estimate_hardware(count_costs(build_model(quantized, device="meta"), SHAPE), profile)

    values = coster(quantized, estimate)  # the float architecture's record, from the cache

    static_mj = sum(layer.static_energy_mj for layer in estimate.layers)
    assert list(values) == [
        *("latency_ms", "latency_source", "energy_mj", "energy_source", "hardware_method"),
        *("latency_measurement", "estimated_latency_ms"),
    ]
    assert values["latency_ms"] == 2.5 and values["latency_source"] == "measured"
    assert values["energy_source"] == "estimated"
    assert values["energy_mj"] == pytest.approx(
        estimate.energy_mj - static_mj + profile.idle_power_w * 2.5
    )
    assert values["hardware_method"] == (
        f"latency: TVM untuned fp32 kernels, median of 3 repeats on {stored.target}; "
        f"energy: {estimate.method}, idle power over the measured latency"
    )
    assert values["latency_measurement"] == stored.to_dict()
    assert values["estimated_latency_ms"] == estimate.latency_ms


def test_costs_keep_their_keys_in_order() -> None:
    jetson = load_profile("jetson")
    latency = ["latency_ms", "latency_source", "latency_expected_error"]
    energy = ["energy_mj", "energy_source", "hardware_method"]
    costs = candidate_costs(CANDIDATE, jetson)
    assert list(costs) == ["macs", "params", "size_bytes", *latency, *energy]
    assert costs["latency_expected_error"] == jetson.expected_error
    assert costs["latency_source"] == "estimated" and costs["macs"] > 0
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU())
    costs = model_costs(net, SHAPE, jetson)
    assert list(costs) == ["macs", "params", "size_bytes", *latency, "precision", *energy]
    assert costs["macs"] == 8 * 9 * 8 * 8 and costs["params"] == 8 * 9 + 8


def test_default_tuning_dir_follows_xdg(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_tuning_dir("local") == tmp_path / "xdg" / "autoprune" / "tuning" / "host"
    monkeypatch.setenv("XDG_CACHE_HOME", "")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    jetson = load_profile("jetson")
    expected = tmp_path / "home" / ".cache" / "autoprune" / "tuning" / "jetson-orin-nano"
    assert default_tuning_dir(jetson) == expected
