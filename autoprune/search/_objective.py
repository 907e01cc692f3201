"""The trial objective: one candidate from proposal to objectives, in data-flow order.

params -> :class:`~autoprune.spaces.Candidate` -> compact ``nn.Module`` (fresh init) -> exact
costs at the deploy shape -> latency and energy on the target -> budget gate (over budget:
recorded infeasible, never trained) -> the run's evaluator (training from scratch at the
configured fidelity by default; see :mod:`autoprune.evaluators`) -> (validation accuracy,
latency_ms, energy_mj). The reference trial (the unpruned base) is the run's trained base model,
which the fine-tune and distillation evaluators start from.

Everything a trial establishes is written to the trial's user attributes (:mod:`._schema`), so
the study storage alone is the record of a run; the trained weights go to the run directory
(:meth:`RunDir.save_weights`).

The objective runs on an ``optuna.Trial`` (the local loop) or on a :class:`RecordedTrial`: the same
calls, recorded in a process that does not hold the study's trial (a Ray worker), and applied to
the study's trial afterwards by :func:`apply_recording`. Both paths share one evaluation, and
both give the sampler the budgets' violations through :func:`set_constraints`.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import optuna
import torch

from autoprune.config import Budget, Config
from autoprune.evaluators import EpochHook, Evaluator, TrainedBase
from autoprune.hwprofiles import DeviceProfile, HardwareCoster, candidate_costs
from autoprune.search import _optuna
from autoprune.search import _schema as attrs
from autoprune.search._early_stopping import DominanceStopper, EarlyStopped, peers_at
from autoprune.search._repair import repair
from autoprune.search._rundir import RunDir
from autoprune.search._stages import StageClock
from autoprune.spaces import Candidate, SearchSpace

__all__ = [
    "CandidateObjective",
    "ObjectiveTrial",
    "RecordedTrial",
    "apply_recording",
    "candidate_seed",
    "set_constraints",
]

_logger = logging.getLogger("autoprune.search")


class ObjectiveTrial(Protocol):
    """The part of ``optuna.Trial`` that :class:`CandidateObjective` uses."""

    @property
    def number(self) -> int: ...

    @property
    def user_attrs(self) -> dict[str, Any]: ...

    @property
    def study(self) -> optuna.Study: ...

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any: ...

    def set_user_attr(self, key: str, value: Any) -> None: ...

    def set_constraint(self, key: str, value: float) -> None: ...


class RecordedTrial:
    """A trial evaluated away from its study: given params, recorded attributes and constraints.

    ``params`` and ``user_attrs`` are those of the study's trial (the sampler's proposal, and
    attributes set when it was queued, such as ``reference``); what the objective sets is
    recorded in :attr:`recorded_attrs` and :attr:`constraints`. ``study`` is a read-only view of
    the study (``load_study()`` on first use), where the objective looks for an architecture
    trained before.

    Example:
        >>> from autoprune.config import load_config
        >>> from autoprune.search._assembly import assemble
        >>> run = RunDir("runs/demo")  # a finished search
        >>> objective = assemble(load_config(run.path / "config.yaml"), run=run).objective(run)
        >>> proposal = run.load_study().trials[1].params  # trial 1's candidate, proposed again
        >>> trial = RecordedTrial(number=3, params=proposal, load_study=run.load_study)
        >>> values = objective(trial)  # accuracy, latency_ms, energy_mj
        >>> values == tuple(run.load_study().trials[1].values)  # found trained, not retrained
        True
        >>> trial.recorded_attrs["cached_from"]
        1
        >>> recording = trial.recording(values)  # JSON-ready; apply_recording() on the driver
    """

    def __init__(
        self,
        *,
        number: int,
        params: dict[str, Any],
        user_attrs: dict[str, Any] | None = None,
        study: optuna.Study | None = None,
        load_study: Callable[[], optuna.Study | None] | None = None,
    ) -> None:
        assert study is not None or load_study is not None
        self._number = number
        self.params = dict(params)
        self._given_attrs = dict(user_attrs or {})
        self.recorded_attrs: dict[str, Any] = {}
        self.constraints: dict[str, float] = {}
        self._study = study
        self._load_study = load_study

    @property
    def number(self) -> int:
        """The study trial's number (``trials/NNNN`` folder)."""
        return self._number

    @property
    def user_attrs(self) -> dict[str, Any]:
        """The study trial's attributes with the recorded ones on top."""
        return {**self._given_attrs, **self.recorded_attrs}

    @property
    def study(self) -> optuna.Study:
        """The study, loaded on first use (read only: nothing is written)."""
        if self._study is None:
            assert self._load_study is not None
            study = self._load_study()
            assert study is not None, "a trial's study exists before the trial runs"
            self._study = study
        return self._study

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        """The given param ``name``; it must be one of ``choices``."""
        if name not in self.params:
            raise KeyError(
                f"trial {self.number} has no param {name!r}; it has {sorted(self.params)}"
            )
        value = self.params[name]
        if value not in choices:
            raise ValueError(
                f"trial {self.number}: param {name}={value!r} is not one of {list(choices)}"
            )
        return value

    def set_user_attr(self, key: str, value: Any) -> None:
        self.recorded_attrs[key] = value

    def set_constraint(self, key: str, value: float) -> None:
        value = float(value)
        if math.isnan(value):
            raise ValueError(f"constraint {key!r} of trial {self.number} is NaN")
        self.constraints.setdefault(key, value)  # as Optuna: the first value set stays

    def recording(self, values: Sequence[float] | None) -> dict[str, Any]:
        """What the evaluation established, JSON-ready: ``values`` ``None`` means it failed."""
        return {
            "number": self.number,
            "params": self.params,
            "user_attrs": self.recorded_attrs,
            "constraints": self.constraints,
            "values": None if values is None else [float(v) for v in values],
        }


