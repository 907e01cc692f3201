from __future__ import annotations

from pathlib import Path

import pytest

from autoprune.config import (
    DEFAULT_CONFIG,
    Budget,
    apply_overrides,
    apply_values,
    config_from_dict,
    list_configs,
    load_config,
    parse_budget,
)
from autoprune.errors import ConfigError


@pytest.mark.parametrize(
    ("spec", "metric", "limit"),
    [
        ("2gflops", "macs", 2e9),
        ("2GFLOPs", "macs", 2e9),
        ("300mflops", "macs", 3e8),
        ("15ms", "latency_ms", 15.0),
        ("250us", "latency_ms", 0.25),
        ("5mj", "energy_mj", 5.0),
        ("800uJ", "energy_mj", 0.8),
        ("4mb", "size_bytes", 4e6),
        ("0.5MB", "size_bytes", 5e5),
        ("100kb", "size_bytes", 1e5),
        ("1.5mparams", "params", 1.5e6),
        ("200kparams", "params", 2e5),
    ],
)
def test_budget_grammar(spec: str, metric: str, limit: float) -> None:
    budget = parse_budget(spec)
    assert budget.metric == metric
    assert budget.limit == pytest.approx(limit)
    assert budget.spec == spec.lower()


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("2gflop", "unknown unit 'gflop'"),
        ("-1ms", "negative"),
        ("0ms", "positive"),
        ("fast", "not <number><unit>"),
        ("", "not <number><unit>"),
    ],
)
def test_bad_budgets_name_the_problem(spec: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment) as info:
        parse_budget(spec)
    assert "gflops" in str(info.value)  # the allowed units or an example are listed


def test_budget_violation_is_relative_and_nonpositive_when_met() -> None:
    budget = Budget(metric="macs", limit=100.0, spec="100mflops")
    assert budget.violation(50.0) == pytest.approx(-0.5)
    assert budget.violation(150.0) == pytest.approx(0.5)
    assert parse_budget("20mflops").describe(40.8e6) == "40.8 MFLOPs"


def test_default_config_loads_and_round_trips() -> None:
    config = load_config()
    assert DEFAULT_CONFIG.is_file()
    assert config.model.name == "resnet20"
    assert config.data.input_shape == (1, 28, 28)
    assert config.data.download is False and config.data.num_workers is None
    assert config.target == "jetson"
    assert config_from_dict(config.to_dict()) == config


def test_overrides_are_type_checked() -> None:
    config = load_config(
        overrides=[
            "search.trials=3",
            "training.lr=1",
            "budgets=[15ms, 4mb]",
            "space.width_ratios=[0.5, 1.0]",
        ]
    )
    assert config.search.trials == 3
    assert config.training.lr == 1.0 and isinstance(config.training.lr, float)
    assert [b.spec for b in config.budgets] == ["15ms", "4mb"]
    assert config.space.width_ratios == (0.5, 1.0)
    with pytest.raises(ConfigError, match="search.trials must be an int, but got 'abc'"):
        load_config(overrides=["search.trials=abc"])
    with pytest.raises(ConfigError, match="unknown key search.trial;.*trials"):
        load_config(overrides=["search.trial=3"])
    with pytest.raises(ConfigError, match="not KEY=VALUE"):
        apply_overrides({}, ["search.trials"])


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("model: {name: resnet20, colour: red}", "unknown key model.colour"),
        ("modle: {}", "unknown key modle"),
        ("training: {epochs: 0}", "training.epochs must be an int >= 1, but got 0"),
        ("training: {epochs: two}", "training.epochs must be an int, but got 'two'"),
        ("space: {width_ratios: [0, 1]}", "space.width_ratios"),
        ("space: {depth: 3}", "space.depth must be true or false"),
        ("data: {input_shape: [1, 28]}", "data.input_shape must be a list of 3 values"),
        ("data: {download: 1}", "data.download must be true or false, but got 1"),
        ("data: {num_workers: -1}", "data.num_workers must be an int >= 0"),
        ("data: {num_workers: 2.5}", "data.num_workers must be an int or null, but got 2.5"),
        ("budgets: [2gflop]", "unknown unit"),
        ("model: [1, 2]", "model must be a mapping"),
        ("model: {name: resnet20", "not valid YAML at line"),
    ],
)
def test_bad_config_files(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=fragment) as info:
        load_config(path)
    assert "\n" not in str(info.value)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_shipped_configs_load_by_name_and_an_unknown_name_lists_them() -> None:
    assert list_configs() == ["default", "resnet50-imagenet"]
    assert load_config("default") == load_config()
    assert load_config("resnet50-imagenet").model.name == "resnet50"
    with pytest.raises(ConfigError, match="shipped config \\(default, resnet50-imagenet\\)"):
        load_config("resnet56-cifar10")


def test_typed_values_are_set_as_they_are_after_the_overrides() -> None:
    config = load_config(
        overrides=["search.trials=3", "search.seed=1"],
        values={"search.trials": 5, "budgets": ["2gflops"], "search.timeout_s": 7.5},
    )
    assert config.search.trials == 5 and config.search.seed == 1  # values come last
    assert [b.spec for b in config.budgets] == ["2gflops"] and config.search.timeout_s == 7.5
    assert apply_values({}, {"target": "host"}) == {"target": "host"}
    with pytest.raises(ConfigError, match="search.trials must be an int, but got '5'"):
        load_config(values={"search.trials": "5"})  # a value is never parsed from text


def test_each_evaluator_has_its_own_settings_section() -> None:
    config = load_config(
        overrides=["evaluator=distill", "evaluator.distill.weight=0.5", "evaluator.scratch-b.cap=3"]
    )
    assert config.evaluator.name == "distill"
    assert config.evaluator.settings == {"distill": {"weight": 0.5}, "scratch-b": {"cap": 3}}
    assert config_from_dict(config.to_dict()) == config
    assert config_from_dict({"evaluator": "finetune"}).evaluator.name == "finetune"
    with pytest.raises(ConfigError, match=r"unknown key evaluator.weight.*evaluator.NAME.KEY"):
        load_config(overrides=["evaluator.weight=0.5"])
    with pytest.raises(ConfigError, match="evaluator.distill must be a mapping"):
        config_from_dict({"evaluator": {"name": "distill", "distill": 3}})


def test_evaluator_keys_of_older_run_directories_are_translated() -> None:
    old = {
        "name": "scratch-b",
        "scratch_b_cap": 3.0,
        "finetune_epochs": None,
        "finetune_lr": 0.01,
        "distill_temperature": 4.0,
        "distill_weight": 0.9,
        "proxy": "naswot",
    }
    settings = config_from_dict({"evaluator": old}).evaluator.settings
    assert settings == {
        "scratch-b": {"cap": 3.0},
        "finetune": {"epochs": None, "lr": 0.01},
        "distill": {"temperature": 4.0, "weight": 0.9},
        "proxy": {"proxy": "naswot"},
    }
