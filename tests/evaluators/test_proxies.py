"""Zero-cost proxies on real zoo networks: what they rank, and that they leave models alone."""

from __future__ import annotations

import math

import torch

from autoprune.config import load_config
from autoprune.evaluators import log_synflow, naswot
from autoprune.hwprofiles import load_profile
from autoprune.search import build_space
from autoprune.spaces import build_model


def _space():
    config = load_config(overrides=["space.weight_bits=[32]", "space.activation_bits=[32]"])
    return build_space(config, load_profile("jetson"))


def test_synflow_ranks_the_base_above_its_narrowest_candidate_and_restores_the_model() -> None:
    space = _space()
    base, small = build_model(space.largest(), seed=0), build_model(space.smallest(), seed=0)
    before = {k: v.clone() for k, v in base.state_dict().items()}
    big_score = log_synflow(base, space.largest().input_shape)
    assert math.isfinite(big_score)
    assert big_score > log_synflow(small, space.smallest().input_shape)
    after = base.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert next(base.parameters()).dtype == torch.float32 and base.training


def test_synflow_is_deterministic_and_naswot_separates_random_inputs() -> None:
    space = _space()
    candidate = space.largest()
    model = build_model(candidate, seed=0)
    assert log_synflow(model, candidate.input_shape) == log_synflow(model, candidate.input_shape)
    inputs = torch.randn((16, *candidate.input_shape), generator=torch.Generator().manual_seed(0))
    score = naswot(model, inputs)
    assert math.isfinite(score)
    twins = torch.cat([inputs[:8], inputs[:8]])  # identical inputs: K is singular
    assert naswot(model, twins) == -math.inf
