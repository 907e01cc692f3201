"""TVM basics every backend shares: import a PyTorch model to Relax, resolve a target, build.

The path is TVM 0.27's (``docs/tvm.md``): ``torch.export.export`` -> ``from_exported_program``
-> ``tvm.compile`` -> ``relax.VirtualMachine``. Targets are dict-form (``{"kind": "llvm",
"mtriple": ..., "num-cores": ...}``) or tags (``"nvidia/jetson-orin-nano"``), as
:meth:`DeviceProfile.tvm_target_spec` returns them; a local LLVM target gets this CPU's ``mcpu``
at build time (:func:`resolve_target`).

This module imports no other backend module (no tuning, no measuring), so every one of them
can import it. ``tvm`` itself is imported inside the functions, so importing autoprune does not
load TVM.
"""

from __future__ import annotations

import platform
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from torch import nn

from autoprune._interrupts import interrupts_deferred
from autoprune.errors import ConfigError
from autoprune.hwprofiles._profile import DeviceProfile
from autoprune.hwprofiles._records import check_input_shape, default_threads
from autoprune.hwprofiles._registry import load_profile
from autoprune.hwprofiles._workers import example_input

if TYPE_CHECKING:
    import tvm
    from torch.export import ExportedProgram

__all__ = [
    "TargetSpec",
    "build_for_target",
    "export_program",
    "host_arch",
    "import_to_relax",
    "is_local_target",
    "local_profile",
    "profile_threads",
    "resolve_target",
    "translate",
]

#: A TVM target as a profile gives it: a tag string, or a dict-form target.
TargetSpec = str | Mapping[str, Any]


def import_to_relax(
    model: nn.Module, input_shape: tuple[int, int, int], *, decompose: bool = True
) -> tvm.IRModule:
    """Import ``model`` (set to eval mode) at batch 1 into a Relax ``IRModule``.

    ``torch.export.export(model.eval(), (randn(1, *input_shape),))`` then TVM's
    ``from_exported_program``; the module's ``main`` takes one ``(1, C, H, W)`` float32 tensor
    and returns a 1-tuple. With ``decompose`` (what a build uses), PyTorch's decompositions run
    first (most of the import's time); without, TVM translates the exported ops as they are.
    :func:`export_program` and :func:`translate` are its two halves.

    Raises:
        ConfigError: ``input_shape`` is not three positive integers.
        Exception: whatever ``torch.export`` or the TVM frontend raise for an op they do not
            support (e.g. ``AssertionError: Unsupported function types ['rrelu_...']``).

    Example:
        >>> from torch import nn
        >>> mod = import_to_relax(nn.Conv2d(1, 8, 3), (1, 16, 16))
        >>> "main" in [gv.name_hint for gv in mod.get_global_vars()]
        True
    """
    return translate(export_program(model, input_shape), decompose=decompose)


def export_program(model: nn.Module, input_shape: tuple[int, int, int]) -> ExportedProgram:
    """``torch.export.export(model.eval(), (randn(1, *input_shape),))``: what :func:`translate`
    turns into Relax, once or both ways.

    Raises:
        ConfigError: ``input_shape`` is not three positive integers.
    """
    import torch

    shape = check_input_shape(input_shape)
    with interrupts_deferred():  # Ctrl-C inside its C++ callbacks can abort the process
        return torch.export.export(model.eval(), (example_input(shape),))


def translate(exported: ExportedProgram, *, decompose: bool = True) -> tvm.IRModule:
    """TVM's ``from_exported_program`` of ``exported`` (left unchanged), with or without
    PyTorch's decompositions first."""
    from tvm.relax.frontend.torch import from_exported_program

    with interrupts_deferred():
        return from_exported_program(exported, run_ep_decomposition=decompose)


def host_arch() -> str:
    """This machine's CPU architecture as LLVM triples name it (``"x86_64"``, ``"aarch64"``)."""
    arch = platform.machine().lower()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(arch, arch)


