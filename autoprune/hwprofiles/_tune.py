"""MetaSchedule tuning on this host, with one tuning database shared by every candidate of a run.

Untuned TVM code on a CPU is naive loops and no latency signal (shared/TVM.md), so measured TVM
latency needs MetaSchedule. Tuning one candidate costs seconds to minutes; candidates of one run
share most of their kernels (channel counts are rounded to the profile's multiple), so records
go into ONE :class:`tvm.s_tir.meta_schedule.database.JSONDatabase` per run and target
(``database_dir``), keyed by workload (the fused TIR function, compared structurally): a workload
already tuned there is not tuned again.

The flow (TVM 0.27, ``tvm.s_tir.meta_schedule``):

1. import to Relax (:func:`~autoprune.hwprofiles.import_to_relax`), decompose batch norm for
   inference (:func:`prepare_for_tuning`), then the fusion passes of
   ``meta_schedule.relax_integration.compile_relax`` (library dispatch, ``LegalizeOps``,
   ``AnnotateTIROpPattern``, ``FoldConstant``, ``FuseOps``, ``FuseTIR``), so the workloads
   extracted here are the ones the tuned build looks up;
2. ``relax_integration.extract_tasks``; tasks with a record in the database are reused;
3. ``tune_tasks`` on the new ones: ``EvolutionarySearch(population_size=64,
   genetic_num_iters=1)``, ``cost_model="random"``, a ``LocalBuilder`` whose ``f_build`` skips
   the 39 s import of ``tvm.s_tir.tensor_intrin`` in every build worker (shared/TVM.md), and the
   default ``LocalRunner``;
4. :func:`build_tuned`: the same decomposition, then
   ``relax_integration.compile_relax(database, ...)``, which applies the best
   record of each workload (``MetaScheduleApplyDatabase``) and compiles the rest untuned.

Tuning runs in a fresh worker process with a timeout (``run_in_worker``). Writers of one
database are serialised by an exclusive ``flock`` on ``<database_dir>/autoprune-tune.lock``
(readers take it shared), so parallel trials of one run can share it on one host.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import importlib.util
import logging
import os
import platform
import sys
import time
import types
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autoprune.errors import ConfigError
from autoprune.hwprofiles._measure import (
    DEFAULT_TIMEOUT_S,
    ModelLike,
    check_input_shape,
    default_threads,
    model_from_payload,
    model_payload,
    run_in_worker,
)
from autoprune.hwprofiles._profile import DeviceProfile
from autoprune.hwprofiles._tvm import _local_profile, import_to_relax, resolve_target

if TYPE_CHECKING:
    import tvm

__all__ = [
    "TuningError",
    "TuningReport",
    "build_tuned",
    "tune_model",
]

_logger = logging.getLogger("autoprune.hwprofiles.tune")

#: Name of the lock file in a database folder (exclusive while tuning, shared while building).
LOCK_NAME = "autoprune-tune.lock"
#: MetaSchedule's JSONDatabase files in ``work_dir``.
RECORDS_NAME = "database_tuning_record.json"
WORKLOADS_NAME = "database_workload.json"

# EvolutionarySearch settings measured in shared/TVM.md on resnet18 at 32x32 with a random cost
# model: population 64 and one genetic iteration keep the per-round search cheap on 2 cores.
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
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise ConfigError(
                f"unknown tuning report key(s) {unknown}; valid keys: {', '.join(names)}"
            )
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


@contextlib.contextmanager
def database_lock(database_dir: str | os.PathLike[str], *, exclusive: bool) -> Iterator[None]:
    """Hold ``flock`` on the database's lock file: exclusive to tune, shared to read."""
    path = Path(database_dir) / LOCK_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def record_count(database_dir: str | os.PathLike[str]) -> int:
    """Tuning records in a database folder (lines of its record file; 0 when absent).

    Example:
        >>> record_count("/nonexistent")
        0
    """
    try:
        with open(Path(database_dir) / RECORDS_NAME, "rb") as handle:
            return sum(1 for line in handle if line.strip())
    except FileNotFoundError:
        return 0


def _database_loads(work_dir: str | os.PathLike[str]) -> bool:
    """Whether MetaSchedule can load the JSON database in ``work_dir``."""
    from tvm.s_tir import meta_schedule as ms

    try:
        ms.database.JSONDatabase(work_dir=str(work_dir))
    except Exception:  # noqa: BLE001 - any parse or replay error makes it unloadable
        return False
    return True


