"""Search: controllers (Optuna samplers), the study loop, trial records and the Pareto front.

Optuna (and, later, Ray) are imported only inside this subpackage.
"""

from __future__ import annotations

from autoprune.search._controllers import (
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
from autoprune.search._objective import (
    CandidateObjective,
    candidate_costs,
    candidate_seed,
    load_run_dataset,
    model_costs,
    trial_dir,
)
from autoprune.search._pareto import OBJECTIVES, dominates, pareto_front
from autoprune.search._records import TrialRecord
from autoprune.search._rl import PolicyGradientSampler, mnas_reward
from autoprune.search._study import (
    SearchResult,
    build_coster,
    build_space,
    check_budgets,
    evaluate_on_test,
    load_hypervolume,
    load_records,
    prepare_run_dir,
    run_search,
)

__all__ = [
    "OBJECTIVES",
    "CandidateObjective",
    "HypervolumeReference",
    "PolicyGradientSampler",
    "SearchResult",
    "TrialRecord",
    "build_coster",
    "build_space",
    "candidate_costs",
    "candidate_seed",
    "check_budgets",
    "create_sampler",
    "describe_controller",
    "dominates",
    "evaluate_on_test",
    "first_reaching",
    "hypervolume",
    "hypervolume_history",
    "list_controllers",
    "load_hypervolume",
    "load_run_dataset",
    "load_records",
    "mnas_reward",
    "model_costs",
    "pareto_front",
    "prepare_run_dir",
    "register_controller",
    "run_search",
    "trial_dir",
]
