"""TVM build and measured latency on this host: real torch.export, real TVM, real worker processes.

Every measurement starts a fresh "spawn" worker (interpreter start, imports, TVM import and
build), so the protocol below is short.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import time
from pathlib import Path

import psutil
import pytest
from torch import nn

from autoprune.errors import ConfigError
from autoprune.hwprofiles import (
    LatencyMeasurement,
    MeasureProtocol,
    OutputMismatchError,
    check_outputs_match,
    is_local_target,
    load_profile,
    measure_pytorch_latency,
    measure_tvm_latency,
    resolve_target,
)
from autoprune.hwprofiles._records import from_runs, warn_if_noisy
from autoprune.hwprofiles._workers import close_kept_workers, fingerprint, run_in_worker
from autoprune.spaces import Candidate

# Short but real: 1 warm-up call, 3 repeats of >= 2 calls and >= 5 ms each, 1 thread.
QUICK = MeasureProtocol(warmup=1, number=2, repeat=3, min_repeat_ms=5.0, threads=1)
SHAPE = (1, 16, 16)
RESNET20 = Candidate(model="resnet20", num_classes=10, in_channels=1, input_shape=SHAPE)


def _two_conv() -> nn.Module:
    # nn.Sequential of torch layers: picklable by reference, so the spawn worker can load it.
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, stride=2, padding=1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 10),
    )


# ------------------------------------------------------------------ records and small helpers


def test_protocol_and_measurement_round_trip_through_strict_json() -> None:
    ok = LatencyMeasurement(
        latency_ms=1.5,
        spread_ms=0.25,
        runs_ms=(1.5, 1.25, 1.5),
        protocol=QUICK,
        backend="tvm",
        target="llvm",
        profile="host",
        input_shape=SHAPE,
    )
    bad = LatencyMeasurement(
        latency_ms=math.nan,
        spread_ms=math.nan,
        runs_ms=(),
        protocol=QUICK,
        backend="pytorch",
        target="pytorch",
        input_shape=SHAPE,
        error="timeout",
    )
    assert LatencyMeasurement.from_dict(json.loads(json.dumps(ok.to_dict()))) == ok
    text = json.dumps(bad.to_dict(), allow_nan=False)  # NaN is written as null
    back = LatencyMeasurement.from_dict(json.loads(text))
    assert math.isnan(back.latency_ms) and back.error == "timeout" and not back.ok
    assert MeasureProtocol.from_dict(QUICK.to_dict()) == QUICK


def test_noisy_repeats_are_flagged(caplog: pytest.LogCaptureFixture) -> None:
    fields = {"protocol": QUICK, "backend": "pytorch", "target": "t", "input_shape": SHAPE}
    quiet = from_runs([1.0, 1.1, 0.9], **fields)
    assert quiet.latency_ms == 1.0 and quiet.spread_ms == pytest.approx(0.2)
    with caplog.at_level("WARNING", logger="autoprune.hwprofiles.measure"):
        warn_if_noisy(quiet)
        assert not caplog.records
        warn_if_noisy(from_runs([0.9, 121.0, 1.0], **fields))  # seen with a contended core
    assert "noisy pytorch measurement" in caplog.text


@pytest.mark.parametrize(
    "bad", [{"repeat": 0}, {"number": 0}, {"warmup": -1}, {"min_repeat_ms": -1.0}, {"threads": 0}]
)
def test_protocol_rejects_bad_values(bad: dict[str, float]) -> None:
    with pytest.raises(ConfigError, match=next(iter(bad))):
        MeasureProtocol(**{"threads": 1, **bad})


def test_fingerprint_is_architecture_not_weights() -> None:
    assert fingerprint(_two_conv()) == fingerprint(_two_conv())  # different random weights
    assert fingerprint(nn.Conv2d(1, 8, 3)) != fingerprint(nn.Conv2d(1, 16, 3))
    assert fingerprint(RESNET20) == f"candidate-{RESNET20.hash}"


def test_host_target_gets_this_cpu_and_other_targets_are_not_local() -> None:
    spec = load_profile("host").tvm_target_spec()
    assert is_local_target(spec)
    resolved = resolve_target(spec)
    assert isinstance(resolved, dict) and resolved["mcpu"] and resolved["num-cores"] == 2
    assert resolve_target({**spec, "mcpu": "x86-64"})["mcpu"] == "x86-64"  # explicit kept
    assert not is_local_target(load_profile("jetson").tvm_target_spec())
    assert not is_local_target({"kind": "llvm", "mtriple": "aarch64-linux-gnu"})


def test_a_device_that_is_not_this_host_is_refused_before_any_work() -> None:
    with pytest.raises(ConfigError, match="jetson-orin-nano.*estimate_hardware"):
        measure_tvm_latency(RESNET20, SHAPE, "jetson", protocol=QUICK)


# ------------------------------------------------------------------ real builds and timings


def test_tvm_latency_is_measured_with_its_protocol_and_cached(tmp_path: Path) -> None:
    cache = tmp_path / "hw-cache"
    first = measure_tvm_latency(RESNET20, SHAPE, "host", protocol=QUICK, cache_dir=cache)
    assert first.ok, first.error
    assert first.latency_ms > 0 and first.spread_ms >= 0
    assert len(first.runs_ms) == QUICK.repeat and first.protocol == QUICK
    assert sorted(first.runs_ms)[1] == first.latency_ms  # median of 3
    assert first.backend == "tvm" and first.source == "measured" and first.tuned is False
    assert first.profile == "host" and first.input_shape == SHAPE
    assert json.loads(first.target)["mcpu"]  # the built target, with this CPU
    assert len(list(cache.glob("tvm-*.json"))) == 1

    # A hit starts no worker: with a limit no worker could meet, the cached record comes back.
    again = measure_tvm_latency(
        RESNET20, SHAPE, "host", protocol=QUICK, cache_dir=cache, timeout_s=0.001
    )
    assert again == first
    # Another input shape is another key: a miss, which here runs into the limit.
    other = measure_tvm_latency(
        RESNET20, (1, 8, 8), "host", protocol=QUICK, cache_dir=cache, timeout_s=0.001
    )
    assert other.error is not None and other.error.startswith("timeout")
    assert len(list(cache.glob("tvm-*.json"))) == 1  # error records are not cached


def test_pytorch_latency_is_measured_the_same_way(tmp_path: Path) -> None:
    m = measure_pytorch_latency(RESNET20, SHAPE, protocol=QUICK, cache_dir=tmp_path)
    assert m.ok, m.error
    assert m.latency_ms > 0 and len(m.runs_ms) == QUICK.repeat and m.protocol == QUICK
    assert m.backend == "pytorch" and m.target.startswith("pytorch ") and m.profile is None
    again = measure_pytorch_latency(
        RESNET20, SHAPE, protocol=QUICK, cache_dir=tmp_path, timeout_s=0.001
    )
    assert again == m


# fp32 numerics of TVM and PyTorch agree to rounding (benchmarks/results/tvm_smoke.json:
# max_abs_diff); logits are O(1), so 1e-5 leaves room.
def test_tvm_outputs_match_pytorch_for_a_candidate() -> None:
    diff = check_outputs_match(RESNET20, SHAPE, "host", rtol=1e-5, atol=1e-5)
    assert 0 <= diff <= 1e-5


def test_tvm_outputs_match_pytorch_for_a_module() -> None:
    diff = check_outputs_match(_two_conv(), SHAPE, load_profile("host"), rtol=1e-5, atol=1e-5)
    assert 0 <= diff <= 1e-5


def test_an_op_the_frontend_rejects_becomes_an_error_record() -> None:
    # RReLU exports as rrelu_with_noise_functional even in eval mode; TVM 0.27 has no converter.
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.RReLU())
    m = measure_tvm_latency(model, SHAPE, "host", protocol=QUICK)
    assert not m.ok and "rrelu" in (m.error or "")
    assert math.isnan(m.latency_ms) and m.runs_ms == () and m.backend == "tvm"


def test_output_check_raises_when_tvm_cannot_build_the_model() -> None:
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.RReLU())
    with pytest.raises(OutputMismatchError, match="rrelu"):
        check_outputs_match(model, SHAPE, "host")


def test_a_timeout_becomes_an_error_record() -> None:
    m = measure_tvm_latency(_two_conv(), SHAPE, "host", protocol=QUICK, timeout_s=0.001)
    assert m.error is not None and "timeout" in m.error and "killed" in m.error
    p = measure_pytorch_latency(_two_conv(), SHAPE, protocol=QUICK, timeout_s=0.001)
    assert p.error is not None and "timeout" in p.error


def _pid(_: object) -> int:
    return os.getpid()


def _context(_: object) -> tuple[str, str | None, str]:
    return os.getcwd(), os.environ.get("AUTOPRUNE_TEST_MARK"), sys.path[0]


def test_a_crashing_worker_is_reported_not_raised_and_a_kept_one_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def pid(keep: str, threads: int = 1) -> int:
        ok, value = run_in_worker(_pid, None, threads=threads, timeout_s=120, keep=keep)
        assert ok, value
        return value

    def crash(keep: str | None) -> None:
        # signal.raise_signal(SIGSEGV) kills the worker the way a segfault in TVM would.
        ok, message = run_in_worker(
            signal.raise_signal, signal.SIGSEGV, threads=1, timeout_s=120, keep=keep
        )
        assert not ok and "SIGSEGV" in message

    try:
        kept = pid("test")
        assert pid("test") == kept  # one process, job after job: imports paid once
        # Each job sees what a fresh process would: the caller's environment now.
        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv("AUTOPRUNE_TEST_MARK", "set after the worker started")
        monkeypatch.syspath_prepend(str(tmp_path))
        ok, seen = run_in_worker(_context, None, threads=1, timeout_s=120, keep="test")
        assert ok and seen == (str(tmp_path), "set after the worker started", str(tmp_path))
        other = pid("test", threads=2)
        assert other != kept  # one per name and thread count
        crash(None)  # a fresh process of its own
        assert pid("test") == kept
        crash("test")
        replaced = pid("test")  # the crashed worker is replaced, and the caller goes on
        assert replaced != kept and psutil.pid_exists(replaced)
        ok, message = run_in_worker(time.sleep, 60, threads=1, timeout_s=0.5, keep="test")
        assert not ok and message.startswith("timeout:") and not psutil.pid_exists(replaced)
        idle = pid("test")
        os.kill(idle, signal.SIGKILL)  # ended while idle, from outside: replaced at the next job
        deadline = time.monotonic() + 30
        while psutil.Process(idle).status() != psutil.STATUS_ZOMBIE:  # dead, not yet reaped
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert pid("test") not in (idle, replaced)
    finally:
        close_kept_workers()
    assert not psutil.pid_exists(other)  # ended and reaped
