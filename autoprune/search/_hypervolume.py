"""Hypervolume of a run's feasible front, after every trial.

The hypervolume is the volume of objective space that the front dominates, up to a reference
point: one number that grows whenever a trial improves the front anywhere. Objectives are
normalised so that runs, seeds and controllers compare on one scale, and all are minimised:

* ``accuracy`` -> ``1 - accuracy`` (error, a fraction);
* ``latency_ms`` and ``energy_mj`` -> divided by the unpruned base model's estimated figure on
  the target (known before anything runs, the same for measured and estimated runs).

The reference point is ``(1.0, 1.1, 1.1)``: an error of 100 %, and 10 % above the base model's
latency and energy, so the base itself adds volume (the usual "a bit worse than the nadir"
rule). A run stores its :class:`HypervolumeReference` in the study, so a resumed run keeps the
scale it started with; the history is a function of the trial records and recomputed at will.

Example:
    >>> hypervolume([(0.5, 0.5)], reference=(1.0, 1.0))
    0.25
    >>> hypervolume([(0.5, 0.5), (0.25, 0.75), (0.75, 0.25)], reference=(1.0, 1.0))
    0.375
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from autoprune.search._pareto import OBJECTIVES, dominates
from autoprune.search._records import TrialRecord

__all__ = ["HypervolumeReference", "first_reaching", "hypervolume", "hypervolume_history"]

#: Reference point per normalised objective: error 1.0; 1.1 times the base model's cost.
_ERROR_REFERENCE = 1.0
_COST_REFERENCE = 1.1


@dataclass(frozen=True)
class HypervolumeReference:
    """How a run's objectives are normalised for the hypervolume, and the reference point.

    Attributes:
        objectives: ``(record field, direction)`` per objective, as :data:`OBJECTIVES`.
        scales: divisor per objective after turning it into a minimised one (``1 - accuracy``
            for a maximised fraction): 1.0 for accuracy, the base model's ``latency_ms`` and
            ``energy_mj`` for the costs.
        point: the reference point in normalised space.

    Example:
        >>> ref = HypervolumeReference.for_base(latency_ms=2.0, energy_mj=4.0)
        >>> ref.point, ref.scales
        ((1.0, 1.1, 1.1), (1.0, 2.0, 4.0))
        >>> HypervolumeReference.from_dict(ref.to_dict()) == ref
        True
    """

    objectives: tuple[tuple[str, str], ...]
    scales: tuple[float, ...]
    point: tuple[float, ...]

    def __post_init__(self) -> None:
        if not len(self.objectives) == len(self.scales) == len(self.point):
            raise ValueError(
                f"one scale and one reference value per objective, but got "
                f"{len(self.objectives)} objectives, {len(self.scales)} scales and "
                f"{len(self.point)} reference values"
            )
        if not all(s > 0 and math.isfinite(s) for s in self.scales):
            raise ValueError(f"scales must be positive and finite, but got {self.scales}")

    @classmethod
    def for_base(cls, *, latency_ms: float, energy_mj: float) -> HypervolumeReference:
        """The reference of a run whose unpruned base model costs ``latency_ms`` (ms) and
        ``energy_mj`` (mJ) per inference on the target."""
        return cls(
            objectives=OBJECTIVES,
            scales=(1.0, float(latency_ms), float(energy_mj)),
            point=(_ERROR_REFERENCE, _COST_REFERENCE, _COST_REFERENCE),
        )

    def normalise(self, record: TrialRecord) -> tuple[float, ...]:
        """The record's objectives, minimised and divided by the scales."""
        values = []
        for (name, direction), scale in zip(self.objectives, self.scales, strict=True):
            value = float(getattr(record, name))
            values.append((1.0 - value if direction == "maximize" else value) / scale)
        return tuple(values)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict; ``from_dict(to_dict())`` round-trips."""
        return {
            "objectives": [list(o) for o in self.objectives],
            "scales": list(self.scales),
            "point": list(self.point),
            "normalisation": "accuracy -> 1 - accuracy; costs -> cost / base model's cost",
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HypervolumeReference:
        """Inverse of :meth:`to_dict`."""
        return cls(
            objectives=tuple((str(n), str(d)) for n, d in data["objectives"]),
            scales=tuple(float(s) for s in data["scales"]),
            point=tuple(float(p) for p in data["point"]),
        )


def _hypervolume_2d(points: list[tuple[float, float]], reference: Sequence[float]) -> float:
    """Area dominated by minimised 2-D points up to ``reference`` (sweep in x)."""
    area, best_y = 0.0, reference[1]
    ordered = sorted(points)
    for i, (x, y) in enumerate(ordered):
        best_y = min(best_y, y)
        next_x = ordered[i + 1][0] if i + 1 < len(ordered) else reference[0]
        area += (next_x - x) * (reference[1] - best_y)
    return area


def _hypervolume(points: list[tuple[float, ...]], reference: Sequence[float]) -> float:
    if not points:
        return 0.0
    if len(reference) == 1:
        return reference[0] - min(p[0] for p in points)
    if len(reference) == 2:
        return _hypervolume_2d([(p[0], p[1]) for p in points], reference)
    ordered = sorted(points, key=lambda p: p[-1])  # slices along the last objective
    volume = 0.0
    for i, point in enumerate(ordered):
        upper = ordered[i + 1][-1] if i + 1 < len(ordered) else reference[-1]
        if upper > point[-1]:
            base = _hypervolume([p[:-1] for p in ordered[: i + 1]], reference[:-1])
            volume += (upper - point[-1]) * base
    return volume


def hypervolume(points: Sequence[Sequence[float]], reference: Sequence[float]) -> float:
    """Exact hypervolume of minimised ``points`` up to ``reference`` (any dimension).

    Points not strictly better than the reference in every objective add nothing. Exact by
    slicing along the last objective down to a 2-D sweep: ``O(n^(d-1) log n)`` for ``n``
    non-dominated points in ``d`` objectives.
    """
    reference = tuple(float(r) for r in reference)
    inside = {
        tuple(float(x) for x in p)
        for p in points
        if len(p) == len(reference) and all(x < r for x, r in zip(p, reference, strict=True))
    }
    front = [p for p in inside if not any(dominates(q, p) for q in inside if q != p)]
    return _hypervolume(front, reference)


def hypervolume_history(
    records: Sequence[TrialRecord], reference: HypervolumeReference
) -> list[tuple[int, float]]:
    """``(trial number, hypervolume)`` after each finished trial, in trial order.

    Counted: complete, feasible, trained trials (as :func:`pareto_front`); the others keep the
    hypervolume where it was. Running and waiting trials are left out.

    Example:
        >>> ref = HypervolumeReference.for_base(latency_ms=1.0, energy_mj=1.0)
        >>> base = dict(state="complete", feasible=True, trained=True, energy_mj=0.5)
        >>> records = [TrialRecord(number=0, state="failed"),
        ...            TrialRecord(number=1, accuracy=0.9, latency_ms=1.0, **base),
        ...            TrialRecord(number=2, accuracy=0.8, latency_ms=0.5, **base)]
        >>> [(n, round(hv, 3)) for n, hv in hypervolume_history(records, ref)]
        [(0, 0.0), (1, 0.054), (2, 0.294)]
    """
    history: list[tuple[int, float]] = []
    front: list[tuple[float, ...]] = []
    volume = 0.0
    for record in sorted(records, key=lambda r: r.number):
        if record.state in ("running", "waiting"):
            continue
        counted = record.state == "complete" and record.feasible and record.trained
        if counted and record.accuracy is not None:
            point = reference.normalise(record)
            if all(math.isfinite(x) for x in point) and not any(
                q == point or dominates(q, point) for q in front
            ):
                front = [q for q in front if not dominates(point, q)] + [point]
                volume = hypervolume(front, reference.point)
        history.append((record.number, volume))
    return history


def first_reaching(history: Sequence[tuple[int, float]], level: float) -> int | None:
    """How many finished trials the history needed to reach ``level``; ``None``: never."""
    for count, (_, volume) in enumerate(history, start=1):
        if volume >= level:
            return count
    return None
