"""The package's docstring examples, run as doctests (``--doctest-modules autoprune``), and how
the suite is split over pytest-xdist's workers (``pytest -n auto``).

Each example runs in an empty folder of its own, as a user's would in a project folder; an
example that names ``runs/demo`` finds there a finished search of its own (a copy of one tiny
run: resnet20 with your weights ``resnet20.pt``, synthetic data at 16x16, float, 3 trials,
estimated hardware), so that examples read a real run and no example sees another's changes.

Under xdist, a worker takes a whole test file at a time (its module fixtures are made once),
all doctests together (the demo run is made once), and all Ray test files together (one Ray
cluster at a time); files with the most slow tests go first, and each worker's PyTorch and
OpenMP get an equal share of the cores.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from _pytest.doctest import DoctestItem

#: The session's ``$XDG_CACHE_HOME`` (see :func:`pytest_configure`).
SESSION_CACHE = pytest.StashKey[str]()

#: Work units that gather several files (see :func:`work_unit`).
DOCTESTS, RAY = "doctests", "ray"

#: The demo run's settings: small enough to search in seconds on a CPU.
DEMO_SETTINGS = {
    "model.in_channels": 1,
    "data.dataset": "synthetic",
    "data.root": None,
    "data.val_samples": 100,
    "data.input_shape": [1, 16, 16],
    "space.weight_bits": [32],
    "space.activation_bits": [32],
    "training.samples": 64,
    "training.batch_size": 64,
    "hardware.estimator": "layers",
    "search.seed": 0,
}


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 3-trial search with user weights, made once per session."""
    import torch

    import autoprune
    from autoprune.spaces import Candidate, build_model

    folder = tmp_path_factory.mktemp("demo")
    torch.manual_seed(0)
    base = Candidate(model="resnet20", num_classes=10, in_channels=1, input_shape=(1, 16, 16))
    torch.save(build_model(base).state_dict(), folder / "resnet20.pt")
    run_dir = folder / "runs" / "demo"
    autoprune.search(
        target="jetson",
        trials=3,
        run_dir=run_dir,
        weights=folder / "resnet20.pt",
        settings=DEMO_SETTINGS,
        progress=False,
    )
    return run_dir


def copy_run(run_dir: Path, dest: Path) -> Path:
    """A plain copy of ``run_dir``: run.json names the study relatively, so it is the copy's."""
    shutil.copytree(run_dir, dest)
    return dest


@pytest.fixture(autouse=True)
def _doctest_folder(request: pytest.FixtureRequest) -> Iterator[None]:
    """Doctests only: an empty working folder, ``runs/demo`` where named, the environment kept."""
    if not isinstance(request.node, DoctestItem):
        yield
        return
    folder: Path = request.getfixturevalue("tmp_path")
    monkeypatch: pytest.MonkeyPatch = request.getfixturevalue("monkeypatch")
    monkeypatch.chdir(folder)
    if any('"runs/demo"' in e.source for e in request.node.dtest.examples):
        demo = request.getfixturevalue("demo_run")
        copy_run(demo, folder / "runs" / "demo")
        shutil.copy(demo.parents[1] / "resnet20.pt", folder / "resnet20.pt")
    environ = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(environ)


# -- pytest-xdist ------------------------------------------------------------------------------


def work_unit(nodeid: str) -> str:
    """The unit a test is scheduled in: its file, the package's doctests, or the Ray files."""
    path = nodeid.split("::", 1)[0]
    if path.startswith("autoprune/"):
        return DOCTESTS
    if Path(path).name.startswith("test_ray"):
        return RAY
    return path


def pytest_configure(config: pytest.Config) -> None:
    """On xdist's controller (or the only process), before any worker starts: each worker's
    threads are the cores divided by the workers (their PyTorch reads it at import), and the
    caches kept between runs (``$XDG_CACHE_HOME/autoprune``: kernel lists...) are one empty
    folder for the session, shared by its workers, never the user's."""
    if hasattr(config, "workerinput"):
        return
    workers = len(getattr(config.option, "tx", None) or ())
    if workers > 1:
        threads = max(1, (os.cpu_count() or 1) // workers)
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    config.stash[SESSION_CACHE] = tempfile.mkdtemp(prefix="autoprune-test-cache-")
    os.environ["XDG_CACHE_HOME"] = config.stash[SESSION_CACHE]


def pytest_unconfigure(config: pytest.Config) -> None:
    if SESSION_CACHE in config.stash:
        shutil.rmtree(config.stash[SESSION_CACHE], ignore_errors=True)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object | None:
    """``--dist load`` (xdist's default) by :func:`work_unit`, not by test."""
    if config.getvalue("dist") != "load":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class WorkUnitScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return work_unit(nodeid)

    return WorkUnitScheduling(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On xdist's workers: the units with the most slow tests first (the scheduler hands units
    out in collection order), each unit's tests kept together and in order."""
    if not hasattr(config, "workerinput"):
        return
    slow: dict[str, int] = {}
    first: dict[str, int] = {}
    for index, item in enumerate(items):
        unit = work_unit(item.nodeid)
        first.setdefault(unit, index)
        slow[unit] = slow.get(unit, 0) + (item.get_closest_marker("slow") is not None)
    items.sort(key=lambda item: (-slow[work_unit(item.nodeid)], first[work_unit(item.nodeid)]))