def apply_recording(trial: optuna.Trial, recording: dict[str, Any]) -> list[float] | None:
    """Set a :meth:`RecordedTrial.recording` on the study's trial; returns its objective values.

    Call it before ``study.tell(trial, values)`` so that the sampler sees the constraints (set
    by :func:`set_constraints`, in the recorded order: the run's budget order).
    ``None`` means the evaluation failed (tell ``FAIL``).
    """
    if recording["number"] != trial.number or recording["params"] != trial.params:
        raise ValueError(
            f"recording of trial {recording['number']} with params {recording['params']} "
            f"does not belong to trial {trial.number} with params {trial.params}"
        )
    for key, value in recording["user_attrs"].items():
        trial.set_user_attr(key, value)
    set_constraints(trial, recording["constraints"])
    values = recording["values"]
    return None if values is None else [float(v) for v in values]


#: Optuna 4's trial system attribute: the list of a trial's constraint values.
CONSTRAINTS_KEY = "constraints"
#: Prefix of Optuna 5's named constraint attributes (``Trial.set_constraint(name, value)``).
NAMED_CONSTRAINT_PREFIX = "constraints:"


def set_constraints(trial: ObjectiveTrial, constraints: Mapping[str, float]) -> None:
    """Give the sampler a trial's constraint vector: one value per budget, ``<= 0`` where the
    budget holds, keyed by the budget's spec in the run's budget order.

    Contract:

    * On an ``optuna.Trial``, the values go to the trial's system attribute ``constraints`` as
      one list, in the order of ``constraints`` (Optuna 4's form). Optuna 5's samplers read it
      as constraints ``"0"``, ``"1"``, ...; optuna-dashboard (0.21) reads only this form. The
      budgets' names are in the trial's ``violations`` user attribute, which holds the same
      values; what autoprune reads from ``trial.constraints`` is only whether any value is
      ``> 0``.
    * One form per study, decided by its trials: the study's first trial (by number) that has
      constraints fixes the form for all. A study begun before autoprune wrote the list (its
      trials carry Optuna 5's named attributes ``constraints:<spec>``, from
      ``Trial.set_constraint``) keeps the named form on resume: each value is set with
      ``trial.set_constraint(spec, value)`` instead. So the samplers see the same number,
      names and order of constraints for every trial of a study (the GP sampler stacks them as
      columns: mixed forms would pair a budget with another's column). Never both forms on one
      trial: Optuna 5 merges them, so every budget would count twice, and GP fails with "The
      number of constraints must be the same for all trials" on a study whose older trials
      have one form.
    * Values are floats (``float(value)``); NaN is refused with ``ValueError``, as Optuna
      refuses it. Call it once per trial, before the trial is told; nothing is written when
      there are no budgets.
    * On any other trial (a :class:`RecordedTrial` on a Ray worker), each value is recorded with
      ``set_constraint`` in order, and :func:`apply_recording` calls this function on the
      study's trial.
    """
    values = {key: float(value) for key, value in constraints.items()}
    for key, value in values.items():
        if math.isnan(value):
            raise ValueError(f"constraint {key!r} of trial {trial.number} is NaN")
    if not values:
        return
    if not isinstance(trial, optuna.Trial) or _has_named_constraints(trial.study):
        for key, value in values.items():
            trial.set_constraint(key, value)
        return
    _optuna.set_trial_system_attr(trial.study, trial, CONSTRAINTS_KEY, list(values.values()))


