"""Run configuration: YAML and CLI overrides -> frozen dataclasses, validated at the boundary.

A config has seven sections (``model``, ``data``, ``space``, ``training``, ``evaluator``,
``search``, ``hardware``) plus the ``target`` device and the ``budgets``. Every key is
type-checked; an unknown key, a wrong type or an out-of-range value raises
:class:`~autoprune.errors.ConfigError` naming the dotted key, the bad value and what is
allowed. Budget strings (``"2gflops"``, ``"15ms"``) are parsed here, once, into
:class:`Budget` records with SI units in their metric names.

Example:
    >>> cfg = load_config("configs/default.yaml", overrides=["search.trials=4"])
    >>> cfg.search.trials
    4
    >>> parse_budget("2GFLOPs")
    Budget(metric='macs', limit=2000000000.0, spec='2gflops')
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from autoprune.errors import ConfigError

__all__ = [
    "BUDGET_UNITS",
    "DEFAULT_CONFIG",
    "Budget",
    "Config",
    "DataConfig",
    "EvaluatorConfig",
    "HardwareConfig",
    "LATENCY_MODES",
    "ModelConfig",
    "SearchConfig",
    "SpaceConfig",
    "TrainingConfig",
    "apply_overrides",
    "config_from_dict",
    "load_config",
    "parse_budget",
]

#: The embedded default: Fashion-MNIST, CIFAR-style resnet20, deployed at 1x28x28 on Jetson.
DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "default.yaml"

#: Budget unit -> (metric, multiplier to the metric's unit). "FLOPs" are multiply-accumulates,
#: the convention of torchvision's weight metadata (ResNet-50 at 224x224 = 4.09 GFLOPs).
BUDGET_UNITS: dict[str, tuple[str, float]] = {
    "gflops": ("macs", 1e9),
    "mflops": ("macs", 1e6),
    "ms": ("latency_ms", 1.0),
    "us": ("latency_ms", 1e-3),
    "mj": ("energy_mj", 1.0),
    "uj": ("energy_mj", 1e-3),
    "mb": ("size_bytes", 1e6),
    "kb": ("size_bytes", 1e3),
    "mparams": ("params", 1e6),
    "kparams": ("params", 1e3),
}

#: ``auto`` or ``HOST:PORT`` (a host name, IPv4 address or bracketed IPv6 address).
_RAY_ADDRESS_RE = re.compile(r"^(auto|(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):[0-9]{1,5})$")
_BUDGET_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([a-z]+)\s*$")


@dataclass(frozen=True)
class Budget:
    """A hard constraint on one cost of a candidate, in the metric's own unit.

    ``metric`` is one of ``macs``, ``latency_ms``, ``energy_mj``, ``size_bytes``, ``params``;
    ``limit`` is in that unit (a ``2gflops`` budget has ``limit=2e9`` MACs); ``spec`` is the
    normalised string the user gave.
    """

    metric: str
    limit: float
    spec: str

    def violation(self, value: float) -> float:
        """Relative excess over the limit: ``<= 0`` when the budget holds (Optuna's convention)."""
        return (value - self.limit) / self.limit

    def describe(self, value: float | None = None) -> str:
        """Human form of the limit, or of ``value`` in the budget's unit (``"0.041 GFLOPs"``)."""
        number = self.limit if value is None else value
        unit = self.spec.lstrip("0123456789.e+-")
        _, scale = BUDGET_UNITS[unit]
        pretty = {
            "gflops": "GFLOPs",
            "mflops": "MFLOPs",
            "mparams": "M params",
            "kparams": "k params",
            "mb": "MB",
            "kb": "kB",
            "mj": "mJ",
            "uj": "uJ",
            "ms": "ms",
            "us": "us",
        }[unit]
        return f"{number / scale:.4g} {pretty}"


def parse_budget(spec: str) -> Budget:
    """Parse ``<number><unit>`` (case-insensitive) into a :class:`Budget`.

    Units: ``gflops|mflops`` (multiply-accumulates), ``ms|us`` (latency on the target),
    ``mj|uj`` (energy per inference), ``mb|kb`` (model size at the chosen bit-widths),
    ``mparams|kparams``.

    Example:
        >>> parse_budget("15ms").limit
        15.0
    """
    text = str(spec).strip().lower()
    match = _BUDGET_RE.match(text)
    allowed = "|".join(BUDGET_UNITS)
    if text.startswith("-"):
        raise ConfigError(
            f"budget {spec!r} is negative; a budget is a positive <number><unit>, "
            f"e.g. 2gflops or 15ms (units: {allowed})"
        )
    if match is None:
        raise ConfigError(
            f"budget {spec!r} is not <number><unit>; write e.g. 2gflops, 15ms, "
            f"5mj, 4mb or 1.5mparams (units: {allowed})"
        )
    number, unit = float(match.group(1)), match.group(2)
    if unit not in BUDGET_UNITS:
        raise ConfigError(f"budget {spec!r} has unknown unit {unit!r}; allowed units: {allowed}")
    if not math.isfinite(number) or number <= 0:
        raise ConfigError(f"budget {spec!r} must be positive, e.g. 2gflops or 15ms")
    metric, scale = BUDGET_UNITS[unit]
    return Budget(metric=metric, limit=number * scale, spec=f"{match.group(1)}{unit}")


@dataclass(frozen=True)
class ModelConfig:
    """The base model: a name from ``autoprune.spaces.list_models()``."""

    name: str = "resnet20"
    num_classes: int = 10
    in_channels: int = 1

    def __post_init__(self) -> None:
        _require(self.num_classes >= 2, "model.num_classes", self.num_classes, "an int >= 2")
        _require(self.in_channels >= 1, "model.in_channels", self.in_channels, "an int >= 1")


@dataclass(frozen=True)
class DataConfig:
    """Where the data come from and the deploy input shape (C, H, W) costs are computed at.

    ``dataset`` is a name from ``autoprune.evaluators.list_datasets()``: ``fashion-mnist``,
    ``mnist``, ``cifar10``, ``cifar100``, ``imagefolder`` or ``synthetic``. ``root`` (``null``:
    the data set's default) is where its files are. ``download`` lets ``cifar10`` / ``cifar100``
    fetch missing files from the network; nothing is downloaded without it. ``imagefolder``
    decodes its images to ``input_shape`` with ``num_workers`` processes (``null``:
    ``min(4, CPUs)``).
    """

    dataset: str = "fashion-mnist"
    root: str | None = None
    val_samples: int = 5000
    input_shape: tuple[int, int, int] = (1, 28, 28)
    download: bool = False
    num_workers: int | None = None

    def __post_init__(self) -> None:
        _require(self.val_samples >= 1, "data.val_samples", self.val_samples, "an int >= 1")
        _require(
            self.num_workers is None or self.num_workers >= 0,
            "data.num_workers",
            self.num_workers,
            "an int >= 0 (0 decodes in the main process) or null for min(4, CPUs)",
        )
        _require(
            all(d >= 1 for d in self.input_shape),
            "data.input_shape",
            self.input_shape,
            "three positive ints C, H, W",
        )


@dataclass(frozen=True)
class SpaceConfig:
    """What the controller may change: width keep-ratios, depth, resolution, bit-widths."""

    width_ratios: tuple[float, ...] = (0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0)
    depth: bool = True
    resolution_scales: tuple[float, ...] = (1.0,)
    weight_bits: tuple[int, ...] = (32,)
    activation_bits: tuple[int, ...] = (32,)

    def __post_init__(self) -> None:
        _require(
            bool(self.width_ratios) and all(0 < r <= 1 for r in self.width_ratios),
            "space.width_ratios",
            self.width_ratios,
            "a non-empty list of ratios in (0, 1]",
        )
        _require(
            bool(self.resolution_scales) and all(0 < s <= 1 for s in self.resolution_scales),
            "space.resolution_scales",
            self.resolution_scales,
            "a non-empty list of scales in (0, 1]",
        )
        for key, bits in (
            ("space.weight_bits", self.weight_bits),
            ("space.activation_bits", self.activation_bits),
        ):
            _require(
                bool(bits) and all(2 <= b <= 32 for b in bits),
                key,
                bits,
                "a non-empty list of bit-widths in 2..32 (32 = float)",
            )


@dataclass(frozen=True)
class TrainingConfig:
    """Training fidelity and optimiser for the from-scratch evaluation of every candidate.

    ``samples`` training images (``null`` = all), ``epochs`` passes, at ``resolution_scale`` times
    the candidate's deploy resolution; SGD with Nesterov momentum and a one-cycle schedule.
    """

    samples: int | None = 20000
    epochs: int = 2
    resolution_scale: float = 1.0
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4

    def __post_init__(self) -> None:
        _require(
            self.samples is None or self.samples >= 1,
            "training.samples",
            self.samples,
            "an int >= 1 or null for all",
        )
        _require(self.epochs >= 1, "training.epochs", self.epochs, "an int >= 1")
        _require(
            0 < self.resolution_scale <= 1,
            "training.resolution_scale",
            self.resolution_scale,
            "a number in (0, 1]",
        )
        _require(self.batch_size >= 1, "training.batch_size", self.batch_size, "an int >= 1")
        _require(self.lr > 0, "training.lr", self.lr, "a positive number")
        _require(0 <= self.momentum < 1, "training.momentum", self.momentum, "a number in [0, 1)")
        _require(
            self.weight_decay >= 0, "training.weight_decay", self.weight_decay, "a number >= 0"
        )


@dataclass(frozen=True)
class EvaluatorConfig:
    """How a candidate's accuracy is obtained (``autoprune.evaluators``; Liu et al., ICLR 2019).

    ``name``: ``scratch-e`` (from scratch, the training epochs), ``scratch-b`` (from scratch, the
    base model's compute: epochs times base/candidate MACs, at most ``scratch_b_cap`` times),
    ``finetune`` (the trained base's L1-largest channels, fine-tuned ``finetune_epochs`` at peak
    learning rate ``finetune_lr``), ``distill`` (from scratch with the trained base as teacher,
    softened at ``distill_temperature``, soft-target share ``distill_weight``) or ``proxy`` (a
    zero-cost score of the untrained network, ``proxy``: ``log_synflow`` or ``naswot``). In YAML,
    ``evaluator: distill`` is short for ``evaluator: {name: distill}``.
    """

    name: str = "scratch-e"
    scratch_b_cap: float = 2.0
    finetune_epochs: int | None = None
    finetune_lr: float = 0.01
    distill_temperature: float = 4.0
    distill_weight: float = 0.9
    proxy: str = "log_synflow"

    def __post_init__(self) -> None:
        _require(
            self.scratch_b_cap >= 1, "evaluator.scratch_b_cap", self.scratch_b_cap, "a number >= 1"
        )
        _require(
            self.finetune_epochs is None or self.finetune_epochs >= 1,
            "evaluator.finetune_epochs",
            self.finetune_epochs,
            "an int >= 1, or null for training.epochs",
        )
        _require(
            self.finetune_lr > 0, "evaluator.finetune_lr", self.finetune_lr, "a positive number"
        )
        _require(
            self.distill_temperature > 0,
            "evaluator.distill_temperature",
            self.distill_temperature,
            "a positive number",
        )
        _require(
            0 <= self.distill_weight <= 1,
            "evaluator.distill_weight",
            self.distill_weight,
            "a number in [0, 1]",
        )


#: Early-stopping rules of ``search.early_stopping``.
EARLY_STOPPING = ("none", "dominated")


@dataclass(frozen=True)
class SearchConfig:
    """The controller and the trial budget.

    ``trials`` counts the study's finished trials in total, so running the same command again on
    the same run directory only runs the ones still missing; ``timeout_s`` bounds one invocation.
    ``include_base`` makes the unpruned base model the first trial: the reference every
    compressed candidate is compared with (over budget, it is recorded infeasible, untrained).
    ``repair`` shrinks a proposal over a MACs, params or size budget until it fits, before
    training (see ``autoprune.search._repair``); off, such a proposal is recorded infeasible.

    Parallel trials run as Ray Tune trials (``autoprune.search._ray``): ``ray_address`` is a
    running cluster (``HOST:PORT`` of its head, or ``auto``); ``workers > 1`` without it starts a
    local Ray instance. ``workers`` is the most trials that run at once; each reserves
    ``cpus_per_trial`` CPUs and ``gpus_per_trial`` GPUs; a trial whose worker died is re-run
    with the same params up to ``max_failures`` times before it is recorded as failed.

    ``early_stopping: dominated`` stops a candidate's training after an epoch at which a trial
    at least as cheap on latency and energy was ``early_stopping_margin`` more accurate, once
    ``early_stopping_min_trials`` trials reached that epoch (``autoprune.search._early_stopping``);
    the trial is recorded as pruned with its last accuracy.
    """

    controller: str = "nsga2"
    trials: int = 12
    timeout_s: float | None = None
    seed: int = 0
    population_size: int = 8
    include_base: bool = True
    repair: bool = True
    workers: int = 1
    ray_address: str | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_failures: int = 2
    early_stopping: str = "none"
    early_stopping_margin: float = 0.02
    early_stopping_min_trials: int = 3

    def __post_init__(self) -> None:
        _require(
            self.early_stopping in EARLY_STOPPING,
            "search.early_stopping",
            self.early_stopping,
            "none, or dominated (stop a candidate that a cheaper trial beat by "
            "early_stopping_margin at the same epoch)",
        )
        _require(
            0 <= self.early_stopping_margin <= 1,
            "search.early_stopping_margin",
            self.early_stopping_margin,
            "an accuracy difference in [0, 1], e.g. 0.02",
        )
        _require(
            self.early_stopping_min_trials >= 1,
            "search.early_stopping_min_trials",
            self.early_stopping_min_trials,
            "an int >= 1",
        )
        _require(self.trials >= 1, "search.trials", self.trials, "an int >= 1")
        _require(
            self.workers >= 1,
            "search.workers",
            self.workers,
            "an int >= 1 (the most trials that run at once)",
        )
        _require(
            self.ray_address is None or _RAY_ADDRESS_RE.match(self.ray_address) is not None,
            "search.ray_address",
            self.ray_address,
            "auto or HOST:PORT of a running Ray cluster's head (`ray start --head` prints it), "
            "or null to run locally",
        )
        _require(
            self.cpus_per_trial > 0,
            "search.cpus_per_trial",
            self.cpus_per_trial,
            "a positive number of CPUs (fractions share a CPU)",
        )
        _require(
            self.gpus_per_trial >= 0,
            "search.gpus_per_trial",
            self.gpus_per_trial,
            "a number of GPUs >= 0 (fractions share a GPU)",
        )
        _require(
            self.max_failures >= 0,
            "search.max_failures",
            self.max_failures,
            "an int >= 0 (re-runs of a trial whose Ray worker died)",
        )
        _require(
            self.timeout_s is None or self.timeout_s > 0,
            "search.timeout_s",
            self.timeout_s,
            "a positive number of seconds or null",
        )
        _require(self.seed >= 0, "search.seed", self.seed, "an int >= 0")
        _require(
            self.population_size >= 2, "search.population_size", self.population_size, "an int >= 2"
        )


#: How latency is obtained: measured where the target is reachable, else estimated (``auto``).
LATENCY_MODES = ("auto", "measured", "estimated")


@dataclass(frozen=True)
class HardwareConfig:
    """Where latency comes from: ``auto`` measures TVM-built code where the target is reachable
    (``host`` here, or a board behind ``rpc_tracker``) and estimates it elsewhere.

    ``tuning_trials_per_task``: measured on this host, kernels are first tuned with MetaSchedule,
    this many trials per fused kernel that the run's shared tuning database does not hold yet
    (untuned TVM code is naive loops, 5-50x slower than tuned code; 0 measures it anyway).
    ``measure_timeout_s`` bounds each tuning, build and measurement, seconds."""

    latency: str = "auto"
    rpc_tracker: str | None = None
    rpc_key: str | None = None
    measure_timeout_s: float = 600.0
    tuning_trials_per_task: int = 4

    def __post_init__(self) -> None:
        _require(
            self.latency in LATENCY_MODES,
            "hardware.latency",
            self.latency,
            f"one of {', '.join(LATENCY_MODES)}",
        )
        _require(
            (self.rpc_tracker is None) == (self.rpc_key is None),
            "hardware.rpc_key",
            self.rpc_key,
            "given together with hardware.rpc_tracker (HOST:PORT)",
        )
        _require(
            self.measure_timeout_s > 0,
            "hardware.measure_timeout_s",
            self.measure_timeout_s,
            "a positive number of seconds",
        )
        _require(
            self.tuning_trials_per_task >= 0,
            "hardware.tuning_trials_per_task",
            self.tuning_trials_per_task,
            "an integer >= 0 (MetaSchedule trials per new fused kernel; 0 measures untuned code)",
        )


@dataclass(frozen=True)
class Config:
    """A whole, validated run configuration."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    space: SpaceConfig = field(default_factory=SpaceConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    evaluator: EvaluatorConfig = field(default_factory=EvaluatorConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    hardware: HardwareConfig = field(default_factory=HardwareConfig)
    target: str = "jetson"
    budgets: tuple[Budget, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Plain YAML-ready dict; ``config_from_dict(cfg.to_dict()) == cfg``."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "budgets":
                out[f.name] = [b.spec for b in value]
            elif dataclasses.is_dataclass(value):
                out[f.name] = {
                    k: list(v) if isinstance(v, tuple) else v
                    for k, v in dataclasses.asdict(value).items()
                }
            else:
                out[f.name] = value
        return out

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def _require(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{key} must be {allowed}, but got {value!r}")


_SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "data": DataConfig,
    "space": SpaceConfig,
    "training": TrainingConfig,
    "evaluator": EvaluatorConfig,
    "search": SearchConfig,
    "hardware": HardwareConfig,
}


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Check ``value`` against a field annotation; ints are accepted where floats are expected."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, key)
            except ConfigError as exc:
                errors.append(exc)
        names = " or ".join("null" if o is type(None) else _type_name(o) for o in options)
        raise ConfigError(f"{key} must be {names}, but got {value!r}")
    if origin is tuple:
        args = typing.get_args(annotation)
        if not isinstance(value, Sequence) or isinstance(value, str):
            raise ConfigError(f"{key} must be a list, but got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{key} must be a list of {len(args)} values, but got {value!r}")
        return tuple(
            _coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True))
        )
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key} must be true or false, but got {value!r}")
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key} must be an int, but got {value!r}")
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ConfigError(f"{key} must be a finite number, but got {value!r}")
            return float(value)
        raise ConfigError(f"{key} must be a number, but got {value!r}")
    if annotation is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key} must be a string, but got {value!r}")
    raise AssertionError(f"unsupported annotation {annotation!r} for {key}")


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is tuple:
        return "a list"
    return {int: "an int", float: "a number", str: "a string", bool: "true or false"}.get(
        annotation, str(annotation)
    )


def _section_from_mapping(cls: type, data: Any, section: str) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{section} must be a mapping of keys, but got {data!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(
            f"unknown key {section}.{unknown[0]}; valid keys in {section}: "
            f"{', '.join(sorted(known))}"
        )
    kwargs = {k: _coerce(v, hints[k], f"{section}.{k}") for k, v in data.items()}
    return cls(**kwargs)


def config_from_dict(data: Mapping[str, Any]) -> Config:
    """Validate a plain dict (as read from YAML) into a :class:`Config`."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"a config must be a mapping of sections, but got {data!r}")
    valid = [*_SECTIONS, "target", "budgets"]
    unknown = sorted(set(data) - set(valid))
    if unknown:
        raise ConfigError(f"unknown key {unknown[0]}; valid top-level keys: {', '.join(valid)}")
    if isinstance(data.get("evaluator"), str):  # `evaluator: distill` is short for {name: ...}
        data = {**data, "evaluator": {"name": data["evaluator"]}}
    sections = {
        name: _section_from_mapping(cls, data.get(name), name) for name, cls in _SECTIONS.items()
    }
    target = data.get("target", "jetson")
    if not isinstance(target, str) or not target:
        raise ConfigError(f"target must be a device name such as jetson, but got {target!r}")
    budgets_raw = data.get("budgets") or []
    if isinstance(budgets_raw, str):
        budgets_raw = [budgets_raw]
    if not isinstance(budgets_raw, Sequence):
        raise ConfigError(
            f"budgets must be a list such as [2gflops, 15ms], but got {budgets_raw!r}"
        )
    budgets = tuple(parse_budget(b) for b in budgets_raw)
    return Config(**sections, target=target, budgets=budgets)


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``KEY=VALUE`` overrides (dotted keys, YAML values) to a raw config dict.

    Example:
        >>> apply_overrides({}, ["training.epochs=3"])
        {'training': {'epochs': 3}}
    """
    out = {k: dict(v) if isinstance(v, Mapping) else v for k, v in data.items()}
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(
                f"--set {item!r} is not KEY=VALUE; write e.g. --set training.epochs=3"
            )
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        parts = key.split(".")
        if parts == ["evaluator"]:  # --set evaluator=distill
            sub = out.get("evaluator")
            out["evaluator"] = {**(sub if isinstance(sub, Mapping) else {}), "name": value}
            continue
        if len(parts) == 1:
            if parts[0] not in ("target", "budgets"):
                raise ConfigError(
                    f"--set {item!r}: unknown key {key}; valid keys are "
                    f"SECTION.KEY (sections: {', '.join(_SECTIONS)}), target, budgets"
                )
            out[parts[0]] = value
            continue
        if len(parts) != 2 or parts[0] not in _SECTIONS:
            raise ConfigError(
                f"--set {item!r}: unknown key {key}; valid sections: {', '.join(_SECTIONS)}"
            )
        section, name = parts
        known = {f.name for f in dataclasses.fields(_SECTIONS[section])}
        if name not in known:
            raise ConfigError(
                f"--set {item!r}: unknown key {key}; valid keys in {section}: "
                f"{', '.join(sorted(known))}"
            )
        sub = out.get(section) or {}
        if not isinstance(sub, Mapping):
            raise ConfigError(f"{section} must be a mapping of keys, but got {sub!r}")
        out[section] = {**sub, name: value}
    return out


def load_config(path: str | Path | None = None, *, overrides: Sequence[str] = ()) -> Config:
    """Read a YAML config (default: the embedded ``configs/default.yaml``) and apply overrides."""
    path = Path(path) if path is not None else DEFAULT_CONFIG
    if not path.is_file():
        raise ConfigError(
            f"config file {str(path)!r} does not exist; pass --config PATH to an "
            f"existing YAML file (the default is {DEFAULT_CONFIG})"
        )
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(
            f"config file {str(path)!r} is not valid YAML{where}: {getattr(exc, 'problem', exc)}"
        ) from None
    if not isinstance(data, Mapping):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping of sections")
    try:
        config_from_dict(data)
    except ConfigError as exc:  # the file itself is wrong: say which file
        raise ConfigError(f"{exc} (in {path})") from None
    return config_from_dict(apply_overrides(dict(data), overrides))
