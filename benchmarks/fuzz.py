"""Fuzz the CLI's inputs for 10,000 examples: budgets, ``--set`` items, whole config files,
run-directory paths, model and target names (the properties of ``tests/fuzzing.py``).

Every example must give a value, an ``AutopruneError`` (library calls) or exit 2 with one line on
stderr and nothing written (the CLI); anything else is counted as a traceback, with its first
line kept. Writes ``benchmarks/results/fuzz.json``: examples and tracebacks per property.

    .venv/bin/python benchmarks/fuzz.py            # 10,000 examples
    .venv/bin/python benchmarks/fuzz.py --total 500
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import traceback
from importlib import metadata
from pathlib import Path

from hypothesis import HealthCheck, given, seed, settings

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import code_versions  # noqa: E402

from tests.fuzzing import PROPERTIES, check  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "fuzz.json"

#: Share of the examples each property gets (the CLI ones cost more per example).
SHARES = {"budget": 0.3, "set": 0.15, "config": 0.25, "config_cli": 0.05, "run_dir": 0.1,
          "names": 0.15}  # fmt: skip


def fuzz(name: str, examples: int, seed_value: int) -> dict[str, object]:
    """Run property ``name`` for ``examples`` examples; count them and the tracebacks."""
    counts = {"examples": 0, "tracebacks": 0}
    first: list[str] = []

    @seed(seed_value)
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(PROPERTIES[name][0])
    def run(value: object) -> None:
        counts["examples"] += 1
        try:
            check(name, value)
        except Exception as exc:  # noqa: BLE001 - counted, and the fuzzing goes on
            counts["tracebacks"] += 1
            if len(first) < 5:
                first.append(f"{value!r:.200}: {traceback.format_exception_only(exc)[-1]:.300}")

    start = time.perf_counter()
    run()
    return {**counts, "seconds": round(time.perf_counter() - start, 1), "first": first}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--total", type=int, default=10_000, help="examples in all")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.getLogger("autoprune").setLevel(logging.ERROR)
    start = time.perf_counter()
    properties = {}
    for name, share in SHARES.items():
        properties[name] = fuzz(name, round(args.total * share), args.seed)
        print(name, json.dumps(properties[name]), flush=True)
    result = {
        "examples": sum(p["examples"] for p in properties.values()),
        "tracebacks": sum(p["tracebacks"] for p in properties.values()),
        "seconds": round(time.perf_counter() - start, 1),
        "seed": args.seed,
        "hypothesis": metadata.version("hypothesis"),
        "code": code_versions(),
        "properties": properties,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{result['examples']} examples, {result['tracebacks']} tracebacks -> {RESULTS}")


if __name__ == "__main__":
    main()
