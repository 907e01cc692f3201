"""The ``rl`` controller: a weight-conditioned categorical policy trained with REINFORCE.

The policy (Williams 1992; used for architecture search by Zoph & Le 2017 and MnasNet, Tan et
al. 2019) holds, for every categorical decision ``d`` with ``C_d`` choices, a bias ``b_d``
(``C_d``) and a matrix ``M_d`` (``C_d x k``), ``k`` being the number of minimised objectives.
Each trial draws its own objective weights ``omega`` (one per minimised objective, uniform in
``weight_range``, default ``[-1, 0]``) and samples every decision independently from

    ``pi_d = softmax(b_d + M_d @ phi(omega))``,  ``phi(omega) = 2 (omega - lo) / (hi - lo) - 1``

(``phi = 0`` when ``lo == hi``), so that one policy covers the whole Pareto front.

Reward of a finished trial: :func:`tchebycheff_reward` of the costs' ranks (the default) or
:func:`mnas_reward` (``scalarisation="weighted-log"``), both in :mod:`._rewards`. A trial
whose constraints hold any value ``> 0``, a failed trial and a complete trial with a
non-finite value get ``infeasible_reward`` (default ``-5.0``), which steers the policy toward
feasible candidates. Pruned trials and trials the policy did not propose (no weights recorded)
are skipped; running and waiting trials wait until they finish.

Update, one REINFORCE step per finished trial, in trial-number order: the baseline is linear in
the weights, ``B(omega) = c . [1, phi]``, updated by least mean squares with step
``baseline_step``; the advantage ``R - B`` is divided by the root of a moving average of its
square and clipped to ``[-advantage_clip, advantage_clip]``; the logits then move by
``learning_rate * (A * (onehot - pi) + entropy_weight * dH/dlogits)``, ``M_d`` by the same
times ``phi``.

State: the policy, the baseline, the advantage scale and the numbers of the trials learned from
(and skipped) are a JSON document in the study's system attribute :data:`RL_STATE_KEY`, written
after every update; each trial's weights are in its system attribute :data:`RL_WEIGHTS_KEY`.
``before_trial`` reloads the state from the storage and learns from every finished trial not in
it, so a resumed run and several workers sharing a study continue from the same policy.
Proposals come from random streams seeded by ``(seed, proposal index, parameter name)``
(:func:`~autoprune.search._controllers.proposal_index`): the run is a deterministic function
of the seed and the history, resumed or not; an interrupted trial is no episode, its re-run
is. Two processes that update at the same time may each overwrite the other's step (the last
write wins); threads of one process take turns. Design and benchmark figures:
``docs/controllers.md``.

Example:
    >>> import optuna
    >>> sampler = PolicyGradientSampler(seed=0)
    >>> study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    >>> def objective(trial: optuna.Trial) -> tuple[float, float]:
    ...     width = trial.suggest_categorical("width", [8, 16, 32, 64])
    ...     return width / 64, width / 8
    >>> study.optimize(objective, n_trials=5)
    >>> len(sampler.load_state(study).learned)  # trial 4 is learned before the next trial
    4
"""

from __future__ import annotations

import logging
import math
import threading
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.study import Study, StudyDirection
from optuna.trial import FrozenTrial, TrialState

from autoprune.search import _schema as attrs
from autoprune.search._controllers import proposal_index, register_controller
from autoprune.search._optuna import (
    set_study_system_attr,
    set_trial_system_attr,
    study_key,
    study_system_attrs,
)
from autoprune.search._rewards import (
    SCALARISATIONS,
    _FeasibleHistory,
    mnas_reward,
    tchebycheff_reward,
)

__all__ = [
    "RL_STATE_KEY",
    "RL_WEIGHTS_KEY",
    "PolicyGradientSampler",
    "PolicyState",
    # defined in _rewards, still importable from here:
    "SCALARISATIONS",
    "mnas_reward",
    "tchebycheff_reward",
]

_logger = logging.getLogger("autoprune.search")

