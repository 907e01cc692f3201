"""What Ray workers ask of the run directory, served from the driver's node.

A worker node shares nothing with the driver but Ray: it never opens the run directory or the
study. What a trial writes there (its trained weights, its attempts) and what it reads (the
study's finished trials, for early stopping) goes through :class:`RunService`, an actor that the
driver starts on its own node (no CPU reserved) and stops after the run. The actor's calls carry
their data through Ray's object store, so the run directory may exist on the head node alone.

What a worker keeps of its own (kernel lists, measurements, a tuning database, the unpruned base
model it trained) goes to :func:`worker_scratch`, a folder under the node's temporary folder;
the files of it that the run directory keeps (a trial's weights, ``base/eval.json``) are sent
with :meth:`RunService.save_file`.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

import optuna

from autoprune.search._rundir import RunDir

__all__ = ["RunService", "StudyView", "worker_scratch"]


class RunService:
    """The run directory's trial files and study, for workers that cannot reach them.

    Created as a Ray actor by the driver (``ray.remote(RunService)``) on the driver's node;
    ``run_dir`` is the driver's run directory, prepared (its ``run.json`` names the study).
    """

    def __init__(self, run_dir: str) -> None:
        self._run = RunDir(run_dir)
        self._study: optuna.Study | None = None

    def start_attempt(self, number: int, worker: dict[str, Any]) -> int:
        """Append a worker's attempt at trial ``number`` to its ``attempts.jsonl``; the attempt
        number (1 for the first)."""
        return self._run.start_attempt(number, worker)

    def save_file(self, relative: str, data: bytes) -> str:
        """Write ``data`` to ``relative`` (a path inside the run directory, such as
        ``trials/0003/model.pt``) atomically; its absolute path.

        Raises:
            ValueError: ``relative`` leads outside the run directory.
        """
        root = self._run.path.resolve()
        path = (root / relative).resolve()
        if not path.is_relative_to(root) or path == root:
            raise ValueError(f"{relative!r} is not a file inside the run directory {root}")
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        temporary.write_bytes(data)
        temporary.replace(path)
        return str(path)

    def trials(self, states: tuple[str, ...] | None = None) -> list[optuna.trial.FrozenTrial]:
        """The study's trials now, those in ``states`` (``TrialState`` names) or all."""
        if self._study is None:
            self._study = self._run.load_study()
            assert self._study is not None, "the driver creates the study before any trial"
        wanted = None if states is None else tuple(optuna.trial.TrialState[s] for s in states)
        return self._study.get_trials(deepcopy=False, states=wanted)


class StudyView:
    """The read-only part of a study that an objective uses (``get_trials``), answered by a
    :class:`RunService` actor."""

    def __init__(self, service: Any) -> None:
        self._service = service

    def get_trials(
        self,
        deepcopy: bool = True,
        states: tuple[optuna.trial.TrialState, ...] | None = None,
    ) -> list[optuna.trial.FrozenTrial]:
        import ray

        names = None if states is None else tuple(s.name for s in states)
        return ray.get(self._service.trials.remote(names))


def worker_scratch(run_key: str) -> RunDir:
    """A worker node's own folder for run ``run_key`` (kernel lists, measurements, tuning
    database, base model): under the node's temporary folder, kept for the run's next trials.

    Example:
        >>> worker_scratch(run_key("/runs/demo", "autoprune")).path.name
        'autoprune-run-688a850124d3'
    """
    return RunDir(Path(tempfile.gettempdir()) / f"autoprune-run-{run_key[:12]}")


def run_key(run_dir: str, study_name: str) -> str:
    """A run's identity across nodes: its driver's run directory and study name, hashed."""
    return hashlib.sha256(f"{run_dir}\0{study_name}".encode()).hexdigest()
