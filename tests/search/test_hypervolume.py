"""Hypervolume: exact values against hand-computed and Monte Carlo ones, and its history."""

from __future__ import annotations

import numpy as np
import pytest

from autoprune.search import (
    HypervolumeReference,
    TrialRecord,
    first_reaching,
    hypervolume,
    hypervolume_history,
)


def test_single_point_box_and_dominated_points_add_nothing() -> None:
    assert hypervolume([(0.2, 0.5, 0.6)], (1.0, 1.0, 1.0)) == pytest.approx(0.8 * 0.5 * 0.4)
    with_dominated = [(0.2, 0.5, 0.6), (0.3, 0.6, 0.9), (0.2, 0.5, 0.6)]
    assert hypervolume(with_dominated, (1.0, 1.0, 1.0)) == pytest.approx(0.16)
    assert hypervolume([(1.2, 0.1, 0.1)], (1.0, 1.0, 1.0)) == 0.0  # outside the reference box
    assert hypervolume([], (1.0, 1.0)) == 0.0


@pytest.mark.parametrize("dimensions", [2, 3, 4])
def test_matches_monte_carlo(dimensions: int) -> None:
    rng = np.random.default_rng(dimensions)
    points = rng.uniform(0.1, 1.0, size=(25, dimensions))
    reference = np.ones(dimensions)
    samples = rng.uniform(0.0, 1.0, size=(200_000, dimensions))
    dominated = np.zeros(len(samples), dtype=bool)
    for point in points:
        dominated |= np.all(samples >= point, axis=1)
    estimate = dominated.mean()  # the reference box has volume 1
    exact = hypervolume(points.tolist(), reference.tolist())
    assert exact == pytest.approx(estimate, abs=4 * np.sqrt(estimate * (1 - estimate) / 200_000))


def _record(number: int, accuracy: float, latency: float, energy: float, **kw) -> TrialRecord:
    fields = dict(state="complete", feasible=True, trained=True)
    fields.update(kw)
    return TrialRecord(
        number=number, accuracy=accuracy, latency_ms=latency, energy_mj=energy, **fields
    )


def test_history_counts_only_feasible_trained_trials_and_never_falls() -> None:
    reference = HypervolumeReference.for_base(latency_ms=2.0, energy_mj=4.0)
    records = [
        _record(0, 0.90, 2.0, 4.0),  # the base: error 0.1, costs 1.0 -> adds 0.9 * 0.1 * 0.1
        _record(1, 0.99, 0.2, 0.4, feasible=False, trained=False),  # over budget: not counted
        TrialRecord(number=2, state="failed"),
        _record(3, 0.85, 1.0, 2.0),  # error 0.15 at half the costs
        _record(4, 0.80, 1.5, 3.0),  # dominated by trial 3: the volume stays
        TrialRecord(number=5, state="running"),  # left out
    ]
    history = hypervolume_history(records, reference)
    assert [n for n, _ in history] == [0, 1, 2, 3, 4]
    expected_0 = 0.9 * 0.1 * 0.1
    assert history[0][1] == pytest.approx(expected_0)
    assert history[1][1] == history[2][1] == history[0][1]
    expected_3 = hypervolume([(0.1, 1.0, 1.0), (0.15, 0.5, 0.5)], (1.0, 1.1, 1.1))
    assert history[3][1] == pytest.approx(expected_3) and expected_3 > expected_0
    assert history[4][1] == history[3][1]
    assert first_reaching(history, expected_3) == 4
    assert first_reaching(history, 1.0) is None


def test_reference_round_trips_and_rejects_bad_scales() -> None:
    reference = HypervolumeReference.for_base(latency_ms=0.3, energy_mj=0.01)
    assert HypervolumeReference.from_dict(reference.to_dict()) == reference
    with pytest.raises(ValueError, match="scales must be positive"):
        HypervolumeReference.for_base(latency_ms=0.0, energy_mj=1.0)