#: Study system attribute holding the policy state (a JSON document, see :class:`PolicyState`).
RL_STATE_KEY = "autoprune.rl:state"
#: Trial system attribute holding the trial's objective weights (one per minimised objective).
RL_WEIGHTS_KEY = "autoprune.rl:weights"

_STATE_VERSION = 1
#: Floor of the advantage scale, so that a run of equal rewards does not divide by zero.
_MIN_SCALE = 1e-8


@dataclass
class PolicyState:
    """Everything the policy has learned; stored as JSON under :data:`RL_STATE_KEY`.

    ``bias[name]`` holds the ``C`` logits of a decision at ``phi = 0``; ``weight[name]`` its
    ``C x k`` response to the rescaled objective weights. ``baseline`` holds the ``1 + k``
    coefficients of the linear reward baseline, ``advantage_sq`` the moving average of the
    squared advantage. ``learned`` are the trial numbers that gave a policy-gradient step,
    ``skipped`` those finished trials that gave none (pruned, or not proposed by the policy).

    Example:
        >>> state = PolicyState(n_weights=2)
        >>> PolicyState.from_json(state.to_json()).n_weights
        2
    """

    n_weights: int
    bias: dict[str, np.ndarray] = field(default_factory=dict)
    weight: dict[str, np.ndarray] = field(default_factory=dict)
    baseline: np.ndarray | None = None
    advantage_sq: float = 0.0
    learned: set[int] = field(default_factory=set)
    skipped: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        if self.baseline is None:
            self.baseline = np.zeros(1 + self.n_weights)

    def logits(self, name: str, n_choices: int, phi: np.ndarray) -> np.ndarray:
        """Logits of decision ``name`` under the rescaled weights ``phi`` (zeros when new)."""
        self._ensure(name, n_choices)
        return self.bias[name] + self.weight[name] @ phi

    def _ensure(self, name: str, n_choices: int) -> None:
        if name in self.bias and self.bias[name].shape == (n_choices,):
            return
        if name in self.bias:
            _logger.warning(
                "rl: decision %r now has %d choices instead of %d; its policy starts afresh",
                name,
                n_choices,
                self.bias[name].shape[0],
            )
        self.bias[name] = np.zeros(n_choices)
        self.weight[name] = np.zeros((n_choices, self.n_weights))

    def to_json(self) -> dict[str, Any]:
        """The state as JSON-ready built-ins."""
        assert self.baseline is not None
        return {
            "version": _STATE_VERSION,
            "n_weights": self.n_weights,
            "decisions": {
                name: {"bias": self.bias[name].tolist(), "weight": self.weight[name].tolist()}
                for name in sorted(self.bias)
            },
            "baseline": self.baseline.tolist(),
            "advantage_sq": self.advantage_sq,
            "learned": sorted(self.learned),
            "skipped": sorted(self.skipped),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PolicyState:
        """Inverse of :meth:`to_json`."""
        k = int(data["n_weights"])
        decisions = data["decisions"]
        return cls(
            n_weights=k,
            bias={name: np.asarray(d["bias"], dtype=float) for name, d in decisions.items()},
            weight={
                name: np.asarray(d["weight"], dtype=float).reshape(len(d["bias"]), k)
                for name, d in decisions.items()
            },
            baseline=np.asarray(data["baseline"], dtype=float),
            advantage_sq=float(data["advantage_sq"]),
            learned={int(n) for n in data["learned"]},
            skipped={int(n) for n in data["skipped"]},
        )


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max())
    return z / z.sum()


