"""Search controllers: a name-keyed registry of Optuna samplers.

A controller is a factory ``(seed, population_size) -> BaseSampler``. Samplers read the
immutable trial history from the study storage, so resuming a run and running several workers
come free. Budgets reach the sampler as the trials' Optuna constraints, never as weights in the
objectives: one value per budget, in the run's budget order, in the trial's system attribute
``constraints`` (Optuna 4's list, which Optuna 5 reads as constraints ``"0"``, ``"1"``, ...; see
:func:`~autoprune.search._objective.set_constraints`). A trial is feasible when every value is
``<= 0``; a sampler needs no more than ``trial.constraints.values()``.

A seeded Optuna sampler draws from one random stream that starts over in each process, so a
resumed run would propose again what its first process proposed. :func:`create_sampler`
therefore builds the sampler afresh for each trial (:class:`PerTrialSeedSampler`), seeded from
the run's seed and the number of proposals before it: a run resumed after a crash proposes what
the uninterrupted run would have proposed from the same history.

Example:
    >>> sampler = create_sampler("nsga2", seed=0, population_size=8)
    >>> list_controllers()
    ['gp', 'nsga2', 'nsga3', 'random', 'rl', 'tpe']
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState

from autoprune.errors import UnknownNameError
from autoprune.search import _schema as attrs
from autoprune.search._optuna import set_trial_system_attr

__all__ = [
    "check_controller",
    "create_sampler",
    "describe_controller",
    "list_controllers",
    "PerTrialSeedSampler",
    "proposal_index",
    "register_controller",
]

_SamplerFactory = Callable[..., optuna.samplers.BaseSampler]
_CONTROLLERS: dict[str, _SamplerFactory] = {}
#: Controllers whose samplers seed each trial's draws themselves (never rebuilt per trial).
_SEEDS_EACH_TRIAL: set[str] = set()


def register_controller(
    name: str, *, seeds_each_trial: bool = False
) -> Callable[[_SamplerFactory], _SamplerFactory]:
    """Register a sampler factory under ``name`` (the string used in YAML and ``--controller``).

    ``seeds_each_trial``: the sampler derives each trial's random draws from its seed and the
    trial itself, so it need not be rebuilt per trial (:class:`PerTrialSeedSampler`).

    Registering the same factory (same module and qualified name) again replaces it silently:
    pytest's importlib import mode executes a doctested module a second time. Another factory
    under a taken name is an error.
    """

    def decorator(factory: _SamplerFactory) -> _SamplerFactory:
        known = _CONTROLLERS.get(name)
        assert known is None or _qualified(known) == _qualified(factory), (
            f"controller {name!r} registered twice"
        )
        _CONTROLLERS[name] = factory
        if seeds_each_trial:
            _SEEDS_EACH_TRIAL.add(name)
        return factory

    return decorator


def _qualified(factory: _SamplerFactory) -> tuple[str, str]:
    return factory.__module__, factory.__qualname__


def list_controllers() -> list[str]:
    """Names of the registered controllers, sorted."""
    return sorted(_CONTROLLERS)


def describe_controller(name: str) -> str:
    """First line of the controller's docstring (for ``autoprune search --help``)."""
    if name not in _CONTROLLERS:
        raise UnknownNameError("controller", name, list_controllers())
    return (_CONTROLLERS[name].__doc__ or name).strip().splitlines()[0]


def check_controller(name: str) -> None:
    """Raise :class:`UnknownNameError`, listing the valid names, unless ``name`` is registered."""
    if name not in _CONTROLLERS:
        raise UnknownNameError("controller", name, list_controllers())


def create_sampler(
    name: str,
    *,
    seed: int,
    population_size: int,
) -> optuna.samplers.BaseSampler:
    """Build the sampler registered as ``name``; an unknown name lists the valid ones.

    Unless the controller seeds each trial itself, the sampler is a
    :class:`PerTrialSeedSampler` around the registered factory.
    """
    check_controller(name)
    factory = _CONTROLLERS[name]
    if name in _SEEDS_EACH_TRIAL:
        return factory(seed=seed, population_size=population_size)
    return PerTrialSeedSampler(factory, seed=seed, population_size=population_size)


def proposal_index(study: Study, trial: FrozenTrial) -> int:
    """How many proposals the controller made before ``trial``: the same with or without a
    resume in between.

    Counted are earlier trials with parameters that were not enqueued (the base model and the
    re-run of an interrupted trial are); the re-run of an interrupted trial has the index of
    the trial it re-runs.
    """
    trials = study.get_trials(deepcopy=False)
    retry_of = attrs.RETRY_OF.get(trial)
    if retry_of is not None:
        original = next((t for t in trials if t.number == retry_of), None)
        if original is not None:
            return proposal_index(study, original)
    return sum(
        1
        for t in trials
        if t.number < trial.number and t.params and "fixed_params" not in t.system_attrs
    )


