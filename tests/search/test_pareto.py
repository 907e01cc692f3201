from __future__ import annotations

from autoprune.search import TrialRecord, dominates, pareto_front


def record(
    number: int,
    accuracy: float,
    latency: float,
    energy: float,
    *,
    feasible: bool = True,
    trained: bool = True,
    state: str = "complete",
    candidate_hash: str | None = None,
) -> TrialRecord:
    return TrialRecord(
        number=number,
        state=state,
        candidate_hash=candidate_hash or f"h{number}",
        feasible=feasible,
        trained=trained,
        accuracy=accuracy if trained else None,
        latency_ms=latency,
        energy_mj=energy,
    )


def test_dominates() -> None:
    assert dominates((1, 1), (1, 2))
    assert not dominates((1, 2), (1, 2))
    assert not dominates((0, 3), (1, 2))


def test_front_keeps_only_non_dominated_feasible_trained_trials() -> None:
    records = [
        record(0, 0.90, 2.0, 2.0),
        record(1, 0.85, 1.0, 1.0),
        record(2, 0.80, 1.5, 1.5),  # dominated by 1
        record(3, 0.95, 0.5, 0.5, feasible=False, trained=False),  # over budget
        record(4, 0.99, 0.1, 0.1, state="failed"),
        record(5, 0.85, 1.0, 1.0, candidate_hash="h1"),  # the architecture of trial 1 again
        record(6, 0.70, 0.9, 3.0),  # fastest, but worst energy: still non-dominated
    ]
    assert [r.number for r in pareto_front(records)] == [0, 1, 6]


def test_round_trip() -> None:
    r = record(3, 0.5, 1.0, 2.0)
    assert TrialRecord.from_dict(r.to_dict()) == r