def _has_named_constraints(study: optuna.Study) -> bool:
    """Whether the study's trials carry named constraints (a study begun before the list form).

    Every trial of a study has the same form, so the first one with constraints decides.
    """
    for other in study.get_trials(deepcopy=False):
        system_attrs = other.system_attrs
        if CONSTRAINTS_KEY in system_attrs:
            return False
        if any(key.startswith(NAMED_CONSTRAINT_PREFIX) for key in system_attrs):
            return True
    return False


def candidate_seed(candidate: Candidate, search_seed: int) -> int:
    """Training seed of a candidate: the same architecture gets the same seed in every trial."""
    return (int(candidate.hash[:8], 16) ^ search_seed) % (2**31 - 1)


class CandidateObjective:
    """Optuna objective returning ``(accuracy, latency_ms, energy_mj)`` for one trial.

    Budgets are checked on the exact costs before any training: a candidate over budget is
    recorded with ``feasible=False`` and objective values ``(0.0, latency, energy)`` (it is never
    trained; the sampler ranks it by its constraint violation). A candidate already trained in
    this study (same content hash) reuses that result instead of training again, unless
    ``reuse_trained`` is off (a Ray worker, whose driver looked, :meth:`reuse`, before it
    dispatched the trial). Built by :meth:`RunParts.objective
    <autoprune.search.RunParts.objective>`.
    """

    def __init__(
        self,
        *,
        config: Config,
        space: SearchSpace,
        run: RunDir,
        coster: HardwareCoster,
        evaluator: Evaluator,
        base: TrainedBase,
        stopper: DominanceStopper | None = None,
        reuse_trained: bool = True,
    ) -> None:
        self.config = config
        self.space = space
        self.run = run
        self.coster = coster
        self.evaluator = evaluator
        self.base = base
        self.stopper = stopper
        self.reuse_trained = reuse_trained

    @property
    def profile(self) -> DeviceProfile:
        return self.coster.profile

    def budget_violations(self, values: dict[str, Any]) -> dict[str, float]:
        """Relative excess over each budget (``<= 0`` holds), keyed by the budget's spec."""
        budgets: tuple[Budget, ...] = self.config.budgets
        return {b.spec: b.violation(float(values[b.metric])) for b in budgets}

    def __call__(self, trial: ObjectiveTrial) -> tuple[float, float, float]:
        try:
            return self._evaluate(trial)
        except optuna.TrialPruned:
            raise
        except KeyboardInterrupt:
            attrs.INTERRUPTED.set(trial, True)
            raise
        except Exception as exc:
            message = f"{type(exc).__name__}: {exc}"
            attrs.ERROR.set(trial, message)
            _after_onednn_failure(exc)
            # One line: the search goes on (Optuna's own report of it, with a traceback, is off).
            _logger.warning("trial %d failed: %s", trial.number, message.strip().splitlines()[0])
            _logger.debug("trial %d failed", trial.number, exc_info=True)
            raise

    def _evaluate(self, trial: ObjectiveTrial) -> tuple[float, float, float]:
        clock = StageClock()
        candidate = self._propose(trial)
        clock.lap("propose")
        values = candidate_costs(candidate, self.profile, self.coster)
        clock.lap("costs")
        violations = self.budget_violations(values)
        feasible = all(v <= 0 for v in violations.values())
        attrs.COSTS.set(trial, values)
        attrs.VIOLATIONS.set(trial, violations)
        set_constraints(trial, violations)  # Optuna: feasible when every value <= 0
        attrs.FEASIBLE.set(trial, feasible)
        latency, energy = float(values["latency_ms"]), float(values["energy_mj"])
        if not feasible:
            over = ", ".join(spec for spec, v in violations.items() if v > 0)
            _logger.info(
                "trial %d: candidate %s is over budget %s; not trained",
                trial.number,
                candidate.hash,
                over,
            )
            attrs.TRAINED.set(trial, False)
            attrs.SECONDS.set(trial, clock.seconds)
            return 0.0, latency, energy

        cached = self._trained_before(trial, candidate.hash) if self.reuse_trained else None
        clock.lap("costs")
        if cached is not None:
            attrs.SECONDS.set(trial, clock.seconds)
            return self._reused(trial, cached)

        if self.evaluator.trains and self.base.is_base(candidate):
            model, result = self.base.get()
        else:
            seed = candidate_seed(candidate, self.config.search.seed)
            try:
                model, result = self.evaluator.evaluate(
                    candidate, seed=seed, on_epoch=self._epoch_hook(trial, values)
                )
            except EarlyStopped as stop:
                attrs.TRAINED.set(trial, False)
                attrs.ACCURACY.set(trial, stop.accuracy)
                attrs.STOPPED_EARLY.set(
                    trial, {"epoch": stop.epoch, "epochs": stop.epochs, "by": stop.by}
                )
                _logger.info("trial %d: candidate %s %s", trial.number, candidate.hash, stop)
                raise optuna.TrialPruned(str(stop)) from None
        clock.lap("evaluate")
        clock.split("evaluate", "train", result.train_seconds)
        clock.split("evaluate", "validate", result.eval_seconds)
        weights = self.run.save_weights(trial.number, model)
        attrs.WEIGHTS_SHA256.set(trial, hashlib.sha256(weights.read_bytes()).hexdigest())
        clock.lap("save")
        attrs.TRAINED.set(trial, True)
        attrs.EVAL.set(trial, result.to_dict())
        attrs.ACCURACY.set(trial, result.accuracy)
        if result.intermediate:
            attrs.CURVE.set(trial, {"epochs": result.epochs, "accuracy": list(result.intermediate)})
        attrs.FIDELITY.set(trial, result.fidelity.describe(candidate.input_shape[1:]))
        clock.lap("save")
        attrs.SECONDS.set(trial, clock.seconds)
        _logger.info(
            "trial %d: candidate %s: %s in %.0f s",
            trial.number,
            candidate.hash,
            result.label,
            clock.total,
        )
        return float(result.accuracy), latency, energy

    def reuse(self, trial: ObjectiveTrial) -> tuple[float, float, float] | None:
        """The values of ``trial`` when a complete trial of the study trained its candidate
        before (its costs and training copied onto ``trial``, nothing computed); ``None``, with
        nothing decided, otherwise. What a Ray driver asks before it dispatches a trial."""
        candidate = self._propose(trial)
        cached = self._trained_before(trial, candidate.hash)
        if cached is None:
            return None
        for attr in (attrs.COSTS, attrs.VIOLATIONS, attrs.FEASIBLE):
            attr.set(trial, attr.get(cached))
        set_constraints(trial, attrs.VIOLATIONS.get(cached))  # type: ignore[arg-type]
        return self._reused(trial, cached)

    def _reused(
        self, trial: ObjectiveTrial, cached: optuna.trial.FrozenTrial
    ) -> tuple[float, float, float]:
        _logger.info(
            "trial %d: candidate %s was trained in trial %d; reusing its result",
            trial.number,
            attrs.CANDIDATE_HASH.get(trial),
            cached.number,
        )
        for attr in (attrs.TRAINED, attrs.EVAL, attrs.ACCURACY, attrs.FIDELITY):
            attr.set(trial, attr.get(cached))
        digest = attrs.WEIGHTS_SHA256.get(cached)
        if digest is not None:  # of the weights this trial loads: the cached trial's
            attrs.WEIGHTS_SHA256.set(trial, digest)
        attrs.CACHED_FROM.set(trial, cached.number)
        costs = attrs.COSTS.get(trial)
        assert isinstance(costs, dict)
        accuracy = float(attrs.ACCURACY.get(cached))  # type: ignore[arg-type]
        return accuracy, float(costs["latency_ms"]), float(costs["energy_mj"])

    def _propose(self, trial: ObjectiveTrial) -> Candidate:
        """The trial's candidate: its params, repaired to fit exact budgets unless it is the
        reference (the unpruned base)."""
        params = {
            d.name: trial.suggest_categorical(d.name, d.choices) for d in self.space.decisions
        }
        if self.config.search.repair and attrs.REFERENCE.get(trial) is None:
            params, steps = repair(self.space, params, self.config.budgets)
            steps += int(attrs.REPAIR_STEPS.get(trial) or 0)  # the sampler's repair
            attrs.REPAIR_STEPS.set(trial, steps)
            if steps:
                _logger.info(
                    "trial %d: proposal over budget; shrunk in %d steps", trial.number, steps
                )
        candidate = self.space.candidate(params)
        attrs.CANDIDATE.set(trial, candidate.to_dict())
        attrs.CANDIDATE_HASH.set(trial, candidate.hash)
        return candidate

    def _epoch_hook(self, trial: ObjectiveTrial, costs: dict[str, Any]) -> EpochHook | None:
        """The early-stopping check after each epoch, or ``None`` when the run has none."""
        stopper = self.stopper
        if stopper is None:
            return None
        curve: list[float] = []

        def after_epoch(epoch: int, epochs: int | float, accuracy: float) -> None:
            curve.append(accuracy)
            attrs.CURVE.set(trial, {"epochs": epochs, "accuracy": list(curve)})
            peers = peers_at(trial.study, epoch=epoch, epochs=epochs, exclude=trial.number)
            by = stopper.dominating(peers, accuracy=accuracy, costs=costs)
            if by is not None:
                raise EarlyStopped(epoch=epoch, epochs=epochs, accuracy=accuracy, by=by)

        return after_epoch

    @staticmethod
    def _trained_before(
        trial: ObjectiveTrial, candidate_hash: str
    ) -> optuna.trial.FrozenTrial | None:
        for other in trial.study.get_trials(
            deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)
        ):
            if attrs.CANDIDATE_HASH.get(other) == candidate_hash and attrs.TRAINED.get(other):
                return other
        return None


def _after_onednn_failure(error: Exception) -> None:
    """Train the rest of this process without oneDNN once it failed to create a primitive.

    oneDNN cannot create a primitive when memory runs out while it builds one (a candidate too
    large for the memory limit), and stays unable to for every later shape of the process;
    PyTorch's own CPU kernels are slower but unaffected, so the next trials still train.
    """
    if isinstance(error, RuntimeError) and "could not create a primitive" in str(error):
        if torch.backends.mkldnn.enabled:
            torch.backends.mkldnn.enabled = False
            _logger.warning(
                "oneDNN could not create a primitive (out of memory?); the next trials of this "
                "process train with PyTorch's own CPU kernels"
            )
