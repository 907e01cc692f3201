"""The shipped configs are valid, and their budgets bind (or not) as the README says."""

from __future__ import annotations

import pytest

from autoprune.config import CONFIG_DIR, load_config
from autoprune.hwprofiles import candidate_costs, load_profile
from autoprune.search import build_space, check_budgets


def test_default_budget_of_2gflops_does_not_bind() -> None:
    config = load_config(CONFIG_DIR / "default.yaml", overrides=["budgets=[2gflops]"])
    profile = load_profile(config.target)
    assert profile.name == "jetson-orin-nano"
    space = build_space(config, profile)
    notes = check_budgets(config, space, profile)
    assert len(notes) == 1 and "2gflops does not bind" in notes[0]


def test_resnet50_imagenet_budget_binds() -> None:
    config = load_config(CONFIG_DIR / "resnet50-imagenet.yaml")
    profile = load_profile(config.target)
    space = build_space(config, profile)
    assert check_budgets(config, space, profile) == []  # 2 GFLOPs binds: no "does not bind"
    largest = candidate_costs(space.largest(), profile)
    assert largest["macs"] == pytest.approx(4.09e9, rel=0.01)
    assert candidate_costs(space.smallest(), profile)["macs"] < 2e9