def _loads(scratch: Path, lines: list[str]) -> bool:
    """Whether ``lines`` (records) load beside the database's workloads, in ``scratch``."""
    (scratch / RECORDS_NAME).write_text("".join(lines))
    return _database_loads(scratch)


def set_aside_unloadable(work_dir: str | os.PathLike[str], *, first: int = 0) -> int:
    """Move the record lines from ``first`` on that TVM cannot load out of the database.

    TVM 0.27 writes some records that it then fails to parse (seen: a ``mean`` reduction's
    trace with ``RFactor`` tuned here; loading stops with "parallel_for_dynamic error"), and
    one such line makes the whole database unloadable: every later tuning and tuned build of
    the run would fail. Records parse independently, so the lines from ``first`` on are loaded
    alone (beside the workloads) in a scratch folder, and a bad line is found by bisection.
    Bad lines go to ``database_tuning_record.rejected.json``. Returns how many were set aside.
    Hold the database's exclusive lock (:func:`database_lock`) when calling this.
    """
    folder = Path(work_dir)
    records = folder / RECORDS_NAME
    if not records.exists():
        return 0
    scratch = folder / "autoprune-scratch"
    scratch.mkdir(exist_ok=True)
    rejected: list[str] = []
    try:
        (scratch / WORKLOADS_NAME).write_bytes((folder / WORKLOADS_NAME).read_bytes())
        lines = records.read_text().splitlines(keepends=True)
        while first < len(lines) and not _loads(scratch, lines[first:]):
            good, bad = first, len(lines)  # lines[first:good] load, lines[first:bad] do not
            while bad - good > 1:
                middle = (good + bad) // 2
                good, bad = (
                    (middle, bad) if _loads(scratch, lines[first:middle]) else (good, middle)
                )
            rejected.append(lines.pop(bad - 1))
            first = bad - 1  # the lines before it load
        if rejected:
            temporary = records.with_suffix(".tmp")
            temporary.write_text("".join(lines))
            os.replace(temporary, records)
            with open(folder / "database_tuning_record.rejected.json", "a") as handle:
                handle.writelines(r if r.endswith("\n") else r + "\n" for r in rejected)
            _logger.warning(
                "%d tuning record(s) of %s cannot be loaded by TVM; set aside in %s",
                len(rejected),
                records,
                "database_tuning_record.rejected.json",
            )
    finally:
        for child in scratch.iterdir():
            child.unlink()
        scratch.rmdir()
    return len(rejected)


def load_database(work_dir: str | os.PathLike[str]) -> Any:
    """MetaSchedule's JSON database in ``work_dir``; records TVM cannot load are set aside
    first (:func:`set_aside_unloadable`). Hold the exclusive lock when calling this."""
    from tvm.s_tir import meta_schedule as ms

    try:
        return ms.database.JSONDatabase(work_dir=str(work_dir))
    except Exception:  # noqa: BLE001 - a record TVM cannot parse
        set_aside_unloadable(work_dir)
        return ms.database.JSONDatabase(work_dir=str(work_dir))


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
    """Register this host's CPU tensor intrinsics without the 23-39 s of GPU ones.

    ``TuneContext`` imports ``tvm.s_tir.tensor_intrin``, whose ``__init__`` imports the CUDA,
    ROCm and Hexagon intrinsics too (23-26 s here, 15 s of it CUDA). Tuning targets this host's
    CPU, where only its own intrinsics can apply, so a bare package module is put in
    ``sys.modules`` and only its ``x86`` (or ``arm_cpu`` on aarch64) submodule imported. Only
    done in the tuning worker (a fresh process), and only when the package is not imported yet;
    on failure TVM's full import runs as usual.
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
    """Trials per task and round: 8 (shared/TVM.md), fewer so that every new task gets one.

    Example:
        >>> trials_per_round(64, 4), trials_per_round(8, 2), trials_per_round(3, 5)
        (8, 4, 1)
    """
    return max(1, min(8, max_trials // max(1, new_tasks)))


def _records(database: Any, mod: Any, at_most: int) -> int:
    """Tuning records of a workload in the database, counting up to ``at_most``."""
    # has_workload first: commit_workload (needed by get_top_k) would write the workload.
    if not database.has_workload(mod):
        return 0
    return len(database.get_top_k(database.commit_workload(mod), at_most))


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
        lines_before = _record_lines(work_dir)
        # Trials each task still lacks: a task without records is new; with trials_per_task,
        # one tuned with fewer trials (a run resumed with a larger budget) is tuned further.
        cap = payload["trials_per_task"]
        wanted = 1 if cap is None else int(cap)
        missing = [wanted - _records(database, task.dispatched[0], wanted) for task in tasks]
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
                    lack = wanted - _records(database, task.dispatched[0], wanted)
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


def _record_lines(work_dir: str | os.PathLike[str]) -> int:
    """Lines in the database's record file (0 when it does not exist yet)."""
    path = Path(work_dir) / RECORDS_NAME
    if not path.exists():
        return 0
    with open(path, "rb") as handle:
        return sum(1 for _ in handle)


