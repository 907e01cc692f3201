"""Where a trial's time goes: wall seconds per stage of the objective, stored with the trial.

Example:
    >>> clock = StageClock()
    >>> clock.lap("costs")
    >>> clock.split("costs", "train", 0.0)
    >>> sorted(clock.seconds)
    ['costs', 'train']
"""

from __future__ import annotations

import time

__all__ = ["StageClock"]


class StageClock:
    """Wall seconds per stage of one trial, in the order the stages first ran.

    ``lap(stage)`` adds the time since the previous lap to ``stage``; ``split`` moves a part of
    one stage's time, measured inside it, to another (the training loop out of the evaluator's
    call), so that the stages never overlap and sum to the objective's time.
    """

    def __init__(self) -> None:
        self._last = time.perf_counter()
        self._seconds: dict[str, float] = {}

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self._seconds[stage] = self._seconds.get(stage, 0.0) + now - self._last
        self._last = now

    def split(self, stage: str, part: str, seconds: float) -> None:
        moved = min(max(float(seconds), 0.0), self._seconds.get(stage, 0.0))
        self._seconds[stage] = self._seconds.get(stage, 0.0) - moved
        self._seconds[part] = self._seconds.get(part, 0.0) + moved

    @property
    def total(self) -> float:
        return sum(self._seconds.values())

    @property
    def seconds(self) -> dict[str, float]:
        return {stage: round(value, 4) for stage, value in self._seconds.items()}
