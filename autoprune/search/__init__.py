"""Search: the run layer, the assembly of a run's parts, controllers, the loop and the front.

In data-flow order: :func:`assemble` turns a config into a run's parts (:class:`RunParts`:
profile, space, coster, evaluator, sampler, objective), checking everything before anything is
written; :class:`RunDir` owns a run directory (layout, lock, study, records); the controllers
are Optuna samplers in a registry (:func:`register_controller`); :func:`run_search` is the loop
(local, or Ray Tune trials); :class:`TrialRecord`, :func:`pareto_front` and the hypervolume
read the result. Optuna and Ray are imported only inside this subpackage.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

from autoprune.search._assembly import RunParts, assemble, build_space, check_budgets
from autoprune.search._controllers import (
    check_controller,
    create_sampler,
    describe_controller,
    list_controllers,
    register_controller,
)
from autoprune.search._hypervolume import (
    HypervolumeReference,
    first_reaching,
    hypervolume,
    hypervolume_history,
)
from autoprune.search._loop import SearchResult, evaluate_on_test, run_search
from autoprune.search._objective import (
    CandidateObjective,
    RecordedTrial,
    apply_recording,
    candidate_seed,
)
from autoprune.search._pareto import OBJECTIVES, dominates, pareto_front
from autoprune.search._records import TrialRecord
from autoprune.search._rl import PolicyGradientSampler, mnas_reward
from autoprune.search._rundir import RunDir

__all__ = [
    "OBJECTIVES",
    "CandidateObjective",
    "HypervolumeReference",
    "PolicyGradientSampler",
    "RecordedTrial",
    "RunDir",
    "RunParts",
    "SearchResult",
    "TrialRecord",
    "apply_recording",
    "assemble",
    "build_space",
    "candidate_seed",
    "check_budgets",
    "check_controller",
    "create_sampler",
    "describe_controller",
    "dominates",
    "evaluate_on_test",
    "first_reaching",
    "hypervolume",
    "hypervolume_history",
    "list_controllers",
    "mnas_reward",
    "pareto_front",
    "register_controller",
    "run_search",
]


class _CallableSearchPackage(types.ModuleType):
    """``autoprune.search`` is this subpackage; called, it is the Python API's
    :func:`autoprune.api.search` (importing this subpackage binds its name on ``autoprune``, so
    the function and the package must be one object)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        # Imported by name: the API sits above this layer and imports it.
        return importlib.import_module("autoprune.api").search(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableSearchPackage
