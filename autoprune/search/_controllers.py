"""Search controllers: a name-keyed registry of Optuna samplers.

A controller is a factory ``(seed, population_size) -> BaseSampler``. Samplers read the
immutable trial history from the study storage, so resuming a run and running several workers
come free. Budgets reach the sampler as the trials' Optuna constraints, never as weights in the
objectives: one value per budget, in the run's budget order, in the trial's system attribute
``constraints`` (Optuna 4's list, which Optuna 5 reads as constraints ``"0"``, ``"1"``, ...; see
:func:`~autoprune.search._objective.set_constraints`). A trial is feasible when every value is
``<= 0``; a sampler needs no more than ``trial.constraints.values()``.

Example:
    >>> sampler = create_sampler("nsga2", seed=0, population_size=8)
    >>> list_controllers()
    ['gp', 'nsga2', 'nsga3', 'random', 'rl', 'tpe']
"""

from __future__ import annotations

from collections.abc import Callable

import optuna

from autoprune.errors import UnknownNameError

__all__ = [
    "check_controller",
    "create_sampler",
    "describe_controller",
    "list_controllers",
    "register_controller",
]

_SamplerFactory = Callable[..., optuna.samplers.BaseSampler]
_CONTROLLERS: dict[str, _SamplerFactory] = {}


def register_controller(name: str) -> Callable[[_SamplerFactory], _SamplerFactory]:
    """Register a sampler factory under ``name`` (the string used in YAML and ``--controller``).

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
    """Build the sampler registered as ``name``; an unknown name lists the valid ones."""
    check_controller(name)
    return _CONTROLLERS[name](seed=seed, population_size=population_size)


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
