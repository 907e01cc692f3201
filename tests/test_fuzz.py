"""Fuzzing with Hypothesis: budgets, ``--set`` items, whole config files, run-directory paths,
model and target names never end in a traceback or a half-written run directory.

The properties and strategies are in ``tests/fuzzing.py``; ``benchmarks/fuzz.py`` runs them for
10,000 examples. Derandomized, so CI draws the same examples every run.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings

from tests.fuzzing import PROPERTIES, check

#: Examples per property: 350 in all.
EXAMPLES = {"budget": 150, "set": 60, "config": 60, "config_cli": 20, "run_dir": 20, "names": 40}


@pytest.mark.parametrize("name", list(PROPERTIES))
def test_fuzzed_input_is_a_value_or_one_line_and_exit_2(name: str) -> None:
    @settings(
        max_examples=EXAMPLES[name],
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(PROPERTIES[name][0])
    def run(value: object) -> None:
        check(name, value)

    run()
