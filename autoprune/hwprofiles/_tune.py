"""MetaSchedule tuning on this host, with one tuning database shared by every candidate of a run.

Untuned TVM code on a CPU is naive loops and no latency signal (``docs/tvm.md``), so measured TVM
latency needs MetaSchedule. Candidates of one run share most of their kernels (channel counts
are rounded to the profile's multiple), so records go into ONE database per run and target
(``database_dir``, :mod:`._database`), keyed by workload (the fused TIR function, compared
structurally): a workload already tuned there is not tuned again.

The flow (TVM 0.27, ``tvm.s_tir.meta_schedule``):

1. import to Relax (:func:`~autoprune.hwprofiles.import_to_relax`), decompose batch norm for
   inference (:func:`prepare_for_tuning`), then the fusion passes of
   ``meta_schedule.relax_integration.compile_relax`` (library dispatch, ``LegalizeOps``,
   ``AnnotateTIROpPattern``, ``FoldConstant``, ``FuseOps``, ``FuseTIR``), so the workloads
   extracted here are the ones the tuned build looks up;
2. ``relax_integration.extract_tasks``; tasks with a record in the database are reused;
3. ``tune_tasks`` on the new ones: ``EvolutionarySearch(population_size=64,
   genetic_num_iters=1)``, ``cost_model="random"``, a builder that keeps its build processes
   for the whole job (:mod:`._builder`) and whose ``f_build`` skips the slow import of
   ``tvm.s_tir.tensor_intrin`` in them (``docs/tvm.md``), and the default ``LocalRunner``;
4. :func:`build_tuned`: the same decomposition, then
   ``relax_integration.compile_relax(database, ...)``, which applies the best
   record of each workload (``MetaScheduleApplyDatabase``) and compiles the rest untuned.

Tuning runs in a kept worker process with a timeout (:func:`~._workers.run_in_worker`) and
holds the database's exclusive lock while it writes.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import platform
import sys
import time
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autoprune.errors import ConfigError
from autoprune.hwprofiles._database import (
    WORKLOADS_NAME,
    database_lock,
    load_database,
    read_database,
    record_lines,
    set_aside_unloadable,
    workload_records,
)
from autoprune.hwprofiles._profile import DeviceProfile
from autoprune.hwprofiles._records import check_input_shape, check_int, check_known_keys
from autoprune.hwprofiles._relax import (
    import_to_relax,
    local_profile,
    profile_threads,
    resolve_target,
)
from autoprune.hwprofiles._workers import (
    DEFAULT_TIMEOUT_S,
    ModelLike,
    model_from_payload,
    model_payload,
    run_in_worker,
)

if TYPE_CHECKING:
    import tvm

__all__ = [
    "TuningError",
    "TuningReport",
    "build_tuned",
    "tune_model",
]

_logger = logging.getLogger("autoprune.hwprofiles.tune")

# EvolutionarySearch settings for a random cost model on few cores: a population of 64 and one
# genetic iteration keep the search of each round cheap next to the measurements it proposes.
_POPULATION = 64
_GENETIC_ITERS = 1


class TuningError(RuntimeError):
    """MetaSchedule tuning failed in its worker (exception, crash or timeout)."""


@dataclass(frozen=True, kw_only=True)
class TuningReport:
    """What one :func:`tune_model` call did to the shared tuning database.

    Attributes:
        tasks: tuning tasks (fused TIR workloads) extracted from the model.
        new_tasks: tasks tuned by this call: those without a record in the database, and,
            with ``trials_per_task``, those with fewer records than that (a task may stay
            untuned when ``max_trials`` runs out before it gets a round).
        trials: measured candidates added to the database by this call (0 when every task was
            reused).
        seconds: wall time of the tuning worker, seconds (interpreter start, TVM import,
            extraction and tuning).
        database_dir: the database folder, absolute.
        failed_tasks: tasks whose tuning crashed MetaSchedule (kept at the records they had;
            the others were tuned one at a time around them).

    Example:
        >>> r = TuningReport(tasks=2, new_tasks=2, trials=8, seconds=17.5,
        ...                  database_dir="/tmp/run/tuning")
        >>> TuningReport.from_dict(r.to_dict()) == r
        True
    """

    tasks: int
    new_tasks: int
    trials: int
    seconds: float
    database_dir: str
    failed_tasks: tuple[str, ...] = ()

    @property
    def reused_tasks(self) -> int:
        """Tasks whose records were already in the database."""
        return self.tasks - self.new_tasks

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; ``TuningReport.from_dict(r.to_dict()) == r``."""
        return {
            "tasks": self.tasks,
            "new_tasks": self.new_tasks,
            "trials": self.trials,
            "seconds": self.seconds,
            "database_dir": self.database_dir,
            "failed_tasks": list(self.failed_tasks),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TuningReport:
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`ConfigError`."""
        check_known_keys(cls, data, "tuning report")
        return cls(
            tasks=int(data["tasks"]),
            new_tasks=int(data["new_tasks"]),
            trials=int(data["trials"]),
            seconds=float(data["seconds"]),
            database_dir=str(data["database_dir"]),
            failed_tasks=tuple(data.get("failed_tasks", ())),
        )


# --------------------------------------------------------------------------------------------
# helpers (run in the worker, or by build_tuned in the caller)
# --------------------------------------------------------------------------------------------


def prepare_for_tuning(mod: tvm.IRModule) -> tvm.IRModule:
    """Decompose inference-time composite ops, as TVM's ``static_shape_tuning_pipeline`` does.

    ``DecomposeOpsForInference`` turns ``batch_norm`` into elementwise ops that ``FuseOps``
    then fuses into the preceding convolution's epilogue: resnet20 at 1x28x28 gives 16 tasks,
    each conv with its BN (and residual add, ReLU), instead of 19 with separate conv and BN
    kernels. Tuning and :func:`build_tuned` both apply it, so their workloads match.
    """
    import tvm
    from tvm import relax

    passes = [relax.transform.DecomposeOpsForInference(), relax.transform.CanonicalizeBindings()]
    return tvm.transform.Sequential(passes)(mod)


def _fusion_passes(target: tvm.target.Target) -> list[Any]:
    """The passes ``compile_relax`` runs before ``MetaScheduleApplyDatabase`` (same keys)."""
    from tvm import relax
    from tvm.relax import pipeline

    try:
        dispatch = list(pipeline.library_dispatch_passes(target))
    except (ValueError, AttributeError):  # as compile_relax: no dispatch for this target
        dispatch = []
    return [
        *dispatch,
        relax.transform.LegalizeOps(),
        relax.transform.AnnotateTIROpPattern(),
        relax.transform.FoldConstant(),
        relax.transform.FuseOps(),
        relax.transform.FuseTIR(),
    ]


def _import_cpu_tensor_intrinsics_only() -> None:
    """Register this host's CPU tensor intrinsics without importing the GPU ones.

    ``TuneContext`` imports ``tvm.s_tir.tensor_intrin``, whose ``__init__`` imports the CUDA,
    ROCm and Hexagon intrinsics too, most of the import time. Tuning targets this host's
    CPU, where only its own intrinsics can apply, so a bare package module is put in
    ``sys.modules`` and only its ``x86`` (or ``arm_cpu`` on aarch64) submodule imported. Only
    done in the tuning worker (not the caller's process), and only when the package is not
    imported yet; on failure TVM's full import runs as usual.
    """
    name = "tvm.s_tir.tensor_intrin"
    if name in sys.modules:
        return
    import tvm.s_tir

    spec = importlib.util.find_spec(name)
    if spec is None or spec.submodule_search_locations is None:
        return
    package = types.ModuleType(name)
    package.__path__ = list(spec.submodule_search_locations)
    package.__package__ = name
    package.__spec__ = spec
    sys.modules[name] = package
    tvm.s_tir.tensor_intrin = package  # type: ignore[attr-defined]
    try:
        cpu = "arm_cpu" if platform.machine().lower() in ("aarch64", "arm64") else "x86"
        importlib.import_module(f"{name}.{cpu}")
    except Exception:  # noqa: BLE001 - fall back to TVM's own (slow) import
        del sys.modules[name]
        _logger.debug("CPU-only tensor intrinsics failed; importing all of them", exc_info=True)


def _make_f_build() -> Callable[..., Any]:
    """A MetaSchedule ``f_build`` without ``default_build``'s tensor-intrinsic import.

    Nested, so cloudpickle sends it to the builder's workers by value: they need not import
    autoprune (and torch) to run it.
    """

    def f_build(mod: Any, target: Any, _params: Any) -> Any:
        import tvm
        from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

        mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod)
        return tvm.tirx.build(mod, target=target)

    return f_build


def trials_per_round(max_trials: int, new_tasks: int) -> int:
    """Trials per task and round: 8, fewer so that every new task gets one round.

    Example:
        >>> trials_per_round(64, 4), trials_per_round(8, 2), trials_per_round(3, 5)
        (8, 4, 1)
    """
    return max(1, min(8, max_trials // max(1, new_tasks)))


def _tune_job(payload: Mapping[str, Any]) -> dict[str, Any]:
    """Worker body of :func:`tune_model`: extract, tune the new tasks, count."""
    import tvm
    from tvm.s_tir import meta_schedule as ms

    work_dir = str(payload["database_dir"])
    target = tvm.target.Target(resolve_target(payload["target"]))
    model = model_from_payload(payload["model"])
    mod = prepare_for_tuning(import_to_relax(model, tuple(payload["input_shape"])))
    with target:
        fused = tvm.transform.Sequential(_fusion_passes(target))(mod)
    tasks = ms.relax_integration.extract_tasks(fused, target)
    with database_lock(work_dir, exclusive=True):
        database = load_database(work_dir)
        before = len(database)
        lines_before = record_lines(work_dir)
        # Trials each task still lacks: a task without records is new; with trials_per_task,
        # one tuned with fewer trials (a run resumed with a larger budget) is tuned further.
        cap = payload["trials_per_task"]
        wanted = 1 if cap is None else int(cap)
        missing = [
            wanted - workload_records(database, task.dispatched[0], wanted) for task in tasks
        ]
        new = [task for task, lack in zip(tasks, missing, strict=True) if lack > 0]
        lacking = [lack for lack in missing if lack > 0]
        failed: list[str] = []
        if new and payload["max_trials"] > 0:
            _import_cpu_tensor_intrinsics_only()
            # MetaSchedule's console handler takes this level (per-task tables at INFO on
            # stdout); its log files under <database_dir>/logs keep everything.
            logging.getLogger("tvm.s_tir.meta_schedule").setLevel(logging.WARNING)
            budget = int(payload["max_trials"])
            if cap is not None:  # no more than the tasks lack
                budget = min(budget, sum(lacking))
            try:
                _tune_tasks(new, lacking, budget, database, payload)
            except Exception as error:  # noqa: BLE001 - isolate the kernel that breaks
                # A task whose search crashes MetaSchedule (seen: "parallel_for_dynamic error"
                # replaying one workload's records) must not cost the others their tuning:
                # tune one task at a time and keep going past the ones that fail.
                _logger.warning("tuning the tasks together failed (%s); one at a time", error)
                for task in new:
                    lack = wanted - workload_records(database, task.dispatched[0], wanted)
                    if lack <= 0:  # tuned before the crash
                        continue
                    try:
                        _tune_tasks([task], [lack], lack, database, payload)
                    except Exception as task_error:  # noqa: BLE001
                        _logger.warning("task %s not tuned: %s", task.task_name, task_error)
                        failed.append(task.task_name)
                if len(failed) == len(new):
                    raise
        trials = len(database) - before
        if trials:  # what this call wrote must load in the next process too
            set_aside_unloadable(work_dir, first=lines_before)
    return {
        "tasks": len(tasks),
        "new_tasks": len(new),
        "trials": trials,
        "failed_tasks": failed,
    }


def _tune_tasks(
    tasks: list[Any], lacking: list[int], budget: int, database: Any, payload: Mapping[str, Any]
) -> None:
    """``tune_tasks`` on ``tasks`` (each lacking ``lacking[i]`` records), ``budget`` trials."""
    from tvm.s_tir import meta_schedule as ms

    from autoprune.hwprofiles._builder import PooledBuilder

    work_dir = str(payload["database_dir"])
    threads = int(payload["threads"])
    strategy = ms.search_strategy.EvolutionarySearch(
        population_size=_POPULATION, genetic_num_iters=_GENETIC_ITERS
    )
    contexts, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(
        tasks, work_dir, strategy=strategy, num_threads=threads, seed=payload["seed"]
    )
    builder = PooledBuilder(_make_f_build(), max_workers=threads)
    try:
        ms.tune_tasks(
            tasks=contexts,
            task_weights=weights,
            work_dir=work_dir,
            max_trials_global=budget,
            max_trials_per_task=None if payload["trials_per_task"] is None else max(lacking),
            num_trials_per_iter=trials_per_round(budget, len(tasks)),
            builder=builder,
            runner=ms.runner.LocalRunner(),
            database=database,
            cost_model="random",
        )
    finally:
        builder.close()


def tune_model(
    model: ModelLike,
    input_shape: tuple[int, int, int],
    profile: DeviceProfile | str,
    *,
    database_dir: str | os.PathLike[str],
    max_trials: int,
    trials_per_task: int | None = None,
    threads: int | None = None,
    seed: int = 0,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> TuningReport:
    """Tune ``model``'s kernels with MetaSchedule on this host into a shared database.

    Tasks (fused TIR workloads) are extracted from the Relax module of ``model`` at batch 1;
    those with a record in ``database_dir`` are reused, the others are tuned together for at
    most ``max_trials`` measured candidates (``cost_model="random"``, module docstring) and
    their records appended. Give every candidate of a run (and target) the same
    ``database_dir``: a later candidate with the same conv workloads tunes nothing. Then
    a :class:`~autoprune.hwprofiles.TvmRunner` with that ``database_dir`` builds with it.

    Everything runs in a worker process limited to ``timeout_s`` seconds (tuning times
    of a resnet20: ``benchmarks/results/tvm_tuning.json``).

    Args:
        model: an ``nn.Module`` (picklable) or a :class:`Candidate`.
        input_shape: ``(C, H, W)`` of one input, pixels.
        profile: a profile or its name; its target must run here (``"host"``).
        database_dir: the run's tuning database folder (created if absent), e.g.
            ``<run_dir>/tuning/<profile>``.
        max_trials: measured candidates for all new tasks together (0 tunes nothing).
        trials_per_task: records each task should have; a task with fewer (a run resumed
            with a larger budget) is tuned further, by the difference (MetaSchedule's per-task
            cap is the largest difference). Default: tune only tasks without a record, up to
            ``max_trials``. Trials go in rounds of ``min(8, budget //
            new tasks)`` (at least 1) per task; MetaSchedule's gradient task scheduler gives
            each task a first round before it favours the slow ones.
        threads: CPU threads for builder, runner and tuned code; default the profile's
            ``num-cores``, or the cores available.
        seed: MetaSchedule's random seed.
        timeout_s: wall-clock limit of the worker, seconds.

    Raises:
        TuningError: the worker failed (exception, crash or timeout); records measured before
            a crash or timeout stay in the database.
        ConfigError: the profile's target does not run on this host, or a bad argument.

    Example (MetaSchedule's start alone takes most of a minute on 2 cores, so this one is not
    run as a doctest; ``tests/hwprofiles/test_hwprofiles_tune.py`` runs it)::

        net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU())
        r = tune_model(net, (1, 8, 8), "host", database_dir="db", max_trials=2)
        r.tasks, r.new_tasks, r.trials  # (1, 1, 2); a second call: (1, 0, 0)
    """
    shape = check_input_shape(input_shape)
    profile = local_profile(profile)
    check_int(max_trials, "max_trials", 0)
    if trials_per_task is not None:
        check_int(trials_per_task, "trials_per_task", 1)
    spec = profile.tvm_target_spec()
    if threads is None:
        threads = profile_threads(profile)
    check_int(threads, "threads", 1)
    check_int(seed, "seed", 0)
    folder = Path(database_dir).resolve()
    if folder.exists() and not folder.is_dir():
        raise ConfigError(
            f"`database_dir` must be a folder, but {str(folder)!r} is a file; pass a folder path"
        )
    folder.mkdir(parents=True, exist_ok=True)
    payload = {
        "model": model_payload(model),
        "input_shape": shape,
        "target": spec,
        "database_dir": str(folder),
        "max_trials": max_trials,
        "trials_per_task": trials_per_task,
        "threads": threads,
        "seed": seed,
    }
    _logger.info("tuning on %s into %s (up to %d trials)", profile.name, folder, max_trials)
    started = time.monotonic()
    ok, value = run_in_worker(_tune_job, payload, threads=threads, timeout_s=timeout_s, keep="tvm")
    if not ok:
        raise TuningError(f"MetaSchedule tuning on {profile.name} failed: {value}")
    report = TuningReport(
        tasks=value["tasks"],
        new_tasks=value["new_tasks"],
        trials=value["trials"],
        seconds=time.monotonic() - started,
        database_dir=str(folder),
        failed_tasks=tuple(value.get("failed_tasks", ())),
    )
    if report.failed_tasks:
        _logger.warning(
            "%d kernel(s) could not be tuned (MetaSchedule crashed on them): %s",
            len(report.failed_tasks),
            ", ".join(report.failed_tasks),
        )
    _logger.info(
        "tuned %d of %d tasks (%d reused) with %d trials in %.1f s",
        report.new_tasks,
        report.tasks,
        report.reused_tasks,
        report.trials,
        report.seconds,
    )
    return report


def build_tuned(
    mod: tvm.IRModule,
    target_spec: str | Mapping[str, Any],
    database_dir: str | os.PathLike[str],
) -> tvm.runtime.Executable:
    """Compile a Relax module for ``target_spec`` with the tuned kernels of ``database_dir``.

    ``meta_schedule.relax_integration.compile_relax``: fuse, replace each fused TIR function
    that has a record by its best schedule (``MetaScheduleApplyDatabase``), lower the rest as
    :func:`~autoprune.hwprofiles.build_for_target` does. Runs in the calling process; reads
    under a shared lock, so a tuner writing the same database waits.

    Raises:
        ConfigError: ``database_dir`` holds no MetaSchedule database.

    Example:
        >>> from torch import nn
        >>> from autoprune.hwprofiles import import_to_relax, load_profile
        >>> mod = import_to_relax(nn.Conv2d(1, 8, 3), (1, 8, 8))
        >>> from autoprune.hwprofiles._database import load_database
        >>> Path("db").mkdir()
        >>> _ = load_database("db")  # an empty database; tune_model fills one
        >>> ex = build_tuned(mod, load_profile("host").tvm_target_spec(), "db")
        >>> type(ex).__name__
        'VMExecutable'
    """
    folder = Path(database_dir)
    if not (folder / WORKLOADS_NAME).is_file():
        raise ConfigError(
            f"`database_dir` {str(folder)!r} holds no MetaSchedule database ({WORKLOADS_NAME}); "
            "run tune_model(..., database_dir=...) first, or pass the run's tuning folder"
        )
    import tvm
    from tvm.s_tir import meta_schedule as ms

    target = tvm.target.Target(resolve_target(target_spec))
    with database_lock(folder, exclusive=False):
        database = read_database(folder)
    if database is None:  # a record TVM cannot parse: set it aside
        with database_lock(folder, exclusive=True):
            database = load_database(folder)
    return ms.relax_integration.compile_relax(database, prepare_for_tuning(mod), target, None)
