"""Parallel trials on Ray Tune: the same objective, study and budget as the local loop.

``run_search`` imports this module (and with it Ray) only when a run sets ``search.ray_address``
or ``search.workers > 1``. The pieces, in the order a trial passes through them:

1. **Proposal (driver).** :class:`StudySearch`, an ``OptunaSearch`` subclass, asks the run's
   own study (opened by ``run_search`` through :class:`RunDir`, with the objectives'
   directions and metric names, hypervolume reference, queued base model and re-queued
   interrupted trials) with the controller's sampler. Queued
   trials come first, as in the local loop. The Tune config of the trial carries the Optuna
   trial number, its params and its user attributes as one JSON string (decision names hold
   ``/``, which Tune would read as nesting).
   Before it dispatches a trial, the driver looks in the study for an earlier trial that
   trained the same architecture (:meth:`CandidateObjective.reuse`): such a trial is told at
   once, with that result, and never reaches a worker.
2. **Evaluation (worker).** :func:`evaluate_trial` assembles the run's objective from its
   config (:func:`assemble`, as the driver does) in a folder of the worker node's own
   (:func:`worker_scratch`: kernel lists, measurements, tuning database, base model) and runs it
   on a :class:`RecordedTrial` (the same code as the local loop), which records what the
   objective sets. It reports the objective values and the JSON recording as the Tune result.
   The worker never opens the run directory or the study: its attempts, its trained weights
   and the study's trials it reads (early stopping) go through :class:`RunService`, an actor on
   the driver's node, so the run directory may exist on the head node alone.
3. **Record (driver).** ``StudySearch.on_trial_complete`` applies the recorded user attributes
   and constraints to the study's trial (:func:`apply_recording`) and tells the study, so that
   the sampler sees the constraints. The driver is the only writer of the study.

Retries: a trial whose worker died (killed, out of memory, node lost) is restarted by Tune with
the same config, hence the same Optuna trial and params, up to ``search.max_failures`` times
(``FailureConfig``). The study hears of a trial once, when Tune completes it, so a retried
evaluation is never counted twice; every attempt is listed in the trial's ``attempts.jsonl``
(:meth:`RunDir.attempts_file`).
A trial whose retries ran out is told ``FAIL`` with an ``error`` and counts toward
``search.trials`` like any failed trial. A trial Tune stops before it reported (Ctrl-C) is
``FAIL`` with ``interrupted=True``; the next invocation re-runs it, as in the local loop.

``search.timeout_s`` stops proposing new trials after that many seconds; running ones finish.
``search.workers`` caps the trials running at once; each reserves ``cpus_per_trial`` CPUs and
``gpus_per_trial`` GPUs. Without ``ray_address`` a local Ray instance is started for the run
(no dashboard, session files in a temporary folder removed afterwards) and shut down after it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import pwd
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import ray
from ray import tune
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from autoprune.config import SearchConfig, config_from_dict
from autoprune.errors import ConfigError
from autoprune.search import _optuna
from autoprune.search import _schema as attrs
from autoprune.search._assembly import RunParts, assemble
from autoprune.search._objective import CandidateObjective, RecordedTrial, apply_recording
from autoprune.search._pareto import OBJECTIVES
from autoprune.search._ray_service import RunService, StudyView, run_key, worker_scratch
from autoprune.search._rundir import RunDir

__all__ = ["StudySearch", "evaluate_trial", "optimize_with_ray"]

_logger = logging.getLogger("autoprune.search")

#: Tune config key holding the trial to evaluate (JSON: number, params, user_attrs).
TASK_KEY = "autoprune_trial"
#: Tune result key holding the evaluation's recording (JSON, see RecordedTrial.recording).
RECORDING_KEY = "autoprune_recording"
_METRICS = [name for name, _ in OBJECTIVES]
_MODES = ["max" if direction == "maximize" else "min" for _, direction in OBJECTIVES]

_Callback = Callable[[optuna.Study, optuna.trial.FrozenTrial], None]


@dataclass(frozen=True)
class _Job:
    """What a worker needs besides the trial: the run's resolved config, the run's identity
    (:func:`run_key`) and the :class:`RunService` actor that holds its run directory."""

    config: dict[str, Any]
    run_key: str
    service: Any  # ray.actor.ActorHandle of RunService


_objectives: dict[str, CandidateObjective] = {}  # per worker process, by job


def _objective_for(job: _Job) -> CandidateObjective:
    key = json.dumps([job.run_key, job.config], sort_keys=True)
    if key not in _objectives:
        scratch = worker_scratch(job.run_key)
        parts = assemble(config_from_dict(job.config), run=scratch)
        _objectives[key] = parts.objective(scratch, reuse_trained=False)
        _send(job, scratch, scratch.base_dir / "eval.json")  # model.weights' measured accuracy
    return _objectives[key]


def _send(job: _Job, scratch: RunDir, path: Path, *, remove: bool = False) -> None:
    """Copy ``path`` of the worker's folder to the same place in the driver's run directory."""
    if path.is_file():
        relative = str(path.relative_to(scratch.path))
        ray.get(job.service.save_file.remote(relative, path.read_bytes()))
        if remove:
            path.unlink()


def _user() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:  # a uid without a passwd entry (containers)
        return str(os.getuid())


def evaluate_trial(config: dict[str, Any], job: _Job) -> None:
    """Tune function trainable: evaluate one study trial and report its recording.

    An exception of the objective is a result (the trial failed, ``error`` recorded), not a
    Tune failure: Tune re-runs only trials whose worker died. The trained weights reach the
    driver's run directory through ``job.service`` before the result is reported.
    """
    task = json.loads(config[TASK_KEY])
    number = int(task["number"])
    worker = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "user": _user(),
        "node": ray.get_runtime_context().get_node_id(),
        "gpus": [str(g) for g in ray.get_gpu_ids()],  # CUDA_VISIBLE_DEVICES: what torch sees
    }
    worker = {"attempt": ray.get(job.service.start_attempt.remote(number, worker)), **worker}
    trial = RecordedTrial(
        number=number,
        params=task["params"],
        user_attrs=task["user_attrs"],
        load_study=lambda: StudyView(job.service),  # type: ignore[arg-type,return-value]
    )
    attrs.RAY_WORKER.set(trial, worker)
    values: Sequence[float] | None
    pruned = False
    objective = _objective_for(job)
    weights = objective.run.weights_file(number)
    weights.unlink(missing_ok=True)  # an earlier attempt's, killed before it sent them
    try:
        values = objective(trial)
    except optuna.TrialPruned:  # stopped early: its attributes say why
        values, pruned = None, True
    except Exception:  # recorded as the trial's `error` by the objective
        _logger.warning("trial %d failed: %s", number, attrs.ERROR.get(trial))
        values = None
    _send(job, objective.run, weights, remove=True)
    metrics = (
        dict.fromkeys(_METRICS, math.nan)
        if values is None
        else dict(zip(_METRICS, values, strict=True))
    )
    recording = {**trial.recording(values), "pruned": pruned}
    tune.report({**metrics, RECORDING_KEY: json.dumps(recording)})


class StudySearch(OptunaSearch):
    """``OptunaSearch`` on the run's study that hands trials to :func:`evaluate_trial`.

    The one place autoprune uses Ray's private attributes (``OptunaSearch``'s ``_ot_study``,
    ``_ot_trials``, ``_space``, ``_completed_trials``): Tune's searcher interface has no public
    way to ask a given study; ``tests/search/test_ray.py`` fails loudly if they change.

    ``storage`` and ``study_name`` name the study ``run_search`` opened; ``callbacks`` are called
    as ``callback(study, frozen_trial)`` after each tell, as in ``Study.optimize``; ``n_trials``
    trials are proposed in all, none after ``deadline`` (``time.monotonic()`` seconds). A
    proposal whose architecture a study trial trained before is told at once with that result
    (``objective.reuse``) and not handed to Tune.
    """

    def __init__(
        self,
        *,
        space: dict[str, optuna.distributions.BaseDistribution],
        sampler: optuna.samplers.BaseSampler,
        storage: optuna.storages.BaseStorage,
        study_name: str,
        run: RunDir,
        max_failures: int,
        n_trials: int,
        objective: CandidateObjective | None = None,
        callbacks: Sequence[_Callback] = (),
        deadline: float | None = None,
    ) -> None:
        super().__init__(
            space=space,
            metric=list(_METRICS),
            mode=list(_MODES),
            sampler=sampler,
            storage=storage,
            study_name=study_name,
        )
        self._callbacks = list(callbacks)
        self._deadline = deadline
        self._max_failures = max_failures
        self._run = run
        self._n_trials = n_trials
        self._proposed = 0
        self._objective = objective
        self.interrupted = 0  # trials stopped before they reported
        self.reused = 0  # trials told on the driver, with an earlier trial's training

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        while trial_id not in self._ot_trials:
            if self._proposed >= self._n_trials or (
                self._deadline is not None and time.monotonic() >= self._deadline
            ):
                return Searcher.FINISHED
            trial = self._ot_study.ask(fixed_distributions=self._space)
            self._proposed += 1
            if not self._told_reused(trial):
                self._ot_trials[trial_id] = trial
        trial = self._ot_trials[trial_id]
        task = {"number": trial.number, "params": trial.params, "user_attrs": trial.user_attrs}
        return {TASK_KEY: json.dumps(task)}

    def _told_reused(self, trial: optuna.Trial) -> bool:
        """Tell ``trial`` now if an earlier trial trained its architecture; whether it did."""
        if self._objective is None:
            return False
        recorded = RecordedTrial(
            number=trial.number,
            params=trial.params,
            user_attrs=trial.user_attrs,
            study=self._ot_study,
        )
        values = self._objective.reuse(recorded)
        if values is None:
            return False
        apply_recording(trial, recorded.recording(values))
        self._tell(trial, values, optuna.trial.TrialState.COMPLETE)
        self.reused += 1
        return True

    def _tell(
        self,
        trial: optuna.Trial,
        values: Sequence[float] | None,
        state: optuna.trial.TrialState,
    ) -> None:
        frozen = self._ot_study.tell(trial, values, state=state)
        for callback in self._callbacks:
            callback(self._ot_study, frozen)

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        pass  # one result per trial, handled on completion

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        trial = self._ot_trials[trial_id]
        recording = (result or {}).get(RECORDING_KEY)
        values, pruned = None, False
        if recording is not None:
            recorded = json.loads(recording)
            values, pruned = apply_recording(trial, recorded), bool(recorded.get("pruned"))
        elif error:
            attrs.ERROR.set(
                trial,
                f"Ray worker died on each of {self._max_failures + 1} attempts "
                f"(search.max_failures={self._max_failures}); see "
                f"{self._run.attempts_file(trial.number)}",
            )
        else:  # stopped before it reported: re-run by the next invocation
            attrs.INTERRUPTED.set(trial, True)
            self.interrupted += 1
        state = optuna.trial.TrialState.COMPLETE
        if pruned:
            state = optuna.trial.TrialState.PRUNED
        elif values is None:
            state = optuna.trial.TrialState.FAIL
        self._completed_trials.add(trial_id)
        self._tell(trial, values, state)

    def save(self, checkpoint_path: str) -> None:
        """Tune's searcher checkpoint: only the map of Tune trials to study trials, as JSON (the
        study storage is the state of a run; a run continues by running ``search`` again, and
        nothing reads this file back: a run directory from elsewhere holds no pickle of ours)."""
        numbers = {tid: t.number for tid, t in self._ot_trials.items()}
        with open(checkpoint_path, "w", encoding="utf-8") as handle:
            json.dump({"optuna_trial_numbers": numbers}, handle)

    def restore(self, checkpoint_path: str) -> None:
        raise NotImplementedError(
            "autoprune runs are continued by running `autoprune search` again on the run "
            "directory, not by restoring the Tune experiment"
        )


@contextlib.contextmanager
def _environment(**defaults: str) -> Iterator[None]:
    """Set environment variables the user has not set, for the duration of the block."""
    added = {k: v for k, v in defaults.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


def _signal_handlers() -> dict[signal.Signals, Any]:
    """The SIGINT and SIGTERM handlers now, to restore after the run: ``ray.init`` and
    ``Tuner.fit`` install their own and leave them behind (Tune's would swallow the first Ctrl-C
    after the run has ended)."""
    return {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}


def _restore_signal_handlers(handlers: dict[signal.Signals, Any]) -> None:
    if threading.current_thread() is threading.main_thread():  # only it may set handlers
        for signum, handler in handlers.items():
            if handler is not None:  # None: set outside Python, not restorable from here
                signal.signal(signum, handler)


def _trial_dirname(trial: Any) -> str:
    return f"trial-{json.loads(trial.config[TASK_KEY])['number']:04d}-{trial.trial_id}"


def _connect(search: SearchConfig) -> str | None:
    """Start or join Ray; returns the temporary folder of a local instance started here."""
    if search.ray_address is None:
        temp_dir = tempfile.mkdtemp(prefix="autoprune-ray-")  # short: Ray's socket paths
        ray.init(
            address="local",
            num_cpus=max(1, math.ceil(search.workers * search.cpus_per_trial)),
            include_dashboard=False,
            _temp_dir=temp_dir,
            logging_level=logging.WARNING,
        )
        _logger.info("started a local Ray instance for %d workers", search.workers)
        return temp_dir
    host = search.ray_address.rpartition(":")[0]
    loopback = {"_node_ip_address": "127.0.0.1"} if host in ("127.0.0.1", "localhost") else {}
    try:
        ray.init(address=search.ray_address, logging_level=logging.WARNING, **loopback)
    except ConnectionError as exc:
        raise ConfigError(
            f"cannot connect to the Ray cluster at search.ray_address={search.ray_address!r} "
            f"({exc}); start it with `ray start --head`, or drop --ray-address to run locally"
        ) from None
    _logger.info("connected to the Ray cluster at %s", search.ray_address)
    return None


def _check_resources(search: SearchConfig) -> None:
    """A trial that asks for more than the cluster has would wait forever: refuse it."""
    resources = ray.cluster_resources()
    for key, wanted, flag in (
        ("CPU", search.cpus_per_trial, "--cpus-per-trial"),
        ("GPU", search.gpus_per_trial, "--gpus-per-trial"),
    ):
        have = resources.get(key, 0.0)
        if wanted > have:
            raise ConfigError(
                f"search.{key.lower()}s_per_trial={wanted:g} but the Ray cluster has {have:g} "
                f"{key}s in all; lower {flag} or add nodes"
            )


def _start_service(run: RunDir) -> Any:
    """The :class:`RunService` actor for ``run``, on this (the driver's) node, no CPU held."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    node = ray.get_runtime_context().get_node_id()
    actor = ray.remote(RunService).options(
        num_cpus=0,
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=node, soft=False),
        max_restarts=-1,
        max_task_retries=-1,
    )
    return actor.remote(str(run.path.resolve()))


