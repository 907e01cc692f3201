"""The search loop: an Optuna study in a run directory, resumable, with a progress bar.

``search.trials`` counts the study's finished trials in total: running the same search again on
the same run directory runs only the missing ones, and first re-runs the candidates a killed or
interrupted process left unfinished. No finished trial is lost or run twice. With
``search.ray_address`` or ``search.workers > 1`` the same study and objective run as Ray Tune
trials (:mod:`._ray`, imported only then: Ray takes seconds to import).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import optuna
import sqlalchemy.exc
from tqdm.auto import tqdm

from autoprune._files import reason
from autoprune._interrupts import raise_if_interrupted
from autoprune.config import Config
from autoprune.errors import RunDirError
from autoprune.evaluators import DatasetSplits, evaluate_accuracy
from autoprune.hwprofiles import check_database_files
from autoprune.search import _schema as attrs
from autoprune.search._assembly import RunParts, assemble
from autoprune.search._hypervolume import HypervolumeReference, hypervolume_history
from autoprune.search._pareto import pareto_front
from autoprune.search._records import TrialRecord
from autoprune.search._rundir import RunDir
from autoprune.spaces import Candidate

__all__ = ["SearchResult", "evaluate_on_test", "run_search"]

_logger = logging.getLogger("autoprune.search")

_Callback = Callable[[optuna.Study, optuna.trial.FrozenTrial], None]


@dataclass(frozen=True)
class SearchResult:
    """What a search invocation leaves: every trial's record and the Pareto front."""

    run_dir: Path
    records: tuple[TrialRecord, ...]
    front: tuple[TrialRecord, ...]
    trials_run: int  # trials finished by this invocation
    trials_before: int  # trials the run directory already held
    notes: tuple[str, ...] = field(default_factory=tuple)


def run_search(
    config: Config,
    *,
    run_dir: Path,
    storage: str | None = None,
    progress: bool = True,
    data: DatasetSplits | None = None,
) -> SearchResult:
    """Run (or continue) the search a config describes, in ``run_dir``.

    Everything that can be wrong with the input (target, model, evaluator, controller,
    budgets, data) is checked before the run directory is touched. ``data``: the data set as
    objects (the Python API), in place of ``config.data``'s registered one.
    """
    run = RunDir(run_dir)
    parts = assemble(config, run=run, progress=progress, data=data)
    notes = parts.check()
    for note in notes:
        _logger.warning(note)
    _warn_about_measurements(parts)
    run.prepare(parts.config, storage)
    if parts.coster.measures:  # a damaged tuning database would fail every trial
        check_database_files(run.tuning_dir(parts.profile.name))
    with run.lock(), _storage_errors(run):
        run.record_config(parts.config)
        if run.remove_leftovers():
            _logger.info("removed the temporary files of writes a killed search left")
        run.save_data(parts.load_data())  # normalisation and class names, for exports
        study = run.open_study(parts.sampler)
        reference = run.hypervolume_reference(study)
        if reference is None:
            reference = parts.base_reference()
            run.set_hypervolume_reference(study, reference)
        if config.search.include_base and not study.get_trials(deepcopy=False):
            base = {d.name: max(d.choices) for d in parts.space.decisions}
            study.enqueue_trial(base, user_attrs={attrs.REFERENCE.key: "unpruned base model"})
        queued = run.requeue_interrupted(study)
        before = run.finished(study)
        remaining = max(0, config.search.trials - before)
        if before:
            _logger.info(
                "resuming %s: %d trials finished, %d to go%s",
                run_dir,
                before,
                remaining,
                f", re-running {queued} interrupted" if queued else "",
            )
        if remaining:
            with TrialProgress(parts, run, reference, before, enabled=progress) as tick:
                _optimize(parts, run, study, remaining, callbacks=[tick])
        evaluate_on_test(run, pareto_front(run.records(study)), parts)
        records = run.records(study)
        return SearchResult(
            run_dir=run_dir,
            records=tuple(records),
            front=tuple(pareto_front(records)),
            trials_run=run.finished(study) - before,
            trials_before=before,
            notes=tuple(notes),
        )


