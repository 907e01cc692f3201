"""What every benchmark script shares: the key of the code that makes a figure, and the CPU's name.

A benchmark that keeps work between invocations (trainings, tuning databases, measurements,
lowered kernels) keeps it under :func:`keyed`, a folder named by :func:`code_key`: a hash of the
autoprune package's files and of the versions of the libraries its figures depend on. Other code
(an edit of the package, another torch or TVM) gets a folder of its own, so a figure is never
read back from a cache that other code wrote. Results JSONs record :func:`code_versions`, which
names the same key. A benchmark that times a first run calls :func:`fresh_user_cache`, so that
it does not read what earlier runs kept in ``~/.cache/autoprune`` (kernel lists).
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import os
import platform
import shutil
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGE = Path(__file__).resolve().parents[1] / "autoprune"
#: Distributions whose version can change a figure (their code runs while it is measured).
DEPENDENCIES = (
    "torch",
    "torchvision",
    "apache-tvm",
    "apache-tvm-ffi",
    "optuna",
    "ray",
    "torch-pruning",
    "timm",
    "numpy",
    "scipy",
    "onnx",
    "onnxruntime",
)


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "absent"


@functools.cache
def source_hash() -> str:
    """SHA-256 of the autoprune package's files (paths and bytes; caches of Python excluded)."""
    digest = hashlib.sha256()
    for path in sorted(PACKAGE.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(path.relative_to(PACKAGE).as_posix().encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def code_versions() -> dict[str, Any]:
    """What made a figure: the package's source hash, Python's and each dependency's version,
    and :func:`code_key`, their digest."""
    versions = {name: _version(name) for name in DEPENDENCIES}
    return {
        "key": code_key(),
        "autoprune_source_sha256": source_hash(),
        "python": platform.python_version(),
        **versions,
    }


@functools.cache
def code_key() -> str:
    """``code-<16 hex digits>``: digest of the package source and the dependencies' versions."""
    parts = [source_hash(), platform.python_version(), sys.platform]
    parts += [f"{name}=={_version(name)}" for name in DEPENDENCIES]
    return "code-" + hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def fresh_user_cache() -> Path:
    """Point ``$XDG_CACHE_HOME`` at a new empty folder for this process and the processes it
    starts: a timed run then lowers each architecture itself, as a first run on a new machine
    does. Returns the folder (under the system's temporary folder; removed at exit)."""
    folder = Path(tempfile.mkdtemp(prefix="autoprune-bench-cache-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    os.environ["XDG_CACHE_HOME"] = str(folder)
    return folder


def keyed(folder: Path) -> Path:
    """``folder/<code_key()>``: where a benchmark keeps work between invocations."""
    return folder / code_key()


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what :mod:`platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
