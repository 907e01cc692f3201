"""Fuzzing properties and their Hypothesis strategies, shared by ``tests/test_fuzz.py`` (a few
hundred examples) and ``benchmarks/fuzz.py`` (10,000).

Each property takes one drawn input and a scratch folder, and asserts what every input must give:
a value or an :class:`~autoprune.errors.AutopruneError` (library calls), or exit 0 or exit 2 with
one line on stderr and nothing written (the CLI). Every input stops before training or TVM: the
CLI runs ``search`` only with inputs the config layer refuses (and a missing target besides),
``report`` and ``export`` of folders that hold no run, ``profile`` of a refused model
or target.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import math
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from hypothesis import strategies as st

from autoprune.cli import main
from autoprune.config import (
    DEFAULT_CONFIG,
    SECTIONS,
    Config,
    config_from_dict,
    load_config,
    parse_budget,
)
from autoprune.errors import AutopruneError
from autoprune.hwprofiles import load_profile
from autoprune.spaces import list_models
from autoprune.spaces._sources import model_source
from tests.conftest import TINY_CONFIG

#: A target profile that does not exist: ``search`` refuses it right after the config, so no
#: fuzzed ``search`` goes on to load data or build a space.
MISSING_TARGET = "no-such-target.yaml"

# -- strategies -------------------------------------------------------------------------------

_numbers = st.one_of(
    st.integers(),
    st.integers(min_value=2**62, max_value=10**400),
    st.integers(max_value=-(2**62)),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, 1, -1, 1e308, 1e-308, 5e-324]),
)
_scalars = st.one_of(
    _numbers, st.booleans(), st.none(), st.text(max_size=12), st.binary(max_size=8)
)


def _deep(depth: int) -> Any:
    value: Any = 1
    for i in range(depth):
        value = [value] if i % 2 else {"a": value}
    return value


#: YAML-representable values: scalars, nested lists and mappings, and deep nesting.
values = st.one_of(
    st.recursive(
        _scalars.filter(lambda v: not isinstance(v, bytes)),
        lambda inner: (
            st.lists(inner, max_size=4)
            | st.dictionaries(st.text(max_size=6) | st.integers(), inner, max_size=4)
        ),
        max_leaves=12,
    ),
    st.integers(min_value=20, max_value=300).map(_deep),
)

_units = ["gflops", "mflops", "ms", "us", "mj", "uj", "mb", "kb", "mparams", "kparams"]

#: Budget strings: well-formed ones with odd numbers, and arbitrary text.
budgets = st.one_of(
    st.builds(
        lambda n, u, case: f"{n}{u.upper() if case else u}",
        st.one_of(st.floats(), st.integers(), st.sampled_from(["1e999", "nan", "-0", ".5"])),
        st.sampled_from(_units) | st.text(max_size=4),
        st.booleans(),
    ),
    st.text(max_size=20),
)

_keys = [
    *(f"{s}.{f.name}" for s, cls in SECTIONS.items() for f in dataclasses.fields(cls)),
    "target",
    "budgets",
    "evaluator",
    "evaluator.distill.temperature",
    "evaluator.finetune.epochs",
]

#: ``--set KEY=VALUE`` items: known keys (and random ones) with random YAML and text values.
set_items = st.builds(
    lambda key, value: f"{key}={value}",
    st.sampled_from(_keys) | st.text(max_size=12),
    st.one_of(
        values.map(lambda v: yaml.safe_dump(v, default_flow_style=True).strip()),
        st.text(max_size=20),
        st.sampled_from([".nan", ".inf", "-.inf", "1e400", "9" * 40, "[" * 600 + "]" * 600]),
    ),
)


def _mutate(data: Any, path: list[Any], value: Any, delete: bool) -> Any:
    """``data`` with the node at ``path`` (indices into its mappings) replaced or deleted."""
    if not path or not isinstance(data, dict) or not data:
        return value
    keys = list(data)
    key = keys[path[0] % len(keys)]
    out = dict(data)
    if delete and len(path) == 1:
        del out[key]
    else:
        out[key] = _mutate(data[key], path[1:], value, delete)
    return out


_DEFAULT = yaml.safe_load(DEFAULT_CONFIG.read_text())

#: Whole config files (bytes): random bytes, YAML of random values, the shipped default with a
#: node replaced or deleted, and the tiny test config with a section of random values.
config_files = st.one_of(
    st.binary(max_size=200),
    st.integers(min_value=300, max_value=1000).map(lambda n: f"model: {'[' * n}{']' * n}".encode()),
    values.map(lambda v: yaml.safe_dump(v).encode()),
    st.builds(
        lambda path, value, delete: yaml.safe_dump(_mutate(_DEFAULT, path, value, delete)).encode(),
        st.lists(st.integers(min_value=0, max_value=50), min_size=1, max_size=3),
        values,
        st.booleans(),
    ),
    st.builds(
        lambda section, value: yaml.safe_dump({**TINY_CONFIG, section: value}).encode(),
        st.sampled_from([*TINY_CONFIG, "colour"]),
        values,
    ),
)

_path_parts = st.text(max_size=12) | st.sampled_from(
    ["..", ".", "", "~", "run.json", "study.db", "a" * 300, "r\udcff", "\x00"]
)

#: Run-directory paths relative to a scratch folder: odd names, dots, long parts, and paths
#: under a file (``file.txt/run``).
run_dirs = st.lists(_path_parts, min_size=1, max_size=3).map(lambda parts: "/".join(parts))

#: Model names: registered ones, random text, ``timm:`` names and ``module:factory`` forms.
model_names = st.one_of(
    st.sampled_from(list_models()[:20]),
    st.text(max_size=16),
    st.text(max_size=8).map(lambda t: f"timm:{t}"),
    st.builds(
        lambda m, f: f"{m}:{f}",
        st.text(alphabet=".:/\\_-x0 é\x00", max_size=8),
        st.text(max_size=6),
    ),
)

#: Target names: built-in names and aliases in odd case, random text and missing YAML paths.
target_names = st.one_of(
    st.sampled_from(["jetson", "HOST", "Jetson-Nano", "raspberry-pi-4"]),
    st.text(max_size=16),
    st.text(max_size=8).map(lambda t: f"{t}.yaml"),
    st.text(max_size=8).map(lambda t: f"missing/{t}"),
)

# -- properties -------------------------------------------------------------------------------


def cli(argv: list[str]) -> tuple[int, list[str]]:
    """``autoprune ARGV`` in this process: the exit status and the lines on stderr."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            status = main(argv)
        except SystemExit as exc:  # argparse's own errors
            status = exc.code  # type: ignore[assignment]
    return status, err.getvalue().splitlines()


