"""Multi-objective early stopping: the rule, the peers it reads, and a real trial stopped by it."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from autoprune.config import load_config
from autoprune.errors import ConfigError
from autoprune.search import RunDir, assemble
from autoprune.search._early_stopping import (
    DominanceStopper,
    EarlyStopped,
    Peer,
    peers_at,
)
from autoprune.search._schema import CURVE
from tests.conftest import write_config

CHEAP = {"latency_ms": 0.1, "energy_mj": 0.1}
DEAR = {"latency_ms": 10.0, "energy_mj": 10.0}


def finished(study: optuna.Study, *, accuracy: list[float], epochs: int, costs: dict) -> None:
    state = optuna.trial.TrialState.COMPLETE
    study.add_trial(
        optuna.trial.create_trial(
            state=state,
            values=[accuracy[-1], costs["latency_ms"], costs["energy_mj"]],
            user_attrs={CURVE.key: {"epochs": epochs, "accuracy": accuracy}, "costs": costs},
        )
    )


def test_only_a_cheaper_and_clearly_more_accurate_peer_stops_a_candidate() -> None:
    stopper = DominanceStopper(margin=0.05, min_trials=1)
    ahead = [Peer(number=4, accuracy=0.80, costs=CHEAP)]
    assert stopper.dominating(ahead, accuracy=0.70, costs=DEAR) == 4
    assert stopper.dominating(ahead, accuracy=0.76, costs=DEAR) is None  # within the margin
    assert stopper.dominating(ahead, accuracy=0.50, costs=CHEAP) == 4  # equal costs count
    mixed = {"latency_ms": 0.05, "energy_mj": 10.0}  # faster, though dearer in energy
    assert stopper.dominating(ahead, accuracy=0.10, costs=mixed) is None
    assert (
        DominanceStopper(margin=0.05, min_trials=2).dominating(ahead, accuracy=0.1, costs=DEAR)
        is None
    )


def test_peers_compare_at_the_same_epoch_of_a_schedule_at_least_as_long() -> None:
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    finished(study, accuracy=[0.5, 0.7], epochs=3, costs=CHEAP)
    finished(study, accuracy=[0.6], epochs=2, costs=CHEAP)  # a shorter schedule: more annealed
    finished(study, accuracy=[0.4], epochs=3, costs=DEAR)  # reached epoch 1 only
    finished(study, accuracy=[0.3, 0.55, 0.65], epochs=3.5, costs=CHEAP)  # Scratch-B: longer
    at_two = peers_at(study, epoch=2, epochs=3, exclude=-1)
    assert [(p.number, p.accuracy) for p in at_two] == [(0, 0.7), (3, 0.55)]
    at_one = peers_at(study, epoch=1, epochs=3, exclude=2)
    assert [(p.number, p.accuracy) for p in at_one] == [(0, 0.5), (3, 0.3)]
    assert [p.number for p in peers_at(study, epoch=1, epochs=1.5, exclude=-1)] == [0, 1, 2, 3]


def smallest_beside(tmp_path: Path, peer_costs: dict) -> optuna.trial.FrozenTrial:
    """The space's smallest candidate, trained 2 epochs under the dominance rule (margin 0, one
    peer needed) in a study holding one peer: perfect after epoch 1, at ``peer_costs``."""
    config = load_config(
        write_config(
            tmp_path,
            training={"epochs": 2},
            search={
                "early_stopping": "dominated",
                "early_stopping_margin": 0.0,
                "early_stopping_min_trials": 1,
            },
        )
    )
    run = RunDir(tmp_path / "run")
    objective = assemble(config, run=run).objective(run)
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    finished(study, accuracy=[1.0], epochs=2, costs=peer_costs)
    study.enqueue_trial({d.name: min(d.choices) for d in objective.space.decisions})
    study.optimize(objective, n_trials=1)
    return study.trials[-1]


def test_a_dominated_candidate_is_pruned_after_its_first_epoch(tmp_path: Path) -> None:
    # A peer that was free and perfect after one epoch of two dominates every candidate.
    trial = smallest_beside(tmp_path, {"latency_ms": 0.0, "energy_mj": 0.0})
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert trial.user_attrs["stopped_early"] == {"epoch": 1, "epochs": 2, "by": 0}
    assert 0.0 <= trial.user_attrs["accuracy"] <= 1.0
    assert trial.user_attrs[CURVE.key] == {"epochs": 2, "accuracy": [trial.user_attrs["accuracy"]]}
    assert "error" not in trial.user_attrs


def test_an_undominated_candidate_trains_to_the_end_and_keeps_its_curve(tmp_path: Path) -> None:
    # A peer dearer than anything dominates nothing.
    trial = smallest_beside(tmp_path, {"latency_ms": 1e9, "energy_mj": 1e9})
    assert trial.state == optuna.trial.TrialState.COMPLETE
    curve = trial.user_attrs[CURVE.key]
    assert curve["epochs"] == 2 and len(curve["accuracy"]) == 1


def test_early_stopping_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="search.early_stopping must be none, or dominated"):
        load_config(overrides=["search.early_stopping=median"])
    with pytest.raises(ConfigError, match="search.early_stopping_margin must be"):
        load_config(overrides=["search.early_stopping_margin=2"])


def test_the_stop_says_why() -> None:
    stop = EarlyStopped(epoch=1, epochs=3, accuracy=0.5, by=7)
    assert "epoch 1 of 3" in str(stop) and "trial 7" in str(stop)
