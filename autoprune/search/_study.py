"""The search loop: an Optuna study in the run directory, resumable, with a progress bar.

Run directory layout::

    run.json           storage URL and study name (how ``report`` and ``export`` find the study)
    config.yaml        the resolved configuration of the run
    study.db           Optuna's SQLite storage (unless --storage names another)
    trials/NNNN/       model.pt (trained state_dict), test.json (test-split accuracy)

``trials`` in the config counts the study's finished trials in total: running the same command
again on the same run directory runs only the missing ones, and first re-runs the candidate a
killed process left unfinished. No finished trial is lost or re-run.

With ``search.ray_address`` or ``search.workers > 1`` the same study and objective run as Ray
Tune trials (``_ray.py``; Ray is imported only then), with ``ray/`` (Tune's experiment folder)
in the run directory and each trial's attempts in ``trials/NNNN/attempts.jsonl``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy.exc
import torch
import yaml
from tqdm.auto import tqdm

from autoprune._interrupts import raise_if_interrupted
from autoprune.config import Config
from autoprune.errors import ConfigError, RunDirError
from autoprune.evaluators import evaluate_accuracy
from autoprune.hwprofiles import (
    DeviceProfile,
    HardwareCoster,
    RpcEndpoint,
    estimate_with_tvm,
    load_profile,
)
from autoprune.search._controllers import create_sampler
from autoprune.search._hypervolume import HypervolumeReference, hypervolume_history
from autoprune.search._objective import (
    CandidateObjective,
    candidate_costs,
    load_run_dataset,
    trial_dir,
)
from autoprune.search._pareto import OBJECTIVES, pareto_front
from autoprune.search._records import TrialRecord
from autoprune.search._repair import repairing
from autoprune.spaces import Candidate, SearchSpace, build_model

__all__ = [
    "SearchResult",
    "build_coster",
    "build_objective",
    "build_space",
    "check_budgets",
    "evaluate_on_test",
    "load_hypervolume",
    "load_records",
    "prepare_run_dir",
    "run_search",
]

_logger = logging.getLogger("autoprune.search")
STUDY_NAME = "autoprune"
#: Study user attribute holding the run's :class:`HypervolumeReference` (set once, at creation).
HYPERVOLUME_KEY = "hypervolume_reference"
# Keys that may change between invocations on one run directory without making it another run.
#: Settings a run may continue under with another value: how long it goes on, where and how
#: many at once its trials run, how much tuning and waiting a measurement gets (a larger
#: tuning budget tunes the shared kernels further; latencies measured before keep the budget
#: they had, recorded with them), and how the data are fetched and decoded (not what they are).
_RESUMABLE_KEYS = {
    ("search", "trials"),
    ("search", "timeout_s"),
    ("search", "workers"),
    ("search", "ray_address"),
    ("search", "cpus_per_trial"),
    ("search", "gpus_per_trial"),
    ("search", "max_failures"),
    ("hardware", "tuning_trials_per_task"),
    ("hardware", "measure_timeout_s"),
    ("data", "download"),
    ("data", "num_workers"),
}


@dataclass(frozen=True)
class SearchResult:
    """What a search invocation leaves: every trial's record and the Pareto front."""

    run_dir: Path
    records: tuple[TrialRecord, ...]
    front: tuple[TrialRecord, ...]
    trials_run: int  # trials finished by this invocation
    trials_before: int  # trials the run directory already held
    notes: tuple[str, ...] = field(default_factory=tuple)


def build_space(config: Config, profile: DeviceProfile) -> SearchSpace:
    """The search space of a config on a target; bit-widths limited to what the target lists."""
    allowed = set(profile.bit_widths) | {32}

    def limit(key: str, bits: tuple[int, ...]) -> tuple[int, ...]:
        kept = tuple(b for b in bits if b in allowed)
        if not kept:
            raise ConfigError(
                f"space.{key} {list(bits)} has no bit-width that target "
                f"{profile.name} supports; allowed: {sorted(allowed)}"
            )
        if kept != bits:
            _logger.info(
                "space.%s: %s dropped; target %s supports %s",
                key,
                sorted(set(bits) - set(kept)),
                profile.name,
                sorted(allowed),
            )
        return kept

    return SearchSpace(
        model=config.model.name,
        num_classes=config.model.num_classes,
        in_channels=config.model.in_channels,
        input_shape=config.data.input_shape,
        width_ratios=config.space.width_ratios,
        depth=config.space.depth,
        resolution_scales=config.space.resolution_scales,
        weight_bits=limit("weight_bits", config.space.weight_bits),
        activation_bits=limit("activation_bits", config.space.activation_bits),
        channel_multiple=profile.channel_multiple,
    )


