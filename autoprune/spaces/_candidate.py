"""The :class:`Candidate` record: one compact architecture proposed from a search space."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from autoprune.errors import ConfigError
from autoprune.spaces._quantizers import MIN_WEIGHT_BITS, check_bits

__all__ = ["Candidate"]

Pairs = tuple[tuple[str, int], ...]

_FIELDS = (
    "model",
    "num_classes",
    "in_channels",
    "input_shape",
    "channels",
    "blocks",
    "weight_bits",
    "activation_bits",
    "ranks",
)


def natural_key(name: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key that orders ``layer1.2`` before ``layer1.10``."""
    return tuple(
        (0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"(\d+)", name) if part
    )


def _positive_int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"`{what}` must be a positive integer, but got {value!r}")
    return value


def _pairs(value: Mapping[str, int] | Iterable[tuple[str, int]], what: str) -> Pairs:
    items = list(value.items()) if isinstance(value, Mapping) else [tuple(p) for p in value]
    out: dict[str, int] = {}
    for item in items:
        if len(item) != 2 or not isinstance(item[0], str):
            raise ConfigError(f"`{what}` must map names to integers, but got the entry {item!r}")
        name, number = item
        if name in out:
            raise ConfigError(f"`{what}` names {name!r} twice; give each name once")
        out[name] = _positive_int(number, f"{what}[{name!r}]")
    return tuple(sorted(out.items(), key=lambda kv: natural_key(kv[0])))


@dataclass(frozen=True, kw_only=True)
class Candidate:
    """One architecture of a search space: what :func:`build_model` builds and what is cached.

    All counts are absolute. Names are module names of the *base* model (``create_model``);
    entries are stored sorted by name (natural order), so equal architectures compare equal
    and have the same :attr:`hash`. A group, stage or layer that is not listed is left as in the
    base model (full width, all blocks, float).

    Attributes:
        model: registry name of the base model, e.g. ``"resnet56"``.
        num_classes: classifier outputs.
        in_channels: input image channels.
        input_shape: deploy input shape ``(C, H, W)`` after resolution scaling, in pixels.
        channels: channel group name (its first root conv/linear) -> output channels kept.
        blocks: stage name -> blocks kept (the first ``k`` blocks of the stage).
        weight_bits: conv/linear layer name -> weight bit-width (32 = float; 1 = binary).
        activation_bits: conv/linear layer name -> bit-width of that layer's input (32 = float).
        ranks: conv/linear layer name -> rank of its low-rank split, in percent (1..99) of the
            layer's narrower side after the width cut (:mod:`._lowrank`); a layer not listed is
            not split. Left out of :meth:`to_dict` when empty, so candidates without it keep
            their hashes.

    Example:
        >>> c = Candidate(model="resnet20", num_classes=10, in_channels=1, input_shape=(1, 28, 28),
        ...               channels={"layer1.0.conv1": 8}, blocks={"layer3": 2})
        >>> c.hash == Candidate.from_dict(c.to_dict()).hash
        True
        >>> len(c.hash)
        12
    """

    model: str
    num_classes: int
    in_channels: int
    input_shape: tuple[int, int, int]
    channels: Pairs = ()
    blocks: Pairs = ()
    weight_bits: Pairs = ()
    activation_bits: Pairs = ()
    ranks: Pairs = ()

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model:
            raise ConfigError(f"`model` must be a model name, but got {self.model!r}")
        _positive_int(self.num_classes, "num_classes")
        _positive_int(self.in_channels, "in_channels")
        shape = tuple(self.input_shape)
        if len(shape) != 3:
            raise ConfigError(f"`input_shape` must be (C, H, W), but got {self.input_shape!r}")
        shape = tuple(_positive_int(s, "input_shape") for s in shape)
        if shape[0] != self.in_channels:
            raise ConfigError(
                f"`input_shape` {shape} has {shape[0]} channels but `in_channels` is "
                f"{self.in_channels}; make them agree"
            )
        object.__setattr__(self, "input_shape", shape)
        for name in ("channels", "blocks", "weight_bits", "activation_bits", "ranks"):
            object.__setattr__(self, name, _pairs(getattr(self, name), name))
        for layer, percent in self.ranks:
            if percent > 99:
                raise ConfigError(
                    f"`ranks[{layer!r}]` is {percent}, but a rank is a percent in 1..99; leave "
                    f"the layer out to keep it whole"
                )
        for layer, bits in self.weight_bits:
            check_bits(bits, what=f"weight_bits[{layer!r}]", lowest=MIN_WEIGHT_BITS)
        for layer, bits in self.activation_bits:
            check_bits(bits, what=f"activation_bits[{layer!r}]")

    def to_dict(self) -> dict[str, Any]:
        """A JSON/YAML-ready dict; :meth:`from_dict` inverts it.

        Example:
            >>> Candidate(model="resnet20", num_classes=10, in_channels=1,
            ...           input_shape=(1, 28, 28)).to_dict()["input_shape"]
            [1, 28, 28]
        """
        data = {
            "model": self.model,
            "num_classes": self.num_classes,
            "in_channels": self.in_channels,
            "input_shape": list(self.input_shape),
            "channels": dict(self.channels),
            "blocks": dict(self.blocks),
            "weight_bits": dict(self.weight_bits),
            "activation_bits": dict(self.activation_bits),
        }
        if self.ranks:
            data["ranks"] = dict(self.ranks)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Candidate:
        """Inverse of :meth:`to_dict`; unknown or missing keys raise :class:`ConfigError`.

        Example:
            >>> d = {"model": "resnet20", "num_classes": 10, "in_channels": 1,
            ...      "input_shape": [1, 28, 28], "blocks": {"layer1": 1}}
            >>> Candidate.from_dict(d).blocks
            (('layer1', 1),)
        """
        if not isinstance(data, Mapping):
            raise ConfigError(f"a candidate must be a mapping, but got {type(data).__name__}")
        unknown = sorted(set(data) - set(_FIELDS))
        if unknown:
            raise ConfigError(
                f"unknown candidate key(s) {unknown}; valid keys: {', '.join(_FIELDS)}"
            )
        missing = [k for k in _FIELDS[:4] if k not in data]
        if missing:
            raise ConfigError(f"candidate is missing required key(s) {missing}; add them")
        kwargs = {k: data[k] for k in _FIELDS if k in data}
        kwargs["input_shape"] = tuple(data["input_shape"])
        return cls(**kwargs)

    @property
    def hash(self) -> str:
        """12 hex characters of SHA-256 over the canonical JSON of :meth:`to_dict`.

        Stable across runs, processes and machines (sorted keys, no whitespace); used as the
        cache key for costs, latency and trained results.

        Example:
            >>> Candidate(model="resnet20", num_classes=10, in_channels=1,
            ...           input_shape=(1, 28, 28)).hash
            '6ac4c5cd55a0'
        """
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:12]