def _refused_in_one_line(status: int, lines: list[str], what: object) -> None:
    assert status == 2, f"{what!r}: exit {status}, stderr {lines}"
    assert len(lines) == 1 and lines[0].startswith("autoprune"), f"{what!r}: stderr {lines}"


def budget_property(text: str, scratch: Path) -> None:
    """A budget string parses to a finite positive limit or is a ConfigError."""
    try:
        budget = parse_budget(text)
    except AutopruneError:
        return
    assert math.isfinite(budget.limit) and budget.limit > 0, (text, budget)


def set_property(item: str, scratch: Path) -> None:
    """A ``--set`` item gives a config or an AutopruneError; the CLI refuses a refused one in
    one line, with no run directory."""
    try:
        load_config(tiny_path(scratch), overrides=[item])
        return  # accepted: the CLI would go on to the data and the space, seconds each
    except AutopruneError:
        pass
    run = scratch / "run"
    status, lines = cli(
        ["search", "--config", str(tiny_path(scratch)), "--run-dir", str(run), "--quiet",
         "--set", item, "--target", str(scratch / MISSING_TARGET)]
    )  # fmt: skip
    _refused_in_one_line(status, lines, item)
    assert not run.exists(), item


def config_property(content: bytes, scratch: Path) -> None:
    """A config file's bytes give a Config (that round-trips) or an AutopruneError."""
    path = scratch / "fuzzed.yaml"
    path.write_bytes(content)
    try:
        config = load_config(path)
    except AutopruneError:
        return
    assert isinstance(config, Config) and config_from_dict(config.to_dict()) == config


def config_cli_property(content: bytes, scratch: Path) -> None:
    """``search --config FILE`` of a file the library refuses: one line and exit 2, no run
    directory."""
    path = scratch / "fuzzed.yaml"
    path.write_bytes(content)
    try:
        load_config(path)
        return  # accepted: the CLI would go on to the data and the space, seconds each
    except AutopruneError:
        pass
    run = scratch / "run"
    status, lines = cli(
        ["search", "--config", str(path), "--run-dir", str(run), "--quiet",
         "--target", str(scratch / MISSING_TARGET)]
    )  # fmt: skip
    _refused_in_one_line(status, lines, content)
    assert not run.exists(), content


def run_dir_property(relative: str, scratch: Path) -> None:
    """``report``, ``export`` and ``search --run-dir`` (of a missing target) of a path that
    holds no run (in the scratch folder, or under a file in it): one line, exit 2, nothing
    written."""
    (scratch / "file.txt").write_text("x")
    tiny_path(scratch)
    before = sorted(scratch.rglob("*"))
    config, target = str(tiny_path(scratch)), str(scratch / MISSING_TARGET)
    for path in (scratch / relative, scratch / "file.txt" / relative):
        for argv in (
            ["report", str(path)],
            ["export", str(path), "--pareto"],
            ["search", "--config", config, "--run-dir", str(path), "--target", target],
        ):
            status, lines = cli(argv)
            _refused_in_one_line(status, lines, relative)
    assert sorted(scratch.rglob("*")) == before, relative


def name_property(names: tuple[str, str], scratch: Path) -> None:
    """A model name and a target name resolve or are AutopruneErrors; ``profile`` with a
    refused pair is one line and exit 2."""
    model, target = names
    ok = 0
    for resolve, name in ((model_source, model), (load_profile, target)):
        try:
            resolve(name)
            ok += 1
        except AutopruneError:
            pass
    if ok < 2:  # a valid pair would count costs of a whole model: not fuzzed
        status, lines = cli(["profile", "--target", target, "--model", model, "--input", "1x8x8"])
        _refused_in_one_line(status, lines, names)


def tiny_path(scratch: Path) -> Path:
    """The tiny test config (synthetic data, resnet20), written into ``scratch``."""
    path = scratch / "tiny.yaml"
    if not path.exists():
        path.write_text(yaml.safe_dump(TINY_CONFIG))
    return path


#: Property name -> (strategy, property); the test and the benchmark run these.
PROPERTIES: dict[str, tuple[st.SearchStrategy[Any], Callable[[Any, Path], None]]] = {
    "budget": (budgets, budget_property),
    "set": (set_items, set_property),
    "config": (config_files, config_property),
    "config_cli": (config_files, config_cli_property),
    "run_dir": (run_dirs, run_dir_property),
    "names": (st.tuples(model_names, target_names), name_property),
}


def check(name: str, value: Any) -> None:
    """Run property ``name`` on ``value`` in a fresh scratch folder."""
    with tempfile.TemporaryDirectory() as folder:
        PROPERTIES[name][1](value, Path(folder))