def build_coster(config: Config, profile: DeviceProfile) -> HardwareCoster:
    """Where a run's latency comes from (``hardware`` section; no cache until the run starts)."""
    hardware = config.hardware
    endpoint = None
    if hardware.rpc_tracker is not None:
        endpoint = RpcEndpoint.parse(hardware.rpc_tracker, key=hardware.rpc_key or "")
    return HardwareCoster(
        profile,
        latency=hardware.latency,
        endpoint=endpoint,
        timeout_s=hardware.measure_timeout_s,
        tuning_trials_per_task=hardware.tuning_trials_per_task,
    )


def check_budgets(
    config: Config,
    space: SearchSpace,
    profile: DeviceProfile,
    coster: HardwareCoster | None = None,
) -> list[str]:
    """Compare each budget with the space's extremes before anything runs.

    Returns one line per budget that does not bind (the largest candidate already fits);
    raises :class:`ConfigError` for a budget that no candidate can meet. Latency and energy are
    the profile's estimates here (nothing is tuned or measured before the run); when the run
    measures them (``coster.measures``), an estimate over a latency or energy budget is a
    warning, since the measured figures decide.
    """
    if not config.budgets:
        return []
    largest = candidate_costs(space.largest(), profile)
    smallest = candidate_costs(space.smallest(), profile)
    shape = "x".join(map(str, config.data.input_shape))
    measured = coster is not None and coster.measures
    notes = []
    for budget in config.budgets:
        hardware = budget.metric in ("latency_ms", "energy_mj")
        if smallest[budget.metric] > budget.limit and measured and hardware:
            notes.append(
                f"budget {budget.spec} may not be met: the smallest candidate of the space is "
                f"estimated at {budget.describe(smallest[budget.metric])} on {profile.name}; "
                f"measured figures decide"
            )
        elif smallest[budget.metric] > budget.limit:
            raise ConfigError(
                f"budget {budget.spec} cannot be met: the smallest candidate of the space needs "
                f"{budget.describe(smallest[budget.metric])}; loosen the budget or widen the space "
                f"(space.width_ratios, space.resolution_scales, space.weight_bits)"
            )
        elif largest[budget.metric] <= budget.limit and not (measured and hardware):
            notes.append(
                f"budget {budget.spec} does not bind: the unpruned {config.model.name} at {shape} "
                f"needs {budget.describe(largest[budget.metric])} on {profile.name}, "
                f"so every candidate fits"
            )
    return notes


def prepare_run_dir(run_dir: Path, config: Config, storage: str | None) -> str:
    """Create (or check, when resuming) the run directory; returns the storage URL.

    A new run's storage has its tables before ``run.json`` is written (see
    :func:`_create_tables`); a storage that cannot be opened raises :class:`RunDirError` and
    leaves no run directory behind.

    Raises :class:`RunDirError` when the directory holds a run with a different configuration.
    """
    config_path = run_dir / "config.yaml"
    if config_path.exists():
        previous = yaml.safe_load(config_path.read_text()) or {}
        difference = _config_difference(previous, config.to_dict())
        if difference:
            raise RunDirError(
                f"run directory {str(run_dir)!r} holds a run with a different config "
                f"({difference}); pass a new --run-dir, or the same settings to continue it"
            )
        meta = json.loads((run_dir / "run.json").read_text())
        if storage is not None and storage != meta["storage"]:
            raise RunDirError(
                f"run directory {str(run_dir)!r} uses storage {meta['storage']!r}, "
                f"not {storage!r}; drop --storage to continue it"
            )
        config_path.write_text(config.to_yaml())  # settings that may change take the new value
        return str(meta["storage"])
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    url = storage or f"sqlite:///{(run_dir / 'study.db').resolve()}"
    try:
        _create_tables(url)
    except RunDirError:
        if created:
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    (run_dir / "run.json").write_text(
        json.dumps(
            {
                "storage": url,
                "study_name": STUDY_NAME,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            },
            indent=2,
        )
        + "\n"
    )
    config_path.write_text(config.to_yaml())
    return url


def _config_difference(old: dict[str, Any], new: dict[str, Any]) -> str:
    """The first setting that differs; a key the old run lacks (added to autoprune since) is
    compared at its default."""
    defaults = Config().to_dict()
    for section in sorted(set(old) | set(new)):
        a, b = old.get(section), new.get(section)
        if isinstance(a, dict) and isinstance(b, dict):
            a = {**defaults.get(section, {}), **a}
            for key in sorted(set(a) | set(b)):
                if (section, key) in _RESUMABLE_KEYS:
                    continue
                if a.get(key) != b.get(key):
                    return f"{section}.{key}: {a.get(key)!r} there, {b.get(key)!r} now"
        elif a != b:
            return f"{section}: {a!r} there, {b!r} now"
    return ""


