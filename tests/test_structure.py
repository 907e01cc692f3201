"""The package's structure: no import cycles, small modules, imports that go one way."""

from __future__ import annotations

import ast
import os
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "autoprune"
#: Subpackages in data-flow order: a stage may import only the ones before it.
LAYERS = ["errors", "config", "spaces", "hwprofiles", "evaluators", "search"]
#: Third-party libraries that only ``autoprune.search`` may import.
SEARCH_ONLY = ("optuna", "ray")


def module_names() -> list[str]:
    """Every module of the package, dotted (``autoprune.search._loop``)."""
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def _path(module: str) -> Path:
    base = PACKAGE.parent.joinpath(*module.split("."))
    return base / "__init__.py" if base.is_dir() else base.with_suffix(".py")


def imports(module: str) -> Iterator[tuple[str, int]]:
    """``(imported name, line)`` of every import in ``module``, at any depth (functions too),
    relative imports resolved; ``from a import b`` yields ``a.b`` when ``b`` is a module."""
    path = _path(module)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    known = set(module_names())
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                yield (sub if sub in known else base), node.lineno


def module_graph() -> dict[str, set[str]]:
    """Module -> the autoprune modules it imports."""
    return {
        m: {name for name, _ in imports(m) if name.split(".")[0] == "autoprune"}
        for m in module_names()
    }


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module, or a module importing itself
    (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph.get(node, ()):
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_module_graph_has_no_cycle() -> None:
    graph = module_graph()
    assert len(graph) > 50 and graph["autoprune.search._loop"]  # the parser sees the imports
    assert cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]  # and it can fail
    assert cycles(graph) == []


def test_every_module_imports_on_its_own_in_a_fresh_interpreter_in_a_random_order() -> None:
    # One fresh interpreter; before each module, every autoprune module is dropped from
    # sys.modules, so each is imported on its own, first, as a user's `import` would: a cycle
    # that works in one import order and breaks in another fails here. Third-party libraries
    # stay loaded between imports (they do not import autoprune), which keeps this fast.
    seed = random.randrange(2**32)
    modules = [m for m in module_names() if not m.endswith(".__main__")]  # scripts, not modules
    random.Random(seed).shuffle(modules)
    script = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    for loaded in [m for m in sys.modules if m.split('.')[0] == 'autoprune']:\n"
        "        del sys.modules[loaded]\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception as exc:\n"
        "        sys.exit(f'import {name} failed: {type(exc).__name__}: {exc}')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(PACKAGE.parent)}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=900
    )
    assert done.returncode == 0, f"random order seed {seed}: {done.stderr[-3000:]}"


def test_the_packages_and_the_report_load_no_model_or_compiler_library() -> None:
    # Torch-Pruning (timm and torchvision with it, torch._dynamo under those: ~3 s), ONNX, TVM
    # and Ray load when a model is cut, exported, lowered or sent to a cluster; `autoprune
    # report`, `targets`, and every measurement worker process, start without them.
    heavy = ["onnx", "onnxscript", "ray", "timm", "torch_pruning", "torchvision", "tvm"]
    loaded = (
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & {set(heavy)!r}))\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(PACKAGE.parent)}

    def run(imports: str) -> list[str]:
        script = f"import sys\n{imports}\n{loaded}"
        done = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout.splitlines()

    assert run(
        "import autoprune.cli._devices, autoprune.cli._results, autoprune.evaluators\n"
        "import autoprune.hwprofiles, autoprune.report, autoprune.search, autoprune.spaces"
    ) == ["[]", "False"]
    assert run("import torchvision") == ["['torchvision']", "True"]  # the probe sees a load


def test_no_module_is_over_500_lines() -> None:
    long = {m: n for m in module_names() if (n := len(_path(m).read_text().splitlines())) > 500}
    assert long == {}


def test_imports_go_one_way_through_the_stages() -> None:
    def stage(module: str) -> str | None:
        parts = module.split(".")
        return parts[1] if len(parts) > 1 and parts[1] in LAYERS else None

    backwards = []
    third_party = []
    for module in module_names():
        here = stage(module)
        for name, line in imports(module):
            there = stage(name) if name.startswith("autoprune") else None
            if here and there and LAYERS.index(there) > LAYERS.index(here):
                backwards.append(f"{module}:{line} imports {name}")
            if name.split(".")[0] in SEARCH_ONLY and here != "search":
                third_party.append(f"{module}:{line} imports {name}")
    assert backwards == []
    assert third_party == []


#: Names of the project's private notes, which are not in the repository (spelled in pieces so
#: that this file does not cite them either).
_NOTES = tuple(
    a + b
    for a, b in [
        ("shared", "/"),
        ("DESIGN", ".md"),
        ("TVM", ".md"),
        ("STYLE", ".md"),
        ("devices", ".md"),
    ]
)


def test_nothing_cites_a_file_outside_the_repository() -> None:
    root = PACKAGE.parent
    files = [root / "README.md", root / "pyproject.toml"]
    for folder in ("autoprune", "docs", "benchmarks", "scripts", ".ci"):
        files += [p for p in root.joinpath(folder).rglob("*") if p.is_file()]
    cited = []
    for path in files:
        if path.suffix not in (".py", ".md", ".yaml", ".toml", ".sh", ""):
            continue
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if any(note in line for note in _NOTES):
                cited.append(f"{path.relative_to(root)}:{number}")
    assert len(files) > 100 and cited == []