class PerTrialSeedSampler(optuna.samplers.BaseSampler):
    """A controller's sampler built afresh for each trial, with a seed of that trial's own.

    Trial ``k`` (``k`` proposals came before it: finished or failed trials with parameters
    that the controller proposed, not enqueued ones such as the base model or the re-run of an
    interrupted trial) gets ``factory(seed=s_k)``, ``s_k`` drawn from ``(seed, k)``. Optuna's
    samplers read everything else from the study, so the proposal depends only on the seed and
    the history: the same after a resume as without one.

    Args:
        factory: The registered factory, ``(seed, population_size) -> BaseSampler``.
        seed: The run's seed.
        population_size: Passed to the factory.
    """

    def __init__(self, factory: _SamplerFactory, *, seed: int, population_size: int) -> None:
        self._factory = factory
        self._seed = seed
        self._population_size = population_size
        self._lock = threading.Lock()
        self._by_trial: dict[int, optuna.samplers.BaseSampler] = {}
        template = factory(seed=seed, population_size=population_size)
        self.learns_from_own_proposals = getattr(template, "learns_from_own_proposals", False)

    def __getstate__(self) -> dict[str, Any]:  # Ray Tune pickles its searcher's sampler
        return {k: v for k, v in self.__dict__.items() if k not in ("_lock", "_by_trial")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _lock=threading.Lock(), _by_trial={})

    def trial_seed(self, study: Study, trial: FrozenTrial) -> int:
        """The seed of ``trial``'s sampler: from the run's seed and :func:`proposal_index`."""
        index = proposal_index(study, trial)
        return int(np.random.SeedSequence([self._seed, index]).generate_state(1)[0])

    def _sampler(self, study: Study, trial: FrozenTrial) -> optuna.samplers.BaseSampler:
        with self._lock:
            sampler = self._by_trial.get(trial.number)
            if sampler is None:
                seed = self.trial_seed(study, trial)
                sampler = self._factory(seed=seed, population_size=self._population_size)
                self._by_trial[trial.number] = sampler
            return sampler

    def infer_relative_search_space(
        self, study: Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return self._sampler(study, trial).infer_relative_search_space(study, trial)

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return self._sampler(study, trial).sample_relative(study, trial, search_space)

    def sample_independent(
        self,
        study: Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        sampler = self._sampler(study, trial)
        return sampler.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        retry_of = attrs.RETRY_OF.get(trial)
        if retry_of is not None:
            _inherit_bookkeeping(study, trial, retry_of)
        self._sampler(study, trial).before_trial(study, trial)

    def after_trial(
        self,
        study: Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        self._sampler(study, trial).after_trial(study, trial, state, values)
        with self._lock:
            self._by_trial.pop(trial.number, None)

    def reseed_rng(self) -> None:
        pass  # each trial's sampler is seeded from the run's seed and the history


@register_controller("nsga2")
def _nsga2(*, seed: int, population_size: int) -> optuna.samplers.BaseSampler:
    """NSGA-II (Deb et al. 2002) with constrained domination for the budgets."""
    return optuna.samplers.NSGAIISampler(population_size=population_size, seed=seed)


@register_controller("nsga3")
def _nsga3(*, seed: int, population_size: int) -> optuna.samplers.BaseSampler:
    """NSGA-III (Deb & Jain 2014): reference-point niching, for three or more objectives."""
    return optuna.samplers.NSGAIIISampler(population_size=population_size, seed=seed)


@register_controller("tpe")
def _tpe(*, seed: int, population_size: int) -> optuna.samplers.BaseSampler:
    """Multivariate TPE (Bergstra et al. 2011; Ozaki et al. 2020 for several objectives)."""
    # population_size random trials first, as the evolutionary controllers' first generation;
    # constant liar keeps parallel workers from proposing the same candidate.
    return optuna.samplers.TPESampler(
        n_startup_trials=population_size, multivariate=True, constant_liar=True, seed=seed
    )


@register_controller("gp")
def _gp(*, seed: int, population_size: int) -> optuna.samplers.BaseSampler:
    """Gaussian-process Bayesian optimisation (Optuna's GPSampler, log EHVI for fronts)."""
    return optuna.samplers.GPSampler(n_startup_trials=population_size, seed=seed)


@register_controller("random")
def _random(*, seed: int, population_size: int) -> optuna.samplers.BaseSampler:
    """Uniform random proposals: the floor every other controller must beat."""
    del population_size  # random search keeps no population
    return optuna.samplers.RandomSampler(seed=seed)


def _inherit_bookkeeping(study: Study, trial: FrozenTrial, number: int) -> None:
    """Give the re-run of interrupted trial ``number`` the sampler's records of that trial.

    An enqueued trial gets none (NSGA-II's generation, for one), so without them the re-run
    would count toward no generation and every later proposal would differ from the
    uninterrupted run's.
    """
    original = next((t for t in study.get_trials(deepcopy=False) if t.number == number), None)
    if original is None:
        return
    for key, value in original.system_attrs.items():
        if key not in ("fixed_params", "constraints") and key not in trial.system_attrs:
            set_trial_system_attr(study, trial, key, value)
