"""The run layer: one object that owns a run directory's layout, lock, metadata and study.

Layout of a run directory::

    run.json              storage URL and study name (written last when a run is created)
    config.yaml           the resolved configuration of the run
    data.json             the data set: name, input shape, classes, normalisation (mean, std)
    study.db              Optuna's SQLite storage (unless --storage names another)
    .lock                 held by the process running the search
    trials/NNNN/          model.pt (trained state_dict), test.json (test-split accuracy),
                          attempts.jsonl (Ray workers' attempts)
    base/                 the unpruned base model, trained once
    hw-cache/             latency measurements and kernel lists, by architecture
    tuning/<target>/      the run's MetaSchedule tuning database
    ray/                  Ray Tune's experiment folder
    retrain/<settings>/   trials retrained at full fidelity
    export/               exported trials
    pareto.json, .csv, .png, hypervolume.png   the report (``autoprune.report``)

The search loop, Ray workers, ``report``, ``export`` and ``retrain`` all read and write a run
through :class:`RunDir`; what a trial established is in its study attributes (:mod:`._schema`).

Example:
    >>> run = RunDir("runs/demo")  # a finished search's --run-dir
    >>> [r.number for r in run.records()][:3]
    [0, 1, 2]
    >>> run.weights_file(1).relative_to(run.path).as_posix()
    'trials/0001/model.pt'
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import logging
import os
import shutil
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy.engine
import torch
import yaml
from torch import nn

from autoprune._files import TEMPORARY_SUFFIX, check_sqlite, read_json, reason, write_atomic
from autoprune.config import Config, load_config
from autoprune.errors import DamagedFileError, RunDirError
from autoprune.evaluators import DatasetSplits
from autoprune.search import _optuna
from autoprune.search import _schema as attrs
from autoprune.search._hypervolume import HypervolumeReference, hypervolume_history
from autoprune.search._pareto import OBJECTIVES
from autoprune.search._records import TrialRecord, counts_toward_budget, record_of
from autoprune.search._run_config import config_difference, create_tables
from autoprune.spaces import Candidate, build_model

__all__ = ["RunDir"]

_logger = logging.getLogger("autoprune.search")

#: State of the fake quantizer before LSQ (an EMA of the input's range); it cannot be loaded.
_LEGACY_QUANTIZER_KEYS = (".act_min", ".act_max", ".act_observed")


class RunDir:
    """A run directory (see the module docstring for its layout).

    Creating the object touches nothing; :meth:`prepare` creates or checks the directory and
    its storage; the other methods need a prepared run and raise :class:`RunDirError`, with
    the fix in one line, when the folder holds none.
    """

    STUDY_NAME = "autoprune"
    #: run.json's storage for its own study.db: relative, so a copied or moved run keeps its own.
    OWN_STUDY = "study.db"

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # ---- layout ---------------------------------------------------------------------------

    @property
    def config_file(self) -> Path:
        return self.path / "config.yaml"

    @property
    def meta_file(self) -> Path:
        return self.path / "run.json"

    @property
    def base_dir(self) -> Path:
        """The unpruned base model, trained once per run."""
        return self.path / "base"

    @property
    def hw_cache_dir(self) -> Path:
        """Latency measurements and kernel lists, shared by every process of the run."""
        return self.path / "hw-cache"

    @property
    def ray_dir(self) -> Path:
        """Ray Tune's ``storage_path``."""
        return self.path / "ray"

    @property
    def export_dir(self) -> Path:
        """Where ``export`` writes by default."""
        return self.path / "export"

    def tuning_dir(self, target: str) -> Path:
        """The MetaSchedule tuning database of ``target`` (a profile name)."""
        return self.path / "tuning" / target

    def retrain_dir(self, settings: str) -> Path:
        """Trials retrained with the settings named ``settings`` (a folder-safe slug)."""
        return self.path / "retrain" / settings

    def trial_dir(self, number: int) -> Path:
        """Folder of one trial's files (``trials/0007``)."""
        return self.path / "trials" / f"{number:04d}"

    def weights_file(self, number: int) -> Path:
        return self.trial_dir(number) / "model.pt"

    def attempts_file(self, number: int) -> Path:
        """Ray workers' attempts at trial ``number``, one JSON line each."""
        return self.trial_dir(number) / "attempts.jsonl"

    def _test_file(self, number: int) -> Path:
        return self.trial_dir(number) / "test.json"

    # ---- metadata and lifecycle -----------------------------------------------------------

    def exists(self) -> bool:
        """Whether the folder holds a run (its ``run.json``)."""
        return self.meta_file.is_file()

    def meta(self) -> dict[str, Any]:
        """``run.json``: ``storage``, ``study_name``, ``created``.

        Raises:
            RunDirError: there is none. DamagedFileError: it is not such a JSON object.
        """
        if not self.exists():
            raise RunDirError(
                f"{str(self.path)!r} is not an autoprune run directory (no run.json); "
                f"pass the --run-dir of a search"
            )
        fix = (
            f"restore it from a backup, or write it again: for a run whose study is its "
            f'study.db, {{"storage": "{self.OWN_STUDY}", "study_name": "{self.STUDY_NAME}"}}'
        )
        meta = read_json(self.meta_file, what="run.json", fix=fix)
        if not isinstance(meta, dict) or not {"storage", "study_name"} <= set(meta):
            raise DamagedFileError(
                f"run.json {str(self.meta_file)!r} is damaged (no storage and study_name); {fix}"
            )
        return meta

    @property
    def storage_url(self) -> str:
        """The study's storage URL (run.json's :attr:`OWN_STUDY`: this folder's study.db)."""
        url = str(self.meta()["storage"])
        return f"sqlite:///{(self.path / url).resolve()}" if url == self.OWN_STUDY else url

    def config(self) -> Config:
        """The run's resolved configuration (``config.yaml``)."""
        if not self.config_file.is_file():
            raise RunDirError(
                f"{str(self.path)!r} holds no run (no config.yaml); pass the run directory "
                f"that `autoprune search` printed"
            )
        return load_config(self.config_file)

    def prepare(self, config: Config, storage: str | None) -> str:
        """Create the run, or check that it is the one ``config`` describes; the storage URL.

        A new run's storage has its tables before ``run.json`` is written (readers wait for
        ``run.json``; Optuna creates tables on first open, and two processes creating them race
        each other); a storage that cannot be opened leaves no run directory behind. On a
        resumed run, nothing is written: :meth:`record_config` gives ``config.yaml`` the new
        values of :data:`~autoprune.search._run_config.RESUMABLE_KEYS` once the lock is held.

        Raises:
            RunDirError: the folder holds a run with another configuration or storage, or the
                storage cannot be opened.
        """
        if self.path.exists() and not self.path.is_dir():
            raise RunDirError(
                f"run directory {str(self.path)!r} is a file, not a folder; pass --run-dir a "
                f"new folder or a run's"
            )
        if self.config_file.exists():
            try:
                previous = yaml.safe_load(self.config_file.read_text(encoding="utf-8")) or {}
            except (yaml.YAMLError, UnicodeDecodeError) as error:
                raise DamagedFileError(
                    f"config.yaml {str(self.config_file)!r} is damaged ({reason(error)}); "
                    f"restore it from a backup, or search again in a new --run-dir"
                ) from None
            difference = config_difference(previous, config.to_dict())
            if difference:
                raise RunDirError(
                    f"run directory {str(self.path)!r} holds a run with a different config "
                    f"({difference}); pass a new --run-dir, or the same settings to continue it"
                )
            url = self.storage_url
            if storage is not None and storage != url:
                raise RunDirError(
                    f"run directory {str(self.path)!r} uses storage {url!r}, not {storage!r}; "
                    f"drop --storage to continue it"
                )
            return url  # config.yaml takes the new values under the lock: record_config
        created = not self.path.exists()
        self.path.mkdir(parents=True, exist_ok=True)
        url = storage or f"sqlite:///{(self.path / self.OWN_STUDY).resolve()}"
        try:
            create_tables(url)
        except RunDirError:
            if created:
                shutil.rmtree(self.path, ignore_errors=True)
            raise
        meta = {
            "storage": storage or self.OWN_STUDY,
            "study_name": self.STUDY_NAME,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        write_atomic(self.meta_file, json.dumps(meta, indent=2) + "\n")
        write_atomic(self.config_file, config.to_yaml())
        return url

    def record_config(self, config: Config) -> None:
        """Write ``config`` as the run's ``config.yaml`` (call it holding :meth:`lock`)."""
        write_atomic(self.config_file, config.to_yaml())

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the run's lock for the block; the OS drops it when the process dies.

        Raises:
            RunDirError: another process holds it.
        """
        with open(self.path / ".lock", "w") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RunDirError(
                    f"run directory {str(self.path)!r} is in use by another autoprune "
                    f"process; wait for it or pass another --run-dir"
                ) from None
            handle.write(str(os.getpid()))
            handle.flush()
            yield

    # ---- the study ------------------------------------------------------------------------

    def check_storage(self) -> None:
        """Check that the run's SQLite study (a ``sqlite:`` storage) is whole; never changes it.

        Raises:
            DamagedFileError: it is missing, truncated or corrupted.
        """
        url = sqlalchemy.engine.make_url(self.storage_url)
        if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
            fix = "restore it from a backup, or search again in a new --run-dir"
            check_sqlite(url.database, what="the run's study", fix=fix)

    def open_study(self, sampler: optuna.samplers.BaseSampler) -> optuna.Study:
        """The run's study with ``sampler`` (created with the objectives' directions)."""
        self.check_storage()
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(
            storage=self.storage_url,
            study_name=self.meta()["study_name"],
            sampler=sampler,
            directions=[direction for _, direction in OBJECTIVES],
            load_if_exists=True,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([name for name, _ in OBJECTIVES])
        return study

    def load_study(self) -> optuna.Study | None:
        """The run's study to read; ``None`` while its storage holds none yet."""
        meta = self.meta()
        self.check_storage()
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        try:
            return optuna.load_study(study_name=meta["study_name"], storage=self.storage_url)
        except KeyError:
            return None

    def hypervolume_reference(self, study: optuna.Study) -> HypervolumeReference | None:
        """The reference stored in the study when the run began (``None`` before that)."""
        stored = study.user_attrs.get(attrs.HYPERVOLUME_REFERENCE)
        return None if stored is None else HypervolumeReference.from_dict(stored)

    def set_hypervolume_reference(
        self, study: optuna.Study, reference: HypervolumeReference
    ) -> None:
        study.set_user_attr(attrs.HYPERVOLUME_REFERENCE, reference.to_dict())

    @staticmethod
    def requeue_interrupted(study: optuna.Study) -> int:
        """Fail trials a killed process left running and queue their candidates again.

        Returns how many candidates were queued. A trial interrupted by Ctrl-C is already
        ``FAIL`` with ``interrupted``; one killed outright is still ``RUNNING``.
        """
        for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            _optuna.set_trial_user_attr(study, trial, attrs.INTERRUPTED.key, True)
            _optuna.fail_trial(study, trial)
        trials = study.get_trials(deepcopy=False)
        retried = {attrs.RETRY_OF.get(t) for t in trials}
        queued = 0
        for trial in trials:
            if (
                trial.state == optuna.trial.TrialState.FAIL
                and attrs.INTERRUPTED.get(trial)
                and trial.number not in retried
                and trial.params
            ):
                study.enqueue_trial(trial.params, user_attrs={attrs.RETRY_OF.key: trial.number})
                queued += 1
        return queued

    @staticmethod
    def finished(study: optuna.Study) -> int:
        """Trials that count toward ``search.trials`` (finished, not interrupted)."""
        return sum(counts_toward_budget(t) for t in study.get_trials(deepcopy=False))

    # ---- records --------------------------------------------------------------------------

    def record(self, trial: optuna.trial.FrozenTrial) -> TrialRecord:
        """The record of one trial of the run's study, with its test-split result."""
        test_file = self._test_file(trial.number)
        fix = "delete it; `autoprune search` with the run's options measures it again"
        test = read_json(test_file, what="test.json", fix=fix) if test_file.exists() else None
        return record_of(trial, test)

    def records(self, study: optuna.Study | None = None) -> list[TrialRecord]:
        """Every trial of the run, in trial order (``study``: an open one, to save a load)."""
        study = study or self.load_study()
        return [] if study is None else [self.record(t) for t in study.get_trials(deepcopy=False)]

    def hypervolume(
        self, records: list[TrialRecord] | None = None
    ) -> tuple[HypervolumeReference, list[tuple[int, float]]] | None:
        """The run's hypervolume reference and ``(trial number, hypervolume)`` after each trial.

        ``None`` for a run created before autoprune tracked the hypervolume (no reference
        stored), and for a run scoring with a proxy (its scores are not accuracies: the
        hypervolume's error axis is undefined).
        """
        study = self.load_study()
        reference = None if study is None else self.hypervolume_reference(study)
        if reference is None:
            return None
        records = self.records(study) if records is None else records
        if any(r.metric != "accuracy" for r in records if r.accuracy is not None):
            return None
        return reference, hypervolume_history(records, reference)

    # ---- trial files ----------------------------------------------------------------------

    def save_weights(self, number: int, model: nn.Module) -> Path:
        """Write trial ``number``'s trained ``state_dict`` (atomically); its path."""
        self.trial_dir(number).mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()  # written with Python's I/O, whose errors say why (disk full)
        torch.save(model.state_dict(), buffer)
        return write_atomic(self.weights_file(number), buffer.getbuffer())

    def remove_leftovers(self) -> int:
        """Delete the temporary files of writes a killed process left (hold the lock); how many."""
        leftovers = [*self.path.glob(f"*{TEMPORARY_SUFFIX}")]
        leftovers += self.path.glob(f"trials/*/*{TEMPORARY_SUFFIX}")
        for path in leftovers:
            path.unlink(missing_ok=True)
        return len(leftovers)

    def trained_weights_file(self, record: TrialRecord) -> Path:
        """The weights a trained trial loads (an earlier trial's where it reused that training).

        Raises:
            RunDirError: the trial was not trained, or its weights are missing.
        """
        if not record.trained or record.candidate is None:
            raise RunDirError(
                f"trial {record.number} of {str(self.path)!r} was not trained "
                f"(state {record.state}, feasible {record.feasible}); pick a trained "
                f"trial, e.g. one listed by `autoprune report {self.path}`"
            )
        source = record.cached_from if record.cached_from is not None else record.number
        weights = self.weights_file(source)
        if not weights.exists():
            raise RunDirError(f"weights of trial {record.number} are missing ({weights})")
        return weights

    def trained_state(self, record: TrialRecord) -> dict[str, torch.Tensor]:
        """A trained trial's ``state_dict`` (CPU); see :meth:`trained_model`."""
        weights = self.trained_weights_file(record)
        fix = (
            f"export another trial (`autoprune report {self.path}` lists them), or search again "
            f"in a new --run-dir"
        )
        data = weights.read_bytes()
        try:
            state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as error:  # noqa: BLE001 - zip, pickle or tensor errors of a bad file
            raise DamagedFileError(
                f"weights of trial {record.number} {str(weights)!r} are damaged "
                f"({reason(error).split('. ')[0]}); {fix}"
            ) from None
        legacy = sorted(k for k in state if k.endswith(_LEGACY_QUANTIZER_KEYS))
        if legacy:
            raise RunDirError(
                f"weights of trial {record.number} were saved by an autoprune older than its "
                f"LSQ quantizer ({legacy[0]}, {len(legacy)} such tensors); export them with the "
                f"autoprune that trained them, or search again in a new run directory"
            )
        if record.weights_sha256 not in (None, hashlib.sha256(data).hexdigest()):
            raise DamagedFileError(
                f"weights of trial {record.number} {str(weights)!r} are damaged (their SHA-256 "
                f"is not the one recorded when they were written); {fix}"
            )
        return state

    def trained_model(self, record: TrialRecord) -> nn.Module:
        """A trained trial's network with its weights (evaluation mode, CPU).

        A trial that reused an earlier training of its architecture loads that trial's weights.

        Raises:
            RunDirError: the trial was not trained, or its weights are missing, damaged
                (:class:`DamagedFileError`) or saved by an autoprune whose quantizer state
                cannot be loaded.
        """
        state = self.trained_state(record)
        model = build_model(Candidate.from_dict(record.candidate), seed=0)  # type: ignore[arg-type]
        try:
            model.load_state_dict(state)
        except RuntimeError as error:  # tensors of other names or shapes
            raise DamagedFileError(
                f"weights of trial {record.number} do not fit its architecture "
                f"({reason(error)}); export another trial, or search again in a new --run-dir"
            ) from None
        return model.eval()

    @property
    def data_file(self) -> Path:
        return self.path / "data.json"

    def save_data(self, data: DatasetSplits) -> None:
        """Record what a deployed model needs from the data set (``data.json``): its name,
        input shape ``[C, H, W]``, class count and names, and the normalisation its inputs
        get, ``(x / 255 - mean) / std`` per channel (``x`` in 0..255)."""
        record = {
            "name": data.name,
            "input_shape": list(data.input_shape),
            "num_classes": data.num_classes,
            "class_names": list(data.class_names),
            "mean": list(data.mean),
            "std": list(data.std),
        }
        write_atomic(self.data_file, json.dumps(record, indent=2) + "\n")

    def data(self) -> dict[str, Any] | None:
        """``data.json`` (:meth:`save_data`); ``None`` for a run older than it."""
        if not self.data_file.exists():
            return None
        fix = "delete it; `autoprune search` with the run's options writes it again"
        return read_json(self.data_file, what="data.json", fix=fix)  # type: ignore[no-any-return]

    def save_test_accuracy(self, number: int, accuracy: float, fidelity: str | None) -> None:
        """Record trial ``number``'s test-split accuracy (``test.json``) and its fidelity."""
        self.trial_dir(number).mkdir(parents=True, exist_ok=True)
        result = {"test_accuracy": accuracy, "split": "test", "fidelity": fidelity}
        write_atomic(self._test_file(number), json.dumps(result) + "\n")

    def start_attempt(self, number: int, worker: dict[str, Any]) -> int:
        """Append a Ray worker's attempt at trial ``number`` to ``attempts.jsonl``; its
        attempt number (1 for the first)."""
        attempts = self.attempts_file(number)
        attempts.parent.mkdir(parents=True, exist_ok=True)
        attempt = 1 + (len(attempts.read_text().splitlines()) if attempts.exists() else 0)
        with open(attempts, "a") as handle:
            handle.write(json.dumps({**worker, "attempt": attempt, "started": time.time()}) + "\n")
        return attempt
