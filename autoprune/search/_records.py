"""Trial records: what one trial of a search established, as a frozen, JSON-ready dataclass.

:func:`record_of` reads a study trial's attributes (:mod:`._schema`) into a record;
:func:`counts_toward_budget` says whether a trial counts toward ``search.trials``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from autoprune.hwprofiles._estimate import latency_label
from autoprune.search import _schema as attrs

__all__ = ["TrialRecord", "counts_toward_budget", "record_of"]


@dataclass(frozen=True)
class TrialRecord:
    """One trial of a search, read back from the study storage and the run directory.

    Costs carry their unit in their names (``macs``, ``size_bytes``, ``latency_ms``,
    ``energy_mj``); hardware figures carry their source (``measured`` or ``estimated``); the
    accuracy carries its split and training fidelity. ``accuracy`` is ``None`` for a candidate
    that was over budget and therefore never trained; under the ``proxy`` evaluator it holds the
    proxy's score (``metric`` names it), not a fraction; for a trial stopped early (``pruned``)
    it is the validation accuracy at the epoch it stopped.

    Example:
        >>> from autoprune.search import RunDir
        >>> record = RunDir("runs/demo").records()[0]  # a finished search's first trial
        >>> record.state, record.fidelity, record.latency_source, record.metric
        ('complete', '64 samples x 1 epoch @ 16x16', 'estimated', 'accuracy')
        >>> 0 <= record.accuracy <= 1 and record.latency_ms > 0 and record.energy_mj > 0
        True
    """

    number: int
    state: str  # "complete" | "failed" | "pruned" | "running"
    candidate_hash: str | None = None
    candidate: dict[str, Any] | None = None
    feasible: bool | None = None
    trained: bool = False
    accuracy: float | None = None
    accuracy_split: str | None = None
    fidelity: str | None = None
    test_accuracy: float | None = None
    test_fidelity: str | None = None
    macs: int | None = None
    params: int | None = None
    size_bytes: int | None = None
    latency_ms: float | None = None
    latency_source: str | None = None
    latency_expected_error: float | None = None  # the estimate's calibrated error, a fraction
    energy_mj: float | None = None
    energy_source: str | None = None
    violations: dict[str, float] = field(default_factory=dict)
    train_seconds: float | None = None
    cached_from: int | None = None
    weights_sha256: str | None = None  # of the weights file the trial loads, as written
    error: str | None = None
    repair_steps: int | None = None  # shrink steps that fitted the proposal to the budgets
    evaluator: str | None = None  # scratch-e, scratch-b, finetune, distill or proxy
    metric: str = "accuracy"  # what `accuracy` holds: a fraction, or a proxy's score
    stopped_early: dict[str, int] | None = None  # {"epoch", "epochs", "by"} of a pruned trial

    @property
    def resolution(self) -> str | None:
        """Deploy input shape as ``CxHxW`` (``"1x28x28"``)."""
        if not self.candidate:
            return None
        return "x".join(str(d) for d in self.candidate["input_shape"])

    @property
    def latency_label(self) -> str:
        """``"estimated, +-6 %"``, ``"estimated"`` or ``"measured"``."""
        return latency_label(self.latency_source or "-", self.latency_expected_error)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrialRecord:
        return cls(**data)


_STATES = {
    TrialState.COMPLETE: "complete",
    TrialState.FAIL: "failed",
    TrialState.PRUNED: "pruned",
    TrialState.RUNNING: "running",
    TrialState.WAITING: "waiting",
}


def record_of(trial: FrozenTrial, test: Mapping[str, Any] | None = None) -> TrialRecord:
    """The record of a study trial; ``test`` is its test-split result (``test.json``), if any."""
    costs = attrs.COSTS.get(trial) or {}
    evaluation = attrs.EVAL.get(trial) or {}
    test = test or {}
    error = attrs.ERROR.get(trial)
    if trial.state == TrialState.FAIL and attrs.INTERRUPTED.get(trial):
        error = error or "interrupted"
    return TrialRecord(
        number=trial.number,
        state=_STATES[trial.state],
        candidate_hash=attrs.CANDIDATE_HASH.get(trial),
        candidate=attrs.CANDIDATE.get(trial),
        feasible=attrs.FEASIBLE.get(trial),
        trained=bool(attrs.TRAINED.get(trial, False)),
        accuracy=attrs.ACCURACY.get(trial),
        accuracy_split=evaluation.get("split"),
        fidelity=attrs.FIDELITY.get(trial),
        test_accuracy=test.get("test_accuracy"),
        test_fidelity=test.get("fidelity"),
        macs=costs.get("macs"),
        params=costs.get("params"),
        size_bytes=costs.get("size_bytes"),
        latency_ms=costs.get("latency_ms"),
        latency_source=costs.get("latency_source"),
        latency_expected_error=costs.get("latency_expected_error"),
        energy_mj=costs.get("energy_mj"),
        energy_source=costs.get("energy_source"),
        violations=dict(attrs.VIOLATIONS.get(trial) or {}),
        train_seconds=evaluation.get("train_seconds"),
        cached_from=attrs.CACHED_FROM.get(trial),
        weights_sha256=attrs.WEIGHTS_SHA256.get(trial),
        error=error,
        repair_steps=attrs.REPAIR_STEPS.get(trial),
        evaluator=evaluation.get("evaluator"),
        metric=evaluation.get("metric", "accuracy"),
        stopped_early=attrs.STOPPED_EARLY.get(trial),
    )


def counts_toward_budget(trial: optuna.trial.FrozenTrial) -> bool:
    """Whether ``trial`` counts toward ``search.trials``: finished, and not interrupted (an
    interrupted trial is run again)."""
    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    return trial.state == TrialState.FAIL and not attrs.INTERRUPTED.get(trial)