def _create_tables(url: str) -> None:
    """Open the storage at ``url`` once, so that Optuna creates its tables now.

    Optuna creates them when a storage is first opened; a second process that opens the same
    SQLite file meanwhile (``autoprune report`` on a starting run, a Ray worker) races it, and
    one of them fails with "table ... already exists". :func:`prepare_run_dir` therefore
    creates them before it writes ``run.json``, which readers wait for.
    """
    try:
        optuna.storages.RDBStorage(url).engine.dispose()
    except (ImportError, sqlalchemy.exc.SQLAlchemyError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RunDirError(
            f"cannot open the storage {url!r} ({reason}); pass --storage an SQLAlchemy URL "
            f"that autoprune can reach, e.g. sqlite:///runs/study.db, or drop it for a SQLite "
            f"file in the run directory"
        ) from None


@contextlib.contextmanager
def _exclusive(run_dir: Path) -> Iterator[None]:
    """Hold the run directory's lock; the OS drops it when the process dies."""
    with open(run_dir / ".lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunDirError(
                f"run directory {str(run_dir)!r} is in use by another autoprune "
                f"process; wait for it or pass another --run-dir"
            ) from None
        handle.write(str(os.getpid()))
        handle.flush()
        yield


def _open_study(url: str, sampler: optuna.samplers.BaseSampler) -> optuna.Study:
    return optuna.create_study(
        storage=url,
        study_name=STUDY_NAME,
        sampler=sampler,
        directions=[direction for _, direction in OBJECTIVES],
        load_if_exists=True,
    )


def _hypervolume_reference(
    study: optuna.Study, space: SearchSpace, profile: DeviceProfile, cache_dir: Path | None
) -> HypervolumeReference:
    """The run's hypervolume reference: stored in the study when it is created, then reused.

    Costs are normalised by the unpruned base model's *estimated* latency and energy on the
    target (known before anything runs, and the same whether the run measures or estimates).
    The base's kernel list goes to the run's ``cache_dir``, where its own trial finds it.
    """
    stored = study.user_attrs.get(HYPERVOLUME_KEY)
    if stored is not None:
        return HypervolumeReference.from_dict(stored)
    base = space.largest()
    estimate = estimate_with_tvm(base, base.input_shape, profile, cache_dir=cache_dir)
    reference = HypervolumeReference.for_base(
        latency_ms=estimate.latency_ms, energy_mj=estimate.energy_mj
    )
    study.set_user_attr(HYPERVOLUME_KEY, reference.to_dict())
    return reference


def _recover_interrupted(study: optuna.Study) -> int:
    """Fail trials a killed process left running and queue their candidates again.

    Returns how many candidates were queued. A trial interrupted by Ctrl-C is already FAIL with
    ``interrupted=True``; one killed outright is still RUNNING.
    """
    storage = study._storage
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        storage.set_trial_user_attr(trial._trial_id, "interrupted", True)
        storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get("retry_of") for t in trials}
    queued = 0
    for trial in trials:
        if (
            trial.state == optuna.trial.TrialState.FAIL
            and trial.user_attrs.get("interrupted")
            and trial.number not in retried
            and trial.params
        ):
            study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
            queued += 1
    return queued


def _finished(study: optuna.Study) -> int:
    """Trials that count toward the budget: all finished ones except interrupted ones."""
    done = 0
    for trial in study.get_trials(deepcopy=False):
        if trial.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED):
            done += 1
        elif trial.state == optuna.trial.TrialState.FAIL and not trial.user_attrs.get(
            "interrupted"
        ):
            done += 1
    return done


