"""Depth stages read from a model's graph: residual blocks that may become the identity.

A module is a *residual block* when its output has its input's shape and the input reaches the
output through additions only (``out = x + f(x)``, ``out = relu(x + f(x))``, or several
additions in a row as in a transformer block ``y = x + attn(x); out = y + mlp(y)``), so
replacing the module by ``nn.Identity`` keeps every shape downstream. The graph is autograd's,
recorded by one forward pass (on the ``meta`` device it costs nothing); no per-model list is
involved. The innermost such modules are the blocks.

A *stage* is a run of consecutive sibling blocks, preceded by its transition block when the
sibling just before the run is a module of the same class that is not residual (the block that
changes the stride or the width, as in ResNet's ``layer2.0``). Keeping the first ``k`` blocks of a
stage (``1 <= k <= n``) is a depth decision. A stage is named by its parent when it spans all of
the parent's children (``layer2``), else ``<parent>.<first>-<last>`` (``features.4-6``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["Stage", "find_stages"]

# Autograd nodes the identity path may cross: additions, and an activation after the last one
# (ResNet's ``relu(out + identity)``); the block's input stays a valid output when dropped.
_ADD_NODES = frozenset({"AddBackward0", "AddBackward1"})
_ACTIVATION_NODES = frozenset(
    {
        "ReluBackward0",
        "HardtanhBackward0",
        "SiluBackward0",
        "GeluBackward0",
        "HardswishBackward0",
        "LeakyReluBackward0",
        "EluBackward0",
        "MishBackward0",
    }
)


@dataclass(frozen=True)
class Stage:
    """A run of blocks whose later blocks can be dropped (depth search).

    ``blocks`` are module names in execution order; ``blocks[0]`` is always kept, and keeping the
    first ``k`` blocks and replacing the rest by ``nn.Identity`` is valid.

    Example:
        >>> Stage(name="layer1", blocks=("layer1.0", "layer1.1", "layer1.2")).num_blocks
        3
    """

    name: str
    blocks: tuple[str, ...]

    @property
    def num_blocks(self) -> int:
        """Number of blocks in the base model's stage."""
        return len(self.blocks)


def _reaches(node: object, target: object, *, seen_add: bool, budget: list[int]) -> bool:
    """Whether ``target`` is reached from ``node`` through additions (and activations above
    them)."""
    if node is None or budget[0] <= 0:
        return False
    budget[0] -= 1
    if node is target:
        return seen_add  # an in-place activation alone is not a residual block
    name = type(node).__name__
    if name in _ADD_NODES:
        return any(
            _reaches(nxt, target, seen_add=True, budget=budget)
            for nxt, _ in node.next_functions  # type: ignore[attr-defined]
        )
    if name in _ACTIVATION_NODES and not seen_add:
        return any(
            _reaches(nxt, target, seen_add=False, budget=budget)
            for nxt, _ in node.next_functions  # type: ignore[attr-defined]
        )
    return False


def _first_tensor(values: object) -> torch.Tensor | None:
    if isinstance(values, torch.Tensor):
        return values
    if isinstance(values, list | tuple):
        for value in values:
            if isinstance(value, torch.Tensor):
                return value
    return None


def residual_modules(model: nn.Module, input_shape: tuple[int, int, int]) -> list[str]:
    """Names of the modules of ``model`` that are residual blocks, in execution order.

    Runs ``model`` once in eval mode on zeros of shape ``(1, *input_shape)`` on the device of
    its parameters (``meta`` is free), then restores the train/eval modes.
    """
    names = {id(m): n for n, m in model.named_modules() if n}
    inputs: dict[str, object] = {}
    found: list[str] = []

    def pre_hook(module: nn.Module, args: tuple[object, ...]) -> None:
        x = _first_tensor(args)
        if x is not None and x.requires_grad:
            inputs[names[id(module)]] = x.grad_fn

    def hook(module: nn.Module, args: tuple[object, ...], output: object) -> None:
        name = names[id(module)]
        x, node = _first_tensor(args), inputs.pop(name, None)
        if not isinstance(output, torch.Tensor) or x is None or node is None:
            return
        if output.shape == x.shape and output.grad_fn is not node:
            if _reaches(output.grad_fn, node, seen_add=False, budget=[64]):
                found.append(name)

    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    handles = []
    for module in model.modules():
        if id(module) in names:
            handles.append(module.register_forward_pre_hook(pre_hook))
            handles.append(module.register_forward_hook(hook))
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        with torch.enable_grad():
            # A grad-requiring stem output makes every later tensor part of the graph.
            x = torch.zeros(1, *input_shape, device=device, dtype=dtype)
            model(x * torch.ones((), device=device, dtype=dtype, requires_grad=True))
    finally:
        for h in handles:
            h.remove()
        for m, mode in modes:
            m.training = mode
    return found


def _innermost(names: list[str]) -> list[str]:
    inner = []
    for name in names:
        if not any(other != name and other.startswith(name + ".") for other in names):
            inner.append(name)
    return inner


def _runs(order: list[str], blocks: set[str]) -> Iterator[list[str]]:
    """Maximal runs of consecutive blocks among ``order`` (a parent's children, in order)."""
    run: list[str] = []
    for name in order:
        if name in blocks:
            run.append(name)
        else:
            if run:
                yield run
            run = []
    if run:
        yield run


def find_stages(model: nn.Module, input_shape: tuple[int, int, int]) -> tuple[Stage, ...]:
    """The depth stages of ``model`` at ``input_shape``, in execution order.

    Example:
        >>> import torchvision
        >>> with torch.device("meta"):
        ...     net = torchvision.models.resnet18(weights=None)
        >>> [(s.name, s.num_blocks) for s in find_stages(net, (3, 64, 64))]
        [('layer1', 2), ('layer2', 2), ('layer3', 2), ('layer4', 2)]
    """
    blocks = _innermost(residual_modules(model, input_shape))
    block_set = set(blocks)
    parents: dict[str, list[str]] = {}
    for name in blocks:
        parents.setdefault(name.rpartition(".")[0], [])
    stages: list[tuple[int, Stage]] = []
    position = {name: i for i, name in enumerate(blocks)}
    for parent in parents:
        container = model.get_submodule(parent) if parent else model
        children = [f"{parent}.{c}" if parent else c for c, _ in container.named_children()]
        for run in _runs(children, block_set):
            first = children.index(run[0])
            before = children[first - 1] if first > 0 else None
            if before is not None and type(model.get_submodule(before)) is type(
                model.get_submodule(run[0])
            ):
                run = [before, *run]
            if len(run) < 2:
                continue  # a lone block that is always kept has nothing to drop
            if len(run) == len(children):
                name = parent
            else:
                short = [n.rpartition(".")[2] for n in (run[0], run[-1])]
                name = f"{parent}.{short[0]}-{short[1]}" if parent else f"{short[0]}-{short[1]}"
            stages.append((position[run[-1]], Stage(name=name, blocks=tuple(run))))
    stages.sort(key=lambda item: item[0])
    return tuple(stage for _, stage in stages)
