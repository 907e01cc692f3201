"""The search space over a base model: width, depth, resolution, bit-width and rank decisions."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from autoprune.errors import ConfigError
from autoprune.spaces._candidate import Candidate
from autoprune.spaces._lowrank import factorizable, pair_macs_ratio, rank_of
from autoprune.spaces._quantizers import MIN_WEIGHT_BITS, check_bits
from autoprune.spaces._sources import create_model
from autoprune.spaces._surgery import analyze, attention_modules, is_under

__all__ = ["Decision", "SearchSpace"]

Choice = int | float


@dataclass(frozen=True)
class Decision:
    """One categorical decision of a search space.

    Names (stable for the same space arguments):

    * ``width/<group>``: output channels kept by a channel group (absolute, rounded counts),
    * ``depth/<stage>``: blocks kept in a stage (``1..n``),
    * ``resolution``: input scale factor,
    * ``wbits/<layer>`` and ``abits/<layer>``: weight / input-activation bits (32 = float),
    * ``rank/<layer>``: low-rank split of the layer, as a ratio of its narrower side (1.0 = whole).

    Example:
        >>> d = Decision(name="depth/layer2", choices=(1, 2, 3))
        >>> Decision.from_dict(d.to_dict()) == d
        True
    """

    name: str
    choices: tuple[Choice, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "choices", tuple(self.choices))
        if not self.choices:
            raise ValueError(f"decision {self.name!r} has no choices")

    def to_dict(self) -> dict[str, Any]:
        """``{"name": ..., "choices": [...]}``, JSON-ready."""
        return {"name": self.name, "choices": list(self.choices)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Decision:
        """Inverse of :meth:`to_dict`."""
        return cls(name=str(data["name"]), choices=tuple(data["choices"]))


@dataclass(frozen=True)
class _Slot:
    """A decision before pruning single-choice ones: one choice means a fixed value."""

    name: str
    choices: tuple[Choice, ...]


def kept_channels(channels: int, ratio: float, multiple: int) -> int:
    """Channels kept by ``ratio`` of ``channels`` rounded to ``multiple`` (half up), at least
    ``multiple`` and never more than ``channels``.

    Example:
        >>> kept_channels(64, 0.25, 8), kept_channels(16, 0.25, 8), kept_channels(6, 0.5, 8)
        (16, 8, 6)
    """
    rounded = math.floor(ratio * channels / multiple + 0.5) * multiple
    return min(channels, max(multiple, rounded))


def _half_up(x: float) -> int:
    return math.floor(x + 0.5)


def _percent(ratio: float) -> int:
    return _half_up(ratio * 100)


def _float_seq(values: Sequence[float], what: str, *, upper: float | None) -> tuple[float, ...]:
    if isinstance(values, str) or not isinstance(values, Sequence) or not values:
        raise ConfigError(f"`{what}` must be a non-empty list of numbers, but got {values!r}")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v <= 0:
            raise ConfigError(f"`{what}` must hold positive numbers, but got {v!r} in {values!r}")
        if upper is not None and v > upper:
            raise ConfigError(
                f"`{what}` must hold numbers in (0, {upper}], but got {v!r}; e.g. (0.5, 1.0)"
            )
        out.append(float(v))
    return tuple(sorted(set(out)))


def _bits_seq(values: Sequence[int], what: str, lowest: int) -> tuple[int, ...]:
    if isinstance(values, str) or not isinstance(values, Sequence) or not values:
        raise ConfigError(f"`{what}` must be a non-empty list of bit-widths, but got {values!r}")
    return tuple(sorted({check_bits(v, what=what, lowest=lowest) for v in values}))


class SearchSpace:
    """Width, depth, resolution and bit-width decisions over a registered base model.

    Width decisions are one per *coupled channel group* of the base model, found with
    Torch-Pruning's ``DependencyGraph`` (so a residual stream is one decision and residual adds
    stay consistent); the classifier output and the input channels are never pruned. The choices
    are the distinct absolute channel counts ``kept_channels(C, r, channel_multiple)`` over the
    ``width_ratios`` ``r``. Depth decisions are blocks kept per stage (``1..n``; the first block
    of a stage is always kept). Resolution scales the deploy input ``(C, H, W)`` to
    ``(C, round(H*s), round(W*s))``. Bit-widths are per Conv2d/Linear layer, for its weights
    and for its input activation; 32 means float. Ranks (``rank_ratios`` below 1.0) split a
    Conv2d (one group) or Linear layer into two thin ones (:mod:`._lowrank`); a layer's choices
    are the ratios whose split has fewer MACs than the layer at the base widths (the smallest
    ratio of each distinct rank), plus 1.0 (whole): a layer no ratio makes cheaper has no rank
    decision.

    A decision with a single choice is not a decision: its value is fixed (``width_ratios=(1.0,)``
    keeps full width, ``weight_bits=(8,)`` makes every layer 8-bit). :attr:`decisions` are in a
    fixed order (width, depth, resolution, wbits, abits, rank; module order within each kind),
    the same every time for the same arguments.

    Example:
        >>> space = SearchSpace(model="resnet20", num_classes=10, in_channels=1,
        ...                     input_shape=(1, 28, 28), width_ratios=(0.5, 1.0), depth=True,
        ...                     resolution_scales=(1.0,), weight_bits=(32,),
        ...                     activation_bits=(32,), channel_multiple=8)
        >>> [d.name for d in space.decisions][:3]
        ['width/conv1', 'width/layer1.0.conv1', 'width/layer1.1.conv1']
        >>> space.decisions[0].choices
        (8, 16)
        >>> space.smallest().input_shape
        (1, 28, 28)
    """

    def __init__(
        self,
        *,
        model: str,
        num_classes: int,
        in_channels: int,
        input_shape: tuple[int, int, int],
        width_ratios: Sequence[float],
        depth: bool,
        resolution_scales: Sequence[float],
        weight_bits: Sequence[int],
        activation_bits: Sequence[int],
        channel_multiple: int,
        rank_ratios: Sequence[float] = (1.0,),
    ) -> None:
        shape = tuple(input_shape)
        if len(shape) != 3 or any(
            isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in shape
        ):
            raise ConfigError(
                f"`input_shape` must be three positive integers (C, H, W), but got {input_shape!r}"
            )
        if shape[0] != in_channels:
            raise ConfigError(
                f"`input_shape` {shape} has {shape[0]} channels but `in_channels` is "
                f"{in_channels}; make them agree"
            )
        if not isinstance(depth, bool):
            raise ConfigError(f"`depth` must be true or false, but got {depth!r}")
        if (
            isinstance(channel_multiple, bool)
            or not isinstance(channel_multiple, int)
            or (channel_multiple < 1)
        ):
            raise ConfigError(
                f"`channel_multiple` must be a positive integer, but got {channel_multiple!r}"
            )
        self.model = model
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.input_shape: tuple[int, int, int] = shape  # type: ignore[assignment]
        self.width_ratios = _float_seq(width_ratios, "width_ratios", upper=1.0)
        self.depth = depth
        self.resolution_scales = _float_seq(resolution_scales, "resolution_scales", upper=None)
        self.weight_bits = _bits_seq(weight_bits, "weight_bits", MIN_WEIGHT_BITS)
        self.activation_bits = _bits_seq(activation_bits, "activation_bits", 2)
        self.channel_multiple = channel_multiple
        self.rank_ratios = _float_seq(rank_ratios, "rank_ratios", upper=1.0)
        if self.rank_ratios[0] < 0.01:
            raise ConfigError(
                f"`rank_ratios` must be at least 0.01 (a rank is a whole percent), but got "
                f"{self.rank_ratios[0]!r}"
            )

        meta = create_model(model, num_classes=num_classes, in_channels=in_channels, device="meta")
        attention = attention_modules(meta)
        if attention:
            raise ConfigError(
                f"model {model!r} is a transformer (attention in {attention[0]}, ... "
                f"{len(attention)} modules): autoprune profiles it (autoprune profile "
                f"--model {model}) but cannot search it, because its width surgery does not keep "
                f"attention heads consistent; search a CNN"
            )
        base = analyze(model, num_classes, in_channels, self.input_shape)
        for scale in self.resolution_scales:  # fail now, not in trial 37
            analyze(model, num_classes, in_channels, self._scaled(scale))
        self._base = base

        slots: list[_Slot] = []
        for g in base.groups:
            multiple = math.lcm(channel_multiple, g.multiple)
            counts = {kept_channels(g.channels, r, multiple) for r in self.width_ratios}
            slots.append(_Slot(f"width/{g.name}", tuple(sorted(counts))))
        for s in base.stages:
            choices = tuple(range(1, s.num_blocks + 1)) if depth else (s.num_blocks,)
            slots.append(_Slot(f"depth/{s.name}", choices))
        slots.append(_Slot("resolution", self.resolution_scales))
        slots += [_Slot(f"wbits/{n}", self.weight_bits) for n in base.layers]
        slots += [_Slot(f"abits/{n}", self.activation_bits) for n in base.layers]
        for name in base.layers:
            slots.append(_Slot(f"rank/{name}", self._rank_choices(meta.get_submodule(name))))
        self._slots = tuple(slots)
        self.decisions: tuple[Decision, ...] = tuple(
            Decision(name=s.name, choices=s.choices) for s in slots if len(s.choices) > 1
        )
        self._by_name = {d.name: d for d in self.decisions}

    def _rank_choices(self, layer: Any) -> tuple[float, ...]:
        """1.0, and the ratios whose split saves MACs at the base widths, one per distinct rank."""
        if not factorizable(layer):
            return (1.0,)
        ranks: dict[int, float] = {}
        for ratio in self.rank_ratios:
            if ratio < 1 and pair_macs_ratio(layer, _percent(ratio)) < 1:
                ranks.setdefault(rank_of(layer, _percent(ratio)), ratio)
        return (*ranks.values(), 1.0)

    def __repr__(self) -> str:
        return (
            f"SearchSpace(model={self.model!r}, input_shape={self.input_shape}, "
            f"decisions={len(self.decisions)})"
        )

    @property
    def channel_groups(self) -> tuple[tuple[str, int], ...]:
        """Base-model channel groups: ``(name, channels)`` in module order.

        Example: ``(("conv1", 16), ("layer1.0.conv1", 16), ...)`` for resnet20.
        """
        return tuple((g.name, g.channels) for g in self._base.groups)

    @property
    def stages(self) -> tuple[tuple[str, int], ...]:
        """Base-model depth stages: ``(name, blocks)``, e.g. ``(("layer1", 3), ...)``."""
        return tuple((s.name, s.num_blocks) for s in self._base.stages)

    def _scaled(self, scale: float) -> tuple[int, int, int]:
        c, h, w = self.input_shape
        return (c, max(1, _half_up(h * scale)), max(1, _half_up(w * scale)))

    def candidate(self, params: Mapping[str, Choice]) -> Candidate:
        """The candidate for ``params`` (decision name -> chosen value, every decision once).

        Raises:
            ConfigError: a decision is missing, a name is not a decision of this space, or a value
                is not one of the decision's choices (the message names it and its choices).

        Example:
            >>> space = SearchSpace(model="resnet20", num_classes=10, in_channels=1,
            ...                     input_shape=(1, 28, 28), width_ratios=(1.0,), depth=True,
            ...                     resolution_scales=(0.5, 1.0), weight_bits=(32,),
            ...                     activation_bits=(32,), channel_multiple=8)
            >>> c = space.candidate({"depth/layer1": 1, "depth/layer2": 3, "depth/layer3": 2,
            ...                      "resolution": 0.5})
            >>> c.input_shape, dict(c.blocks)["layer1"]
            ((1, 14, 14), 1)
        """
        if not isinstance(params, Mapping):
            raise ConfigError(
                f"params must map decision names to values, but got {type(params).__name__}"
            )
        unknown = [k for k in params if k not in self._by_name]
        if unknown:
            names = [d.name for d in self.decisions]
            shown = ", ".join(names[:8]) + (
                f", ... ({len(names)} in all)" if len(names) > 8 else ""
            )
            raise ConfigError(
                f"unknown decision(s) {unknown} for this search space; valid decisions: "
                f"{shown or '(none)'}"
            )
        missing = [d.name for d in self.decisions if d.name not in params]
        if missing:
            raise ConfigError(
                f"params lack decision(s) {missing[:8]}{' ...' if len(missing) > 8 else ''}; "
                f"give a value for every name in SearchSpace.decisions"
            )
        values: dict[str, Choice] = {}
        for slot in self._slots:
            if len(slot.choices) == 1:
                values[slot.name] = slot.choices[0]
                continue
            value = params[slot.name]
            match = [c for c in slot.choices if not isinstance(value, bool) and value == c]
            if not match:
                raise ConfigError(
                    f"decision {slot.name!r} got {value!r}; allowed values: {list(slot.choices)}"
                )
            values[slot.name] = match[0]
        return self._assemble(values)

    def _assemble(self, values: Mapping[str, Choice]) -> Candidate:
        base = self._base
        blocks = {s.name: int(values[f"depth/{s.name}"]) for s in base.stages}
        dropped = {b for s in base.stages for b in s.blocks[blocks[s.name] :]}
        channels = {
            g.name: int(values[f"width/{g.name}"])
            for g in base.groups
            if not all(is_under(r, dropped) for r in g.roots)
        }
        live = [n for n in base.layers if not is_under(n, dropped)]
        return Candidate(
            model=self.model,
            num_classes=self.num_classes,
            in_channels=self.in_channels,
            input_shape=self._scaled(float(values["resolution"])),
            channels=channels,
            blocks=blocks,
            weight_bits={n: int(values[f"wbits/{n}"]) for n in live},
            activation_bits={n: int(values[f"abits/{n}"]) for n in live},
            ranks={n: _percent(r) for n in live if (r := values[f"rank/{n}"]) < 1},
        )

    def _extreme(self, pick: Any) -> Candidate:
        return self._assemble({s.name: pick(s.choices) for s in self._slots})

    def largest(self) -> Candidate:
        """Every decision at its largest choice: the base model (at the largest resolution and
        bit-widths of the space).

        Example:
            >>> space = SearchSpace(model="resnet20", num_classes=10, in_channels=1,
            ...                     input_shape=(1, 28, 28), width_ratios=(0.5, 1.0), depth=True,
            ...                     resolution_scales=(1.0,), weight_bits=(8, 32),
            ...                     activation_bits=(32,), channel_multiple=8)
            >>> dict(space.largest().channels)["conv1"], dict(space.largest().weight_bits)["fc"]
            (16, 32)
        """
        return self._extreme(max)

    def smallest(self) -> Candidate:
        """Every decision at its smallest choice (narrowest, shallowest, lowest resolution and
        bit-widths)."""
        return self._extreme(min)