def run_search(
    config: Config,
    *,
    run_dir: Path,
    storage: str | None = None,
    progress: bool = True,
) -> SearchResult:
    """Run (or continue) the search a config describes, in ``run_dir``.

    Everything that can be wrong with the input (target, model, budgets, data) is checked before
    the run directory is touched.
    """
    profile = load_profile(config.target)
    space = build_space(config, profile)
    coster = build_coster(config, profile)
    data = load_run_dataset(config)
    if tuple(data.input_shape[:1]) != (config.model.in_channels,):
        raise ConfigError(
            f"model.in_channels is {config.model.in_channels} but data set "
            f"{config.data.dataset} has {data.input_shape[0]}-channel images"
        )

    if coster.measures:
        _logger.info(
            "latency on %s: measured (TVM-built code%s)",
            profile.name,
            f", board {coster.endpoint.describe()}" if coster.endpoint else "",
        )
    notes = check_budgets(config, space, profile, coster)
    for note in notes:
        _logger.warning(note)

    ray = config.search.ray_address is not None or config.search.workers > 1
    if ray and coster.measures and coster.endpoint is None and config.search.workers > 1:
        _logger.warning(
            "latency is measured on this host while up to %d trials train at once: the "
            "measurements are disturbed; pass --workers 1, or --set hardware.latency=estimated",
            config.search.workers,
        )
    url = prepare_run_dir(run_dir, config, storage)
    with _exclusive(run_dir):
        objective = build_objective(
            config, run_dir=run_dir, profile=profile, space=space, coster=coster, progress=progress
        )
        objective._data = data
        sampler = create_sampler(
            config.search.controller,
            seed=config.search.seed,
            population_size=config.search.population_size,
        )
        if config.search.repair:
            sampler = repairing(sampler, space, config.budgets)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = _open_study(url, sampler)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([name for name, _ in OBJECTIVES])
        reference = _hypervolume_reference(study, space, profile, coster.cache_dir)
        if config.search.include_base and not study.get_trials(deepcopy=False):
            base = {d.name: max(d.choices) for d in space.decisions}
            study.enqueue_trial(base, user_attrs={"reference": "unpruned base model"})
        queued = _recover_interrupted(study)
        before = _finished(study)
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
            bar = tqdm(
                total=config.search.trials,
                initial=before,
                desc="trials",
                unit="trial",
                disable=not progress,
                dynamic_ncols=True,
            )

            def tick(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
                raise_if_interrupted()  # one swallowed by a finaliser during the trial
                bar.update(1)
                trials = study.get_trials(deepcopy=False)
                feasible = [t for t in trials if t.user_attrs.get("trained")]
                if feasible and config.evaluator.name == "proxy":
                    best = max(t.user_attrs["accuracy"] for t in feasible)
                    bar.set_postfix(best_score=f"{best:.4g}", scored=len(feasible))
                elif feasible:
                    best = max(t.user_attrs["accuracy"] for t in feasible)
                    history = hypervolume_history([_record(t, run_dir) for t in trials], reference)
                    bar.set_postfix(
                        best_acc=f"{100 * best:.1f}%",
                        trained=len(feasible),
                        hv=f"{history[-1][1]:.3f}",
                    )

            try:
                if ray:
                    from autoprune.search import _ray  # Ray loads only for runs that use it

                    _ray.optimize_with_ray(
                        config,
                        study=study,
                        sampler=sampler,
                        space=space,
                        run_dir=run_dir,
                        n_trials=remaining,
                        callbacks=[tick],
                    )
                else:
                    study.optimize(
                        objective,
                        n_trials=remaining,
                        timeout=config.search.timeout_s,
                        catch=(Exception,),
                        callbacks=[tick],
                    )
            finally:
                bar.close()
        records = load_records(run_dir)
        front = pareto_front(records)
        evaluate_on_test(run_dir, front, config)
        records = load_records(run_dir)
        return SearchResult(
            run_dir=run_dir,
            records=tuple(records),
            front=tuple(pareto_front(records)),
            trials_run=_finished(study) - before,
            trials_before=before,
            notes=tuple(notes),
        )


def build_objective(
    config: Config,
    *,
    run_dir: Path,
    profile: DeviceProfile | None = None,
    space: SearchSpace | None = None,
    coster: HardwareCoster | None = None,
    progress: bool = False,
) -> CandidateObjective:
    """The trial objective of a run in ``run_dir`` (in the search process or a Ray worker).

    The hardware caches and the tuning database live in the run directory, shared by every
    process that evaluates the run's trials.
    """
    profile = profile or load_profile(config.target)
    space = space or build_space(config, profile)
    coster = coster or build_coster(config, profile)
    coster.cache_dir = run_dir / "hw-cache"
    coster.tuning_dir = run_dir / "tuning" / profile.name
    return CandidateObjective(
        config=config,
        space=space,
        profile=profile,
        run_dir=run_dir,
        coster=coster,
        progress=progress,
    )


def evaluate_on_test(run_dir: Path, members: list[TrialRecord], config: Config) -> None:
    """Measure the test-split accuracy of trained members that lack it (``test.json``).

    The weights are the ones trained during the search, at the search fidelity, and the figure
    is labelled with that fidelity.
    """
    pending = [
        r for r in members if r.trained and r.metric == "accuracy" and r.test_accuracy is None
    ]
    if not pending:
        return
    data = load_run_dataset(config)
    for record in tqdm(pending, desc="test split", unit="model", leave=False, disable=True):
        source = record.cached_from if record.cached_from is not None else record.number
        candidate = Candidate.from_dict(record.candidate)
        model = build_model(candidate, seed=0)
        model.load_state_dict(
            torch.load(trial_dir(run_dir, source) / "model.pt", weights_only=True)
        )
        accuracy = evaluate_accuracy(
            model,
            data,
            split="test",
            input_shape=candidate.input_shape,
            resolution_scale=config.training.resolution_scale,
        )
        folder = trial_dir(run_dir, record.number)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "test.json").write_text(
            json.dumps({"test_accuracy": accuracy, "split": "test", "fidelity": record.fidelity})
            + "\n"
        )
        _logger.info("trial %d: %.2f %% on the test split", record.number, 100 * accuracy)


