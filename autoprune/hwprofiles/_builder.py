"""MetaSchedule's local builder, with its build processes kept for a whole tuning job.

TVM's ``LocalBuilder`` starts a new pool of build processes for every batch of candidates it
builds (MetaSchedule builds one batch per task and round), to bound a memory leak of long-lived
workers. Each process imports TVM first, seconds of CPU, so at a few trials per task the
imports cost more than the builds. :class:`PooledBuilder` builds the same way, in the same kind
of process, but keeps them, recycling each after :data:`BUILDS_PER_PROCESS` builds to bound the
leak; :meth:`PooledBuilder.close` ends them. Tuning times with each builder:
``benchmarks/results/tuning_builder.json``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tvm.ir.utils import derived_object
from tvm.s_tir.meta_schedule.builder import BuilderInput, BuilderResult, PyBuilder
from tvm.s_tir.meta_schedule.builder.local_builder import _serialize_params, _worker_func
from tvm.support.popen_pool import PopenPoolExecutor, StatusKind

__all__ = ["BUILDS_PER_PROCESS", "PooledBuilder"]

#: Builds a process makes before it is replaced by a fresh one.
BUILDS_PER_PROCESS = 64


@derived_object
class PooledBuilder(PyBuilder):
    """Builds with ``f_build`` (``(mod, target, params) -> runtime.Module``) in up to
    ``max_workers`` processes kept between batches; a build over ``timeout_s`` seconds fails
    alone. Call :meth:`close` when the tuning ends."""

    def __init__(
        self, f_build: Callable[..., Any], *, max_workers: int, timeout_s: float = 30.0
    ) -> None:
        super().__init__()
        self.f_build = f_build
        self.timeout_s = timeout_s
        self.pool = PopenPoolExecutor(
            max_workers=max_workers,
            timeout=timeout_s,
            maximum_process_uses=BUILDS_PER_PROCESS,
        )

    def build(self, build_inputs: list[BuilderInput]) -> list[BuilderResult]:
        jobs = [
            (self.f_build, None, item.mod, item.target, _serialize_params(item.params))
            for item in build_inputs
        ]
        results = []
        for done in self.pool.map_with_error_catching(lambda job: _worker_func(*job), jobs):
            if done.status == StatusKind.COMPLETE:
                results.append(BuilderResult(done.value, None))
            elif done.status == StatusKind.TIMEOUT:
                error = f"PooledBuilder: timeout, killed after {self.timeout_s} s"
                results.append(BuilderResult(None, error))
            else:
                results.append(BuilderResult(None, f"PooledBuilder: {done.value}"))
        return results

    def close(self) -> None:
        """End the build processes."""
        self.pool.shutdown()
