"""Run configuration: YAML and CLI values -> frozen dataclasses, validated at the boundary.

A config has seven sections (``model``, ``data``, ``space``, ``training``, ``evaluator``,
``search``, ``hardware``) plus the ``target`` device and the ``budgets``
(:mod:`._sections`); files, ``--set`` overrides and typed values are read by :mod:`._load`;
budget strings (``"2gflops"``, ``"15ms"``) are parsed once, by :mod:`._budget`, into
:class:`Budget` records with units in their metric names.

Example:
    >>> cfg = load_config(overrides=["search.trials=4"])  # the embedded default
    >>> cfg.search.trials
    4
    >>> parse_budget("15ms").limit
    15.0
"""

from __future__ import annotations

from autoprune.config._budget import BUDGET_UNITS, Budget, parse_budget
from autoprune.config._load import (
    CONFIG_DIR,
    DEFAULT_CONFIG,
    apply_overrides,
    apply_values,
    config_from_dict,
    list_configs,
    load_config,
    parse_settings,
)
from autoprune.config._sections import (
    EARLY_STOPPING,
    ESTIMATORS,
    LATENCY_MODES,
    SECTIONS,
    Config,
    DataConfig,
    EvaluatorConfig,
    HardwareConfig,
    ModelConfig,
    SearchConfig,
    SpaceConfig,
    TrainingConfig,
    check_latency_mode,
    require,
)

__all__ = [
    "BUDGET_UNITS",
    "CONFIG_DIR",
    "DEFAULT_CONFIG",
    "EARLY_STOPPING",
    "ESTIMATORS",
    "LATENCY_MODES",
    "SECTIONS",
    "Budget",
    "Config",
    "DataConfig",
    "EvaluatorConfig",
    "HardwareConfig",
    "ModelConfig",
    "SearchConfig",
    "SpaceConfig",
    "TrainingConfig",
    "apply_overrides",
    "apply_values",
    "check_latency_mode",
    "config_from_dict",
    "list_configs",
    "load_config",
    "parse_budget",
    "parse_settings",
    "require",
]