class PolicyGradientSampler(optuna.samplers.BaseSampler):
    """REINFORCE over categorical decisions with a weight-conditioned policy (see the module).

    Call order: ``before_trial`` loads the policy from the study, learns from the finished
    trials it has not seen, saves it and draws this trial's objective weights;
    ``sample_independent`` then samples each categorical parameter from the policy under those
    weights. Non-categorical parameters come from :class:`optuna.samplers.RandomSampler`
    seeded per trial and parameter.

    Args:
        seed: Seed of every random stream (``None``: drawn once, the run is not reproducible).
        learning_rate: Step of the policy logits per unit of normalised advantage.
        entropy_weight: Weight of the entropy bonus, which keeps the policy exploring.
        baseline_step: Step of the linear reward baseline (EMA decay is ``1 - step``).
        advantage_clip: Bound of the normalised advantage.
        infeasible_reward: Reward of an infeasible, failed or non-finite trial.
        weight_range: ``(lo, hi)``, ``lo <= hi <= 0``: range of each minimised objective's
            weight, drawn uniformly per trial (MnasNet's fixed ``w = -0.07`` is ``(-0.07,
            -0.07)``).
        scalarisation: How the minimised objectives enter the reward: ``"tchebycheff"``
            (:func:`tchebycheff_reward`) or ``"weighted-log"`` (:func:`mnas_reward`).
    """

    #: The policy-gradient step needs the actions this sampler drew, so a proposal over an exact
    #: budget is repaired in the objective, never in the sampler (``autoprune.search._repair``).
    learns_from_own_proposals = True

    def __init__(
        self,
        *,
        seed: int | None = None,
        learning_rate: float = 0.3,
        entropy_weight: float = 0.01,
        baseline_step: float = 0.1,
        advantage_clip: float = 2.0,
        infeasible_reward: float = -5.0,
        weight_range: tuple[float, float] = (-1.0, 0.0),
        scalarisation: str = "tchebycheff",
    ) -> None:
        if scalarisation not in SCALARISATIONS:
            raise ValueError(
                f"scalarisation must be one of {SCALARISATIONS}, got {scalarisation!r}"
            )
        lo, hi = weight_range
        if not lo <= hi <= 0:
            raise ValueError(f"`lo <= hi <= 0` must hold, but got {weight_range=}")
        if not 0 < baseline_step <= 1:
            raise ValueError(f"`0 < baseline_step <= 1` must hold, but got {baseline_step=}")
        if learning_rate <= 0 or entropy_weight < 0 or advantage_clip <= 0:
            raise ValueError(
                "learning_rate and advantage_clip must be > 0 and entropy_weight >= 0, but got "
                f"{learning_rate=}, {entropy_weight=}, {advantage_clip=}"
            )
        if not math.isfinite(infeasible_reward):
            raise ValueError(f"infeasible_reward must be finite, but got {infeasible_reward=}")
        self._seed = int(np.random.SeedSequence().entropy % 2**32) if seed is None else seed
        self._learning_rate = learning_rate
        self._entropy_weight = entropy_weight
        self._baseline_step = baseline_step
        self._advantage_clip = advantage_clip
        self._infeasible_reward = infeasible_reward
        self._weight_range = (float(lo), float(hi))
        self._scalarisation = scalarisation
        self._lock = threading.Lock()
        self._cache: tuple[tuple[int, int], PolicyState] | None = None
        self._indices: dict[int, int] = {}  # trial number -> proposal_index, from before_trial

    def __getstate__(self) -> dict[str, Any]:  # Ray Tune pickles its searcher's sampler
        return {k: v for k, v in self.__dict__.items() if k not in ("_lock", "_cache", "_indices")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _lock=threading.Lock(), _cache=None, _indices={})

    # ---- the sampler interface ------------------------------------------------------------

    def infer_relative_search_space(
        self, study: Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return {}  # decisions are sampled one by one: the policy factorises over them

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return {}

    def reseed_rng(self) -> None:
        pass  # proposals are seeded by proposal index: parallel threads already differ

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        with self._lock:
            state = self.load_state(study)
            if self._learn(study, state):
                set_study_system_attr(study, RL_STATE_KEY, state.to_json())
            self._cache = (study_key(study), state)
        index = proposal_index(study, trial)
        with self._lock:
            self._indices[trial.number] = index
        weights = self._draw_weights(index, state.n_weights)
        set_trial_system_attr(study, trial, RL_WEIGHTS_KEY, weights.tolist())

    def sample_independent(
        self,
        study: Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        with self._lock:
            index = self._indices.get(trial.number)
        if index is None:  # before_trial ran in another process (a Ray worker's study)
            index = proposal_index(study, trial)
        rng_seed = [self._seed, index, zlib.crc32(param_name.encode())]
        if not isinstance(param_distribution, CategoricalDistribution):
            fallback_seed = int(np.random.SeedSequence(rng_seed).generate_state(1)[0])
            fallback = optuna.samplers.RandomSampler(seed=fallback_seed)
            return fallback.sample_independent(study, trial, param_name, param_distribution)
        with self._lock:
            cache = self._cache
            if cache is None or cache[0] != study_key(study):
                cache = (study_key(study), self.load_state(study))
                self._cache = cache
            state = cache[1]
            # The weights before_trial stored for this trial, recomputed: no storage read.
            phi = self._features(self._draw_weights(index, state.n_weights))
            probs = _softmax(state.logits(param_name, len(param_distribution.choices), phi))
        index = int(np.random.default_rng(rng_seed).choice(len(probs), p=probs))
        return param_distribution.choices[index]

    # ---- state ----------------------------------------------------------------------------

    def load_state(self, study: Study) -> PolicyState:
        """The policy as last saved in ``study`` (a fresh one if none was saved yet)."""
        k = sum(d == StudyDirection.MINIMIZE for d in study.directions)
        data = study_system_attrs(study).get(RL_STATE_KEY)
        if data is None:
            return PolicyState(n_weights=k)
        if data.get("version") != _STATE_VERSION or data.get("n_weights") != k:
            _logger.warning(
                "rl: ignoring a saved policy of version %s with %s weights (expected version %d "
                "with %d weights); learning starts afresh",
                data.get("version"),
                data.get("n_weights"),
                _STATE_VERSION,
                k,
            )
            return PolicyState(n_weights=k)
        return PolicyState.from_json(data)

    def probabilities(self, study: Study, weights: Sequence[float]) -> dict[str, np.ndarray]:
        """Choice probabilities of every decision seen so far, under the objective ``weights``.

        ``weights`` holds one weight per minimised objective, as drawn for a trial; the arrays
        follow the order of each decision's ``choices``.
        """
        state = self.load_state(study)
        if len(weights) != state.n_weights:
            raise ValueError(
                f"one weight per minimised objective ({state.n_weights}) must be given, but got "
                f"{weights=}"
            )
        phi = self._features(np.asarray(weights, dtype=float))
        return {
            name: _softmax(state.logits(name, len(bias), phi))
            for name, bias in sorted(state.bias.items())
        }

    # ---- learning -------------------------------------------------------------------------

    def _learn(self, study: Study, state: PolicyState) -> bool:
        """Apply one step per finished trial not yet in ``state``; whether anything changed."""
        trials = study.get_trials(deepcopy=False)
        pending = sorted(
            (
                t
                for t in trials
                if t.state.is_finished()
                and t.number not in state.learned
                and t.number not in state.skipped
            ),
            key=lambda t: t.number,
        )
        if not pending:
            return False
        history = _FeasibleHistory(trials, study.directions)
        for trial in pending:
            if self._step(state, trial, study.directions, history):
                state.learned.add(trial.number)
            else:
                state.skipped.add(trial.number)
        _logger.debug(
            "rl: learned from %d trials (%d in all, %d skipped)",
            len(pending),
            len(state.learned),
            len(state.skipped),
        )
        return True

    def _step(
        self,
        state: PolicyState,
        trial: FrozenTrial,
        directions: Sequence[StudyDirection],
        history: _FeasibleHistory,
    ) -> bool:
        """One REINFORCE step from ``trial``; ``False`` if it gives none."""
        if trial.state not in (TrialState.COMPLETE, TrialState.FAIL):
            return False  # pruned: no final values to score
        if attrs.INTERRUPTED.get(trial):
            return False  # killed or stopped, not failed: its re-run is the episode
        weights = trial.system_attrs.get(RL_WEIGHTS_KEY)
        if weights is None or len(weights) != state.n_weights:
            return False  # not proposed by this policy (another sampler, or another study)
        # A re-run of an interrupted trial replays this policy's proposal (and its weights).
        retried = attrs.RETRY_OF.get(trial) is not None
        fixed = {} if retried else trial.system_attrs.get("fixed_params", {})
        actions = [
            (name, len(dist.choices), dist.to_internal_repr(trial.params[name]))
            for name, dist in sorted(trial.distributions.items())
            if isinstance(dist, CategoricalDistribution)
            and len(dist.choices) > 1
            and name not in fixed
        ]
        if not actions:
            return False
        omega = np.asarray(weights, dtype=float)
        reward = self._reward(trial, omega, directions, history)

        assert state.baseline is not None
        phi = self._features(omega)
        x = np.concatenate(([1.0], phi))
        if not state.learned:  # first episode: the baseline starts at its reward, no step
            state.baseline = np.zeros_like(x)
            state.baseline[0] = reward
            return True
        advantage = reward - float(state.baseline @ x)
        state.baseline = state.baseline + self._baseline_step * advantage * x
        state.advantage_sq += self._baseline_step * (advantage**2 - state.advantage_sq)
        scale = max(math.sqrt(state.advantage_sq), _MIN_SCALE)
        normalised = float(np.clip(advantage / scale, -self._advantage_clip, self._advantage_clip))
        for name, n_choices, index in actions:
            probs = _softmax(state.logits(name, n_choices, phi))
            score = -probs
            score[index] += 1.0  # d log pi(a) / d logits
            log_probs = np.log(np.maximum(probs, 1e-12))
            entropy_grad = -probs * (log_probs - float(probs @ log_probs))  # d H / d logits
            step = self._learning_rate * (normalised * score + self._entropy_weight * entropy_grad)
            state.bias[name] = state.bias[name] + step
            state.weight[name] = state.weight[name] + np.outer(step, phi)
        return True

    def _reward(
        self,
        trial: FrozenTrial,
        omega: np.ndarray,
        directions: Sequence[StudyDirection],
        history: _FeasibleHistory,
    ) -> float:
        values = trial.values
        if (
            trial.state != TrialState.COMPLETE
            or values is None
            or not all(math.isfinite(v) for v in values)
            or any(c > 0 for c in trial.constraints.values())
        ):
            return self._infeasible_reward
        if self._scalarisation == "tchebycheff":
            # Each cost on its rank scale, whose range is [0, 1] (see ``docs/controllers.md``).
            ranks = iter(history.ranks(trial.number, values))
            ranked = [
                next(ranks) if d == StudyDirection.MINIMIZE else v
                for v, d in zip(values, directions, strict=True)
            ]
            unit = [(0.0, 1.0)] * len(omega)
            reward = tchebycheff_reward(ranked, directions, omega.tolist(), unit)
        else:
            references = history.references(trial.number)
            reward = mnas_reward(values, directions, omega.tolist(), references)
        return reward if math.isfinite(reward) else self._infeasible_reward

    def _draw_weights(self, number: int, n_weights: int) -> np.ndarray:
        lo, hi = self._weight_range
        return np.random.default_rng([self._seed, number]).uniform(lo, hi, size=n_weights)

    def _features(self, omega: np.ndarray) -> np.ndarray:
        lo, hi = self._weight_range
        if hi == lo:
            return np.zeros_like(omega)
        return 2.0 * (omega - lo) / (hi - lo) - 1.0


@register_controller("rl", seeds_each_trial=True)
def _rl(*, seed: int, population_size: int) -> optuna.samplers.BaseSampler:
    """REINFORCE (Williams 1992), weight-conditioned: log accuracy less max weighted cost rank."""
    del population_size  # one policy-gradient step per finished trial; no population
    return PolicyGradientSampler(seed=seed)
