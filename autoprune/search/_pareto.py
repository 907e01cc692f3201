"""Pareto front of the feasible, trained trials."""

from __future__ import annotations

from collections.abc import Sequence

from autoprune.search._records import TrialRecord

__all__ = ["OBJECTIVES", "dominates", "pareto_front"]

#: The search objectives: (record field, direction). Accuracy is the validation accuracy at the
#: search fidelity; latency and energy are per inference at batch 1 on the target.
OBJECTIVES: tuple[tuple[str, str], ...] = (
    ("accuracy", "maximize"),
    ("latency_ms", "minimize"),
    ("energy_mj", "minimize"),
)


def _signed(record: TrialRecord, objectives: Sequence[tuple[str, str]]) -> tuple[float, ...]:
    """Objective values turned so that smaller is better for every one."""
    return tuple(
        -getattr(record, name) if direction == "maximize" else getattr(record, name)
        for name, direction in objectives
    )


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """``a`` Pareto-dominates ``b`` (all minimised): no worse anywhere, better somewhere."""
    return all(x <= y for x, y in zip(a, b, strict=True)) and any(
        x < y for x, y in zip(a, b, strict=True)
    )


def pareto_front(
    records: Sequence[TrialRecord],
    objectives: Sequence[tuple[str, str]] = OBJECTIVES,
) -> list[TrialRecord]:
    """Non-dominated records among the complete, feasible, trained ones, sorted by accuracy.

    Duplicates of one architecture (same candidate hash) appear once, as the earliest trial.

    Example:
        >>> def done(number, accuracy, cost):
        ...     return TrialRecord(number=number, state="complete", feasible=True, trained=True,
        ...                        accuracy=accuracy, latency_ms=cost, energy_mj=cost)
        >>> records = [done(0, 0.9, 2.0), done(1, 0.8, 1.0), done(2, 0.7, 1.5)]
        >>> [r.number for r in pareto_front(records)]  # trial 2 is dominated by trial 1
        [0, 1]
    """
    pool: dict[str, TrialRecord] = {}
    for record in sorted(records, key=lambda r: r.number):
        if record.state != "complete" or not record.feasible or not record.trained:
            continue
        key = record.candidate_hash or f"trial-{record.number}"
        pool.setdefault(key, record)
    candidates = list(pool.values())
    signed = [_signed(r, objectives) for r in candidates]
    front = [
        r
        for i, r in enumerate(candidates)
        if not any(dominates(signed[j], signed[i]) for j in range(len(candidates)) if j != i)
    ]
    return sorted(front, key=lambda r: (-(r.accuracy or 0.0), r.number))
