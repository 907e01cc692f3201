"""Write a TVM-built executable as a library for its target: this host, or a board.

Local targets get a shared library linked by the host compiler. Cross targets (a Jetson's
aarch64 host code with its CUDA kernels, a Raspberry Pi) are linked by the cross compiler from
Debian's packages (``g++-aarch64-linux-gnu``) when it is installed; otherwise the object files
are written as a tar, to be linked on the board.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from autoprune.hwprofiles._relax import is_local_target

__all__ = ["CROSS_COMPILERS", "target_host_arch", "write_library"]

_logger = logging.getLogger("autoprune.hwprofiles")

#: Host architecture of a target -> the Debian cross compiler that links its shared libraries.
CROSS_COMPILERS = {"aarch64": "aarch64-linux-gnu-g++"}


def target_host_arch(target_spec: str | dict[str, Any]) -> str:
    """Architecture of the CPU that runs a target's host code (``"aarch64"``, ``"x86_64"``)."""
    import tvm

    target = tvm.target.Target(target_spec)
    host = target.host if target.host is not None else target
    return str(host.attrs.get("mtriple", "")).split("-")[0]


def write_library(
    executable: Any, target_spec: str | dict[str, Any], folder: Path, *, name: str = "model"
) -> Path:
    """Export ``executable`` (from ``tvm.compile``) into ``folder``; returns the file written.

    Example:
        >>> from torch import nn
        >>> from autoprune.hwprofiles import load_profile
        >>> from autoprune.hwprofiles._relax import build_for_target, import_to_relax
        >>> target = load_profile("host").tvm_target_spec()
        >>> ex = build_for_target(import_to_relax(nn.Conv2d(1, 8, 3), (1, 16, 16)), target)
        >>> write_library(ex, target, Path("out")).name  # a board's: model.so or model.tar
        'model.so'
    """
    from tvm.support import cc, tar

    folder.mkdir(parents=True, exist_ok=True)
    if is_local_target(target_spec):
        path = folder / f"{name}.so"
        executable.export_library(str(path))
        return path
    arch = target_host_arch(target_spec)
    compiler = CROSS_COMPILERS.get(arch)
    if compiler and shutil.which(compiler):
        path = folder / f"{name}.so"
        executable.export_library(str(path), fcompile=cc.cross_compiler(compiler))
        return path
    path = folder / f"{name}.tar"
    executable.export_library(str(path), fcompile=tar.tar)
    _logger.warning(
        "no cross compiler for %s host code: wrote the object files as %s; link them on the "
        "device, or install one (Debian: apt-get install g++-aarch64-linux-gnu)",
        arch or "this target's",
        path.name,
    )
    return path