def _tune_tasks(
    tasks: list[Any], lacking: list[int], budget: int, database: Any, payload: Mapping[str, Any]
) -> None:
    """``tune_tasks`` on ``tasks`` (each lacking ``lacking[i]`` records), ``budget`` trials."""
    from tvm.s_tir import meta_schedule as ms

    work_dir = str(payload["database_dir"])
    threads = int(payload["threads"])
    strategy = ms.search_strategy.EvolutionarySearch(
        population_size=_POPULATION, genetic_num_iters=_GENETIC_ITERS
    )
    contexts, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(
        tasks, work_dir, strategy=strategy, num_threads=threads, seed=payload["seed"]
    )
    ms.tune_tasks(
        tasks=contexts,
        task_weights=weights,
        work_dir=work_dir,
        max_trials_global=budget,
        max_trials_per_task=None if payload["trials_per_task"] is None else max(lacking),
        num_trials_per_iter=trials_per_round(budget, len(tasks)),
        builder=ms.builder.LocalBuilder(f_build=_make_f_build(), max_workers=threads),
        runner=ms.runner.LocalRunner(),
        database=database,
        cost_model="random",
    )


# --------------------------------------------------------------------------------------------
# public
# --------------------------------------------------------------------------------------------


def _check_positive_int(value: object, what: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"`{what}` must be an integer >= {minimum}, but got {value!r}")
    return value


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
    :func:`~autoprune.hwprofiles.measure_tvm_latency` with ``database_dir=`` builds with it.

    Everything runs in a fresh worker process limited to ``timeout_s`` seconds. Measured here
    (2 cores): a 2-conv net at 1x8x8, 8 trials, about 20 s; resnet20 at 1x28x28, see
    ``benchmarks/results/tvm_tuning.json``.

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

    Example:
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(),
        ...                     nn.Conv2d(8, 8, 3, padding=1))
        >>> r = tune_model(net, (1, 8, 8), "host", database_dir="/tmp/db", max_trials=8)
        >>> r.tasks, r.new_tasks, r.trials      # a second call: (2, 0, 0)
        (2, 2, 8)
    """
    shape = check_input_shape(input_shape)
    profile = _local_profile(profile)
    _check_positive_int(max_trials, "max_trials", 0)
    if trials_per_task is not None:
        _check_positive_int(trials_per_task, "trials_per_task", 1)
    spec = profile.tvm_target_spec()
    if threads is None:
        cores = spec.get("num-cores") if isinstance(spec, Mapping) else None
        threads = int(cores) if cores else default_threads()
    _check_positive_int(threads, "threads", 1)
    _check_positive_int(seed, "seed", 0)
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
    ok, value = run_in_worker(_tune_job, payload, threads=threads, timeout_s=timeout_s)
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
    :func:`~autoprune.hwprofiles.build_for_target` does. Runs in the calling process (about
    0.2 s for a 2-conv net); reads under a shared lock, so a tuner writing the same database
    waits.

    Raises:
        ConfigError: ``database_dir`` holds no MetaSchedule database.

    Example:
        >>> from torch import nn
        >>> from autoprune.hwprofiles import import_to_relax, load_profile
        >>> mod = import_to_relax(nn.Conv2d(1, 8, 3), (1, 8, 8))
        >>> ex = build_tuned(mod, load_profile("host").tvm_target_spec(), "/tmp/db")
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
        try:
            database = ms.database.JSONDatabase(work_dir=str(folder))
        except Exception:  # noqa: BLE001 - a record TVM cannot parse: set it aside, below
            database = None
    if database is None:
        with database_lock(folder, exclusive=True):
            database = load_database(folder)
    return ms.relax_integration.compile_relax(database, prepare_for_tuning(mod), target, None)
