"""PooledBuilder: MetaSchedule builds in processes kept between batches."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tvm
from tvm import te
from tvm.s_tir.meta_schedule.builder import BuilderInput
from tvm.support import popen_pool

from autoprune.hwprofiles._builder import PooledBuilder
from autoprune.hwprofiles._tune import _make_f_build


def _add_one() -> BuilderInput:
    a = te.placeholder((16,), name="A")
    b = te.compute((16,), lambda i: a[i] + 1.0, name="B")
    return BuilderInput(
        tvm.IRModule({"main": te.create_prim_func([a, b])}), tvm.target.Target("llvm")
    )


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """One entry per TVM popen process started."""
    made: list[int] = []
    init = popen_pool.PopenWorker.__init__

    def counting(self: Any, *args: Any, **kwargs: Any) -> None:
        made.append(1)
        init(self, *args, **kwargs)

    monkeypatch.setattr(popen_pool.PopenWorker, "__init__", counting)
    return made


def test_batches_are_built_in_the_processes_of_the_first_and_load(started: list[int]) -> None:
    builder = PooledBuilder(_make_f_build(), max_workers=2)
    try:
        results = [r for _ in range(5) for r in builder.build([_add_one()])]
    finally:
        builder.close()
    assert [r.error_msg for r in results] == [None] * 5
    assert len(started) <= 2  # TVM's LocalBuilder starts a process for each of the 5 batches
    for result in results:
        library = tvm.runtime.load_module(result.artifact_path)
        x = tvm.runtime.tensor(np.arange(16, dtype="float32"))
        y = tvm.runtime.empty((16,), "float32")
        library["main"](x, y)
        assert y.numpy().tolist() == [float(i + 1) for i in range(16)]
        shutil.rmtree(Path(result.artifact_path).parent)


def test_a_failing_build_fails_alone(started: list[int]) -> None:
    def f_build(mod: Any, target: Any, _params: Any) -> Any:
        raise ValueError("this schedule does not build")

    builder = PooledBuilder(f_build, max_workers=1)
    try:
        (failed,) = builder.build([_add_one()])
    finally:
        builder.close()
    assert failed.artifact_path is None
    assert failed.error_msg.startswith("PooledBuilder:") and "does not build" in failed.error_msg