def is_local_target(target_spec: TargetSpec) -> bool:
    """Whether code built for ``target_spec`` runs on this host's CPU.

    True for ``"llvm"`` and for a dict-form LLVM target whose ``mtriple`` (if any) names this
    machine's architecture; false for tags (``"nvidia/jetson-nano"``) and cross targets.

    Example:
        >>> is_local_target({"kind": "llvm", "mtriple": "x86_64-linux-gnu"})  # on x86_64
        True
        >>> is_local_target("nvidia/jetson-orin-nano")
        False
    """
    if isinstance(target_spec, str):
        return target_spec.strip() == "llvm"
    if target_spec.get("kind") != "llvm":
        return False
    triple = str(target_spec.get("mtriple", ""))
    return not triple or triple.split("-")[0].lower() == host_arch()


def resolve_target(target_spec: TargetSpec) -> str | dict[str, Any]:
    """The target to build with: a local LLVM target gets this CPU's ``mcpu``.

    LLVM rejects ``mcpu=native`` with the ``x86_64-linux-gnu`` triple and the plain ``"llvm"``
    target carries a conda triple (``docs/tvm.md``), so the host's CPU name is asked of LLVM
    (``tvm.target.codegen.llvm_get_system_cpu()``) at build time; it is not in the profile
    because it is per machine. Other targets are returned unchanged; an explicit ``mcpu`` is
    kept.

    Example:
        >>> import tvm
        >>> spec = {"kind": "llvm", "mtriple": "x86_64-linux-gnu", "num-cores": 2}
        >>> resolve_target(spec)["mcpu"] == tvm.target.codegen.llvm_get_system_cpu()
        True
        >>> resolve_target({**spec, "mcpu": "rocketlake"})["mcpu"]
        'rocketlake'
        >>> resolve_target("nvidia/jetson-orin-nano")
        'nvidia/jetson-orin-nano'
    """
    if isinstance(target_spec, str):
        if target_spec.strip() != "llvm":
            return target_spec
        target_spec = {"kind": "llvm", "mtriple": f"{host_arch()}-linux-gnu"}
    spec = dict(target_spec)
    if is_local_target(spec) and "mcpu" not in spec:
        import tvm

        spec["mcpu"] = tvm.target.codegen.llvm_get_system_cpu()
    return spec


def build_for_target(mod: tvm.IRModule, target_spec: TargetSpec) -> tvm.runtime.Executable:
    """Compile a Relax module with ``tvm.compile`` for ``target_spec`` (via :func:`resolve_target`).

    ``target_spec`` is a tag string or a dict-form target, as
    :meth:`DeviceProfile.tvm_target_spec` returns it (CLI strings like ``"llvm -mcpu=x"`` are
    rejected by TVM 0.27). The default pipeline is used: no tuning.

    Example:
        >>> ex = build_for_target(import_to_relax(nn.Conv2d(1, 8, 3), (1, 16, 16)),
        ...                       load_profile("host").tvm_target_spec())
        >>> type(ex).__name__
        'VMExecutable'
    """
    import tvm

    return tvm.compile(mod, target=tvm.target.Target(resolve_target(target_spec)))


def profile_threads(profile: DeviceProfile) -> int:
    """CPU threads for code built for ``profile``: its target's ``num-cores``, else the cores
    this process may use."""
    spec = profile.tvm_target_spec()
    cores = spec.get("num-cores") if isinstance(spec, Mapping) else None
    return int(cores) if cores else default_threads()


def local_profile(profile: DeviceProfile | str) -> DeviceProfile:
    """``profile`` (loaded by name if a string), checked to target this host's CPU.

    Raises:
        ConfigError: the profile's target does not run here (a board, a GPU, another
            architecture); the message names it and points to ``estimate_hardware()``.
        UnknownNameError: no profile of that name.
    """
    profile = load_profile(profile) if isinstance(profile, str) else profile
    spec = profile.tvm_target_spec()
    if not is_local_target(spec):
        raise ConfigError(
            f"profile {profile.name!r} targets {spec!r}, which does not run on this "
            f"{host_arch()} host; measured latency needs a local LLVM target (profile 'host'); "
            "use estimate_hardware() for other devices"
        )
    return profile