@contextlib.contextmanager
def _storage_errors(run: RunDir) -> Iterator[None]:
    """A study storage that fails to write (a full disk) as one line; finished trials stay."""
    try:
        yield
    except (optuna.exceptions.StorageInternalError, sqlalchemy.exc.OperationalError) as error:
        cause = error.__cause__ or error
        raise RunDirError(
            f"the study of {str(run.path)!r} could not be written ({reason(cause)}); its "
            f"finished trials are kept: free disk space (or fix the storage), then run the same "
            f"command to continue"
        ) from None


def _warn_about_measurements(parts: RunParts) -> None:
    """Say where latency comes from when it is measured, and when parallel trials disturb it."""
    coster, search = parts.coster, parts.config.search
    if not coster.measures:
        return
    board = f", board {coster.endpoint.describe()}" if coster.endpoint else ""
    _logger.info("latency on %s: measured (TVM-built code%s)", parts.profile.name, board)
    if coster.endpoint is None and search.workers > 1:
        _logger.warning(
            "latency is measured on this host while up to %d trials train at once: the "
            "measurements are disturbed; pass --workers 1, or --set hardware.latency=estimated",
            search.workers,
        )


def _optimize(
    parts: RunParts,
    run: RunDir,
    study: optuna.Study,
    n_trials: int,
    *,
    callbacks: Sequence[_Callback],
) -> None:
    """Run ``n_trials`` more trials of ``study``: in this process, or as Ray Tune trials."""
    search = parts.config.search
    if search.ray_address is not None or search.workers > 1:
        from autoprune.search._ray import optimize_with_ray  # Ray loads only when used

        optimize_with_ray(parts, run=run, study=study, n_trials=n_trials, callbacks=callbacks)
    else:
        # A failed trial is one line from the objective; Optuna's report adds a traceback.
        verbosity = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.ERROR)
        try:
            study.optimize(
                parts.objective(run),
                n_trials=n_trials,
                timeout=search.timeout_s,
                catch=(Exception,),
                callbacks=list(callbacks),
            )
        finally:
            optuna.logging.set_verbosity(verbosity)


class TrialProgress:
    """A progress bar over the run's trials; ``with`` gives the per-trial callback."""

    def __init__(
        self,
        parts: RunParts,
        run: RunDir,
        reference: HypervolumeReference,
        before: int,
        *,
        enabled: bool,
    ) -> None:
        self._parts, self._run, self._reference = parts, run, reference
        self._bar = tqdm(
            total=parts.config.search.trials,
            initial=before,
            desc="trials",
            unit="trial",
            disable=not enabled,
            dynamic_ncols=True,
        )

    def __enter__(self) -> _Callback:
        return self.tick

    def __exit__(self, *exc: object) -> None:
        self._bar.close()

    def tick(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        raise_if_interrupted()  # one swallowed by a finaliser during the trial
        self._bar.update(1)
        trials = study.get_trials(deepcopy=False)
        scored = [t for t in trials if attrs.TRAINED.get(t)]
        if not scored:
            return
        best = max(attrs.ACCURACY.get(t) for t in scored)  # type: ignore[type-var]
        if not self._parts.evaluator_class.trains:  # a proxy's score, not an accuracy
            self._bar.set_postfix(best_score=f"{best:.4g}", scored=len(scored))
            return
        history = hypervolume_history([self._run.record(t) for t in trials], self._reference)
        self._bar.set_postfix(
            best_acc=f"{100 * best:.1f}%", trained=len(scored), hv=f"{history[-1][1]:.3f}"
        )


def evaluate_on_test(run: RunDir, members: Sequence[TrialRecord], parts: RunParts) -> None:
    """Measure the test-split accuracy of trained members that lack it (``test.json``).

    The weights are the ones trained during the search, at the search fidelity, and the figure
    is labelled with that fidelity.
    """
    pending = [
        r for r in members if r.trained and r.metric == "accuracy" and r.test_accuracy is None
    ]
    for record in pending:
        candidate = Candidate.from_dict(record.candidate)  # type: ignore[arg-type]
        accuracy = evaluate_accuracy(
            run.trained_model(record),
            parts.load_data(),
            split="test",
            input_shape=candidate.input_shape,
            resolution_scale=parts.config.training.resolution_scale,
        )
        run.save_test_accuracy(record.number, accuracy, record.fidelity)
        _logger.info("trial %d: %.2f %% on the test split", record.number, 100 * accuracy)