def optimize_with_ray(
    parts: RunParts,
    *,
    run: RunDir,
    study: optuna.Study,
    n_trials: int,
    callbacks: Sequence[_Callback] = (),
) -> None:
    """Run ``n_trials`` more trials of ``study`` as Ray Tune trials (see the module docstring).

    Raises:
        ConfigError: the cluster cannot be reached or cannot fit one trial.
        KeyboardInterrupt: the run was interrupted (Ctrl-C) before every trial finished.
    """
    search = parts.config.search
    distributions = {
        d.name: optuna.distributions.CategoricalDistribution(d.choices)
        for d in parts.space.decisions
    }
    joined = ray.is_initialized()  # a caller's Ray session is used as it is, and kept
    handlers = _signal_handlers()
    temp_dir = None if joined else _connect(search)
    service = None
    try:
        _check_resources(search)
        searcher = StudySearch(
            space=distributions,
            sampler=parts.sampler,
            storage=_optuna.storage_of(study),
            study_name=study.study_name,
            run=run,
            max_failures=search.max_failures,
            n_trials=n_trials,
            objective=parts.objective(run, measure_weights=False),  # the workers measure them
            callbacks=callbacks,
            deadline=None if search.timeout_s is None else time.monotonic() + search.timeout_s,
        )
        service = _start_service(run)
        job = _Job(
            config=parts.config.to_dict(),
            run_key=run_key(str(run.path.resolve()), study.study_name),
            service=service,
        )
        trainable = tune.with_resources(
            tune.with_parameters(evaluate_trial, job=job),
            {"cpu": search.cpus_per_trial, "gpu": search.gpus_per_trial},
        )
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=searcher,
                num_samples=-1,  # the searcher counts: reused trials never reach Tune
                max_concurrent_trials=search.workers,
                # One worker process runs trial after trial: Python, torch, TVM and the run's
                # objective load once per process, not once per trial (4-9 s each here).
                reuse_actors=True,
                trial_dirname_creator=_trial_dirname,
            ),
            run_config=tune.RunConfig(
                name=f"search-{time.strftime('%Y%m%d-%H%M%S')}",
                storage_path=str(run.ray_dir.resolve()),
                failure_config=tune.FailureConfig(max_failures=search.max_failures),
                verbose=0,
            ),
        )
        with _environment(RAY_AIR_NEW_OUTPUT="0"):  # verbose=0 silences only the old output
            tuner.fit()
        if searcher.interrupted:
            raise KeyboardInterrupt(f"{searcher.interrupted} Ray trials stopped before the end")
    finally:
        if service is not None and ray.is_initialized():
            ray.kill(service)
        if not joined:
            ray.shutdown()
        if temp_dir is not None:
            shutil.rmtree(temp_dir, ignore_errors=True)
        _restore_signal_handlers(handlers)
