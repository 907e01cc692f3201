"""What a run stores in its study: every trial and study attribute, named and typed, in one place.

The study storage alone is the record of a run (weights aside): the objective writes these
attributes as it establishes them, Ray workers send them back to the driver, and
:class:`~autoprune.search.RunDir` reads them into :class:`~autoprune.search.TrialRecord`\\ s.
Nothing else names a key. Keys are the strings stored, so they never change; a new attribute
is a new :class:`TrialAttr` here. (A controller's own state, such as the ``rl`` policy, lives in
system attributes that the controller names and reads itself.)

Example:
    >>> import optuna
    >>> study = optuna.create_study()
    >>> trial = study.ask()
    >>> ACCURACY.set(trial, 0.874)
    >>> frozen_trial = study.tell(trial, 0.874)
    >>> ACCURACY.get(frozen_trial), frozen_trial.user_attrs
    (0.874, {'accuracy': 0.874})
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

__all__ = [
    "ACCURACY",
    "CACHED_FROM",
    "CANDIDATE",
    "CANDIDATE_HASH",
    "COSTS",
    "CURVE",
    "ERROR",
    "EVAL",
    "FEASIBLE",
    "FIDELITY",
    "HYPERVOLUME_REFERENCE",
    "INTERRUPTED",
    "RAY_WORKER",
    "REFERENCE",
    "REPAIR_STEPS",
    "RETRY_OF",
    "SECONDS",
    "STOPPED_EARLY",
    "TRAINED",
    "WEIGHTS_SHA256",
    "TRIAL_ATTRS",
    "VIOLATIONS",
    "TrialAttr",
]

T = TypeVar("T")


class _HasUserAttrs(Protocol):
    @property
    def user_attrs(self) -> Mapping[str, Any]: ...


class _SetsUserAttrs(Protocol):
    def set_user_attr(self, key: str, value: Any) -> None: ...


@dataclass(frozen=True)
class TrialAttr(Generic[T]):
    """One user attribute of a study trial: the key it is stored under and its JSON type.

    ``set`` refuses a value of another type (an internal error, not a user's); ``get``
    returns ``default`` for a trial that lacks it.
    """

    key: str
    types: tuple[type, ...]
    doc: str

    def get(self, trial: _HasUserAttrs, default: T | None = None) -> T | None:
        """The attribute of ``trial`` (an Optuna trial or frozen trial, or a recorded one)."""
        return trial.user_attrs.get(self.key, default)

    def set(self, trial: _SetsUserAttrs, value: T) -> None:
        """Write the attribute to ``trial``."""
        if isinstance(value, bool) and bool not in self.types:
            raise TypeError(f"trial attribute {self.key!r} takes {self.types}, got a bool")
        if not isinstance(value, self.types):
            raise TypeError(
                f"trial attribute {self.key!r} takes {self.types}, got {type(value).__name__}"
            )
        trial.set_user_attr(self.key, value)


_NUMBER = (int, float)

# Proposal and costs (every trial that got as far as a candidate).
CANDIDATE: TrialAttr[dict[str, Any]] = TrialAttr(
    "candidate", (dict,), "the architecture, Candidate.to_dict()"
)
CANDIDATE_HASH: TrialAttr[str] = TrialAttr("candidate_hash", (str,), "Candidate.hash")
COSTS: TrialAttr[dict[str, Any]] = TrialAttr(
    "costs", (dict,), "macs, params, size_bytes, latency_ms, energy_mj and their sources"
)
VIOLATIONS: TrialAttr[dict[str, float]] = TrialAttr(
    "violations", (dict,), "budget spec -> relative excess (<= 0 holds)"
)
FEASIBLE: TrialAttr[bool] = TrialAttr("feasible", (bool,), "every budget holds")
REPAIR_STEPS: TrialAttr[int] = TrialAttr(
    "repair_steps", (int,), "one-choice shrink steps that fitted the proposal to the budgets"
)

# Evaluation.
TRAINED: TrialAttr[bool] = TrialAttr("trained", (bool,), "the candidate was trained (or scored)")
EVAL: TrialAttr[dict[str, Any]] = TrialAttr("eval", (dict,), "EvalResult.to_dict()")
ACCURACY: TrialAttr[float] = TrialAttr(
    "accuracy", _NUMBER, "validation accuracy (a fraction), or the proxy's score"
)
FIDELITY: TrialAttr[str] = TrialAttr("fidelity", (str,), "how it was trained, in words")
CURVE: TrialAttr[dict[str, Any]] = TrialAttr(
    "intermediate_accuracy", (dict,), '{"epochs": E, "accuracy": [after epoch 1, ...]}'
)
WEIGHTS_SHA256: TrialAttr[str] = TrialAttr(
    "weights_sha256", (str,), "SHA-256 of the trial's model.pt as written (hex)"
)
CACHED_FROM: TrialAttr[int] = TrialAttr(
    "cached_from", (int,), "the trial whose training of the same architecture was reused"
)
STOPPED_EARLY: TrialAttr[dict[str, Any]] = TrialAttr(
    "stopped_early", (dict,), '{"epoch", "epochs", "by"} of a trial stopped early (pruned)'
)

# How the trial went.
ERROR: TrialAttr[str] = TrialAttr("error", (str,), "why a failed trial failed, one line")
INTERRUPTED: TrialAttr[bool] = TrialAttr(
    "interrupted", (bool,), "stopped by Ctrl-C or a killed process; run again on resume"
)
RETRY_OF: TrialAttr[int] = TrialAttr("retry_of", (int,), "the interrupted trial this re-runs")
REFERENCE: TrialAttr[str] = TrialAttr(
    "reference", (str,), "set on the unpruned base model's trial, which is never repaired"
)
RAY_WORKER: TrialAttr[dict[str, Any]] = TrialAttr(
    "ray", (dict,), "the Ray worker's attempt, pid and host"
)
SECONDS: TrialAttr[dict[str, float]] = TrialAttr(
    "seconds",
    (dict,),
    "wall seconds per stage: propose, costs, evaluate (less its training and validation), "
    "train, validate, save",
)

#: Every trial attribute, by key.
TRIAL_ATTRS: dict[str, TrialAttr[Any]] = {
    attr.key: attr
    for attr in (
        CANDIDATE,
        CANDIDATE_HASH,
        COSTS,
        VIOLATIONS,
        FEASIBLE,
        REPAIR_STEPS,
        TRAINED,
        EVAL,
        ACCURACY,
        FIDELITY,
        CURVE,
        CACHED_FROM,
        STOPPED_EARLY,
        ERROR,
        INTERRUPTED,
        RETRY_OF,
        REFERENCE,
        RAY_WORKER,
        SECONDS,
    )
}

#: Study user attribute: the run's HypervolumeReference.to_dict(), set once at creation.
HYPERVOLUME_REFERENCE = "hypervolume_reference"