def _state(trial: optuna.trial.FrozenTrial) -> str:
    return {
        optuna.trial.TrialState.COMPLETE: "complete",
        optuna.trial.TrialState.FAIL: "failed",
        optuna.trial.TrialState.PRUNED: "pruned",
        optuna.trial.TrialState.RUNNING: "running",
        optuna.trial.TrialState.WAITING: "waiting",
    }[trial.state]


def _record(trial: optuna.trial.FrozenTrial, run_dir: Path) -> TrialRecord:
    attrs = trial.user_attrs
    costs = attrs.get("costs", {})
    evaluation = attrs.get("eval") or {}
    test_file = trial_dir(run_dir, trial.number) / "test.json"
    test = json.loads(test_file.read_text()) if test_file.exists() else {}
    error = attrs.get("error")
    if trial.state == optuna.trial.TrialState.FAIL and attrs.get("interrupted"):
        error = error or "interrupted"
    return TrialRecord(
        number=trial.number,
        state=_state(trial),
        candidate_hash=attrs.get("candidate_hash"),
        candidate=attrs.get("candidate"),
        feasible=attrs.get("feasible"),
        trained=bool(attrs.get("trained", False)),
        accuracy=attrs.get("accuracy"),
        accuracy_split=evaluation.get("split"),
        fidelity=attrs.get("fidelity"),
        test_accuracy=test.get("test_accuracy"),
        test_fidelity=test.get("fidelity"),
        macs=costs.get("macs"),
        params=costs.get("params"),
        size_bytes=costs.get("size_bytes"),
        latency_ms=costs.get("latency_ms"),
        latency_source=costs.get("latency_source"),
        energy_mj=costs.get("energy_mj"),
        energy_source=costs.get("energy_source"),
        violations=dict(attrs.get("violations", {})),
        train_seconds=evaluation.get("train_seconds"),
        cached_from=attrs.get("cached_from"),
        error=error,
        repair_steps=attrs.get("repair_steps"),
        evaluator=evaluation.get("evaluator"),
        metric=evaluation.get("metric", "accuracy"),
        stopped_early=attrs.get("stopped_early"),
    )


def _load_study(run_dir: Path) -> optuna.Study | None:
    """The study of the run in ``run_dir``; ``None`` when the storage holds none yet."""
    meta_path = run_dir / "run.json"
    if not meta_path.exists():
        raise RunDirError(
            f"{str(run_dir)!r} is not an autoprune run directory (no run.json); "
            f"pass the --run-dir of a search"
        )
    meta = json.loads(meta_path.read_text())
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return optuna.load_study(study_name=meta["study_name"], storage=meta["storage"])
    except KeyError:
        return None


def load_records(run_dir: Path) -> list[TrialRecord]:
    """Every trial of the run in ``run_dir``, in trial order."""
    study = _load_study(run_dir)
    return [] if study is None else [_record(t, run_dir) for t in study.get_trials(deepcopy=False)]


def load_hypervolume(
    run_dir: Path, records: list[TrialRecord] | None = None
) -> tuple[HypervolumeReference, list[tuple[int, float]]] | None:
    """The run's hypervolume reference and ``(trial number, hypervolume)`` after each trial.

    ``records`` (from :func:`load_records`) saves reading them again. ``None`` for a run
    created before autoprune tracked the hypervolume (no reference stored), and for a run of the
    ``proxy`` evaluator (its scores are not accuracies: the hypervolume's error axis is undefined).
    """
    study = _load_study(run_dir)
    stored = None if study is None else study.user_attrs.get(HYPERVOLUME_KEY)
    if stored is None:
        return None
    reference = HypervolumeReference.from_dict(stored)
    records = load_records(run_dir) if records is None else records
    if any(r.metric != "accuracy" for r in records if r.accuracy is not None):
        return None
    return reference, hypervolume_history(records, reference)
