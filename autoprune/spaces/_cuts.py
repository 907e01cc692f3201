"""Width cuts recorded once and replayed: Torch-Pruning's surgery without tracing again.

Tracing a model's channel dependencies (``tp.DependencyGraph().build_dependency``) is the
costly part of :func:`~autoprune.spaces.build_model` on large graphs (a DenseNet's
concatenations most), and a trial builds its candidate several times (costs, training, test
split), while what the pruning does is fixed by the architecture: which named layer or
parameter loses which indices along which dimension. So the first build of an architecture
records those :class:`Cut` s (:func:`prune_recording`) and later builds of the same
architecture replay them on a fresh model (:func:`replay`): the same layers, in the same order,
with the same indices.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from torch import nn

if TYPE_CHECKING:
    import torch_pruning as tp

__all__ = ["Cut", "prune_recording", "recorded_cuts", "remember_cuts", "replay"]

#: Architectures whose cuts are kept per process (a search holds a few hundred at most).
_CAPACITY = 512
_recorded: OrderedDict[Hashable, tuple[Cut, ...]] = OrderedDict()


@dataclass(frozen=True)
class Cut:
    """One pruning call: ``handler(target, idxs)`` along dimension ``dim`` of the module or
    (``parameter``) the unwrapped ``nn.Parameter`` named ``target``, which it replaces."""

    target: str
    parameter: bool
    handler: Callable[[Any, list[int]], Any]
    dim: int
    idxs: tuple[int, ...]


def _plain(idxs: Sequence[Any]) -> tuple[int, ...]:
    """Torch-Pruning's indices (ints, or ``_HybridIndex`` with ``.idx``) as plain ints."""
    return tuple(int(getattr(i, "idx", i)) for i in idxs)


def prune_recording(group: tp.Group, idxs: list[int], names: dict[Any, str]) -> list[Cut]:
    """Prune channels ``idxs`` of ``group`` (as ``group.prune(idxs)`` does) and return the cuts
    made on the modules and parameters ``names`` names, in order. Torch-Pruning's own graph
    nodes (concatenation, split, reshape) are not in ``names``: their indices are already
    mapped into each layer's cut."""
    root = group[0].dep
    full = group._DG.get_pruning_group(root.target.module, root.handler, idxs)
    cuts = [
        Cut(
            target=names[dep.target.module],
            parameter=isinstance(dep.target.module, nn.Parameter),
            handler=dep.handler,
            dim=dep.target.pruning_dim,
            idxs=_plain(dep_idxs),
        )
        for dep, dep_idxs in full
        if dep.target.module in names
    ]
    full.prune()
    return cuts


def replay(model: nn.Module, cuts: Sequence[Cut]) -> None:
    """Make ``cuts`` on ``model`` (the architecture they were recorded on, unpruned), in place."""
    for cut in cuts:
        cut.handler.__self__.pruning_dim = cut.dim  # type: ignore[attr-defined]
        if cut.parameter:
            parent_name, _, attr = cut.target.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, attr, cut.handler(getattr(parent, attr), list(cut.idxs)))
        else:
            cut.handler(model.get_submodule(cut.target), list(cut.idxs))


def recorded_cuts(key: Hashable) -> tuple[Cut, ...] | None:
    """The cuts remembered for architecture ``key``, or ``None``."""
    cuts = _recorded.get(key)
    if cuts is not None:
        _recorded.move_to_end(key)
    return cuts


def remember_cuts(key: Hashable, cuts: Sequence[Cut]) -> None:
    """Keep ``cuts`` for architecture ``key`` (the least recently used go first)."""
    _recorded[key] = tuple(cuts)
    _recorded.move_to_end(key)
    while len(_recorded) > _CAPACITY:
        _recorded.popitem(last=False)
