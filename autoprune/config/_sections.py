"""The sections of a run configuration as frozen dataclasses, each checking its own values.

A :class:`Config` has seven sections (``model``, ``data``, ``space``, ``training``,
``evaluator``, ``search``, ``hardware``) plus the ``target`` device and the ``budgets``. A
section's ``__post_init__`` raises :class:`~autoprune.errors.ConfigError` naming the dotted key,
the bad value and what is allowed (:func:`require`). Names that live in registries (models,
data sets, evaluators, controllers, targets) are checked where the run is assembled, against
the registry, before anything is written.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from autoprune.config._budget import Budget
from autoprune.errors import ConfigError

__all__ = [
    "EARLY_STOPPING",
    "ESTIMATORS",
    "LATENCY_MODES",
    "SECTIONS",
    "Config",
    "DataConfig",
    "EvaluatorConfig",
    "HardwareConfig",
    "ModelConfig",
    "SearchConfig",
    "SpaceConfig",
    "TrainingConfig",
    "check_latency_mode",
    "quote",
    "require",
]


def quote(value: Any) -> str:
    """``repr(value)`` cut to 80 characters: a bad value as a one-line error quotes it."""
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:80]}..."


def require(ok: bool, key: str, value: Any, allowed: str) -> None:
    """Raise :class:`ConfigError` ``"{key} must be {allowed}, but got {quote(value)}"`` unless
    ``ok``."""
    if not ok:
        raise ConfigError(f"{key} must be {allowed}, but got {quote(value)}")


#: ``auto`` or ``HOST:PORT`` (a host name, IPv4 address or bracketed IPv6 address).
_RAY_ADDRESS_RE = re.compile(r"^(auto|(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):[0-9]{1,5})$")


@dataclass(frozen=True)
class ModelConfig:
    """The base model: a name from ``autoprune.spaces.list_models()``.

    ``weights`` (``null``: none) is a file of your trained base model's weights, saved with
    ``torch.save(model.state_dict(), PATH)`` (a checkpoint dict holding one is read too; see
    ``autoprune.evaluators.TrainedBase``): ``finetune`` and ``distill`` start from it instead
    of training a base, and the report shows it as the unpruned reference. A path string or an
    ``os.PathLike``, kept as a string. ``weights_sha256`` is the file's SHA-256 (hex); the run
    fills it in (``config.yaml`` records it), and a file whose content differs is refused.

    Example:
        >>> from pathlib import Path
        >>> ModelConfig(weights=Path("resnet20.pt")).weights
        'resnet20.pt'
    """

    name: str = "resnet20"
    num_classes: int = 10
    in_channels: int = 1
    weights: str | None = None
    weights_sha256: str | None = None

    def __post_init__(self) -> None:
        require(self.num_classes >= 2, "model.num_classes", self.num_classes, "an int >= 2")
        require(self.in_channels >= 1, "model.in_channels", self.in_channels, "an int >= 1")
        if isinstance(self.weights, os.PathLike):
            object.__setattr__(self, "weights", os.fspath(self.weights))
        require(
            self.weights is None or (isinstance(self.weights, str) and self.weights.strip() != ""),
            "model.weights",
            self.weights,
            "the path of a file saved with torch.save(model.state_dict(), PATH), or null",
        )
        require(
            self.weights_sha256 is None
            or bool(re.fullmatch(r"[0-9a-f]{64}", str(self.weights_sha256))),
            "model.weights_sha256",
            self.weights_sha256,
            "64 lowercase hex digits (sha256sum of model.weights), or null to take the file's",
        )


#: Largest input a config accepts: the space is analysed with a forward pass at the input
#: shape, which a side of 10**5 pixels exhausts the memory in (the shipped configs: 3x224x224).
MAX_SIDE = 4096
MAX_CHANNELS = 1024


@dataclass(frozen=True)
class DataConfig:
    """Where the data come from and the deploy input shape (C, H, W) costs are computed at.

    ``dataset`` is a name from ``autoprune.evaluators.list_datasets()``: ``fashion-mnist``,
    ``mnist``, ``cifar10``, ``cifar100``, ``imagefolder`` or ``synthetic``. ``root`` (``null``:
    the data set's default) is where its files are. ``download`` lets ``cifar10`` / ``cifar100``
    fetch missing files from the network; nothing is downloaded without it. ``imagefolder``
    decodes its images to ``input_shape`` with ``num_workers`` processes (``null``:
    ``min(4, CPUs)``), which also read streamed images while training. ``cache`` says how
    ``imagefolder`` holds them: ``stream`` reads them per batch (memory does not grow with the
    folder), ``memory`` decodes all once into memory (cached on disk; refused when they would
    not fit), ``auto`` is ``memory`` when the decoded images take at most a quarter of the
    available memory, else ``stream``. The data sets read from one file are held in memory.
    """

    dataset: str = "fashion-mnist"
    root: str | None = None
    val_samples: int = 5000
    input_shape: tuple[int, int, int] = (1, 28, 28)
    download: bool = False
    num_workers: int | None = None
    cache: str = "auto"

    def __post_init__(self) -> None:
        require(self.val_samples >= 1, "data.val_samples", self.val_samples, "an int >= 1")
        require(
            self.num_workers is None or self.num_workers >= 0,
            "data.num_workers",
            self.num_workers,
            "an int >= 0 (0 decodes in the main process) or null for min(4, CPUs)",
        )
        require(
            self.cache in ("auto", "memory", "stream"),
            "data.cache",
            self.cache,
            "auto, memory (decode once, hold in memory) or stream (read per batch)",
        )
        shape = tuple(self.input_shape)
        require(
            len(shape) == 3
            and 1 <= shape[0] <= MAX_CHANNELS
            and 1 <= min(shape[1:]) <= max(shape[1:]) <= MAX_SIDE,
            "data.input_shape",
            self.input_shape,
            f"three positive ints C, H, W (C at most {MAX_CHANNELS}, H and W at most {MAX_SIDE})",
        )


@dataclass(frozen=True)
class SpaceConfig:
    """What the controller may change: width keep-ratios, depth, resolution, bit-widths, and
    low-rank splits (``rank_ratios`` below 1.0; the default ``[1.0]`` splits nothing)."""

    width_ratios: tuple[float, ...] = (0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0)
    depth: bool = True
    resolution_scales: tuple[float, ...] = (1.0,)
    weight_bits: tuple[int, ...] = (32,)
    activation_bits: tuple[int, ...] = (32,)
    rank_ratios: tuple[float, ...] = (1.0,)

    def __post_init__(self) -> None:
        for key, values, what in (
            ("space.width_ratios", self.width_ratios, "ratios"),
            ("space.resolution_scales", self.resolution_scales, "scales"),
            ("space.rank_ratios", self.rank_ratios, "ratios"),
        ):
            require(
                bool(values) and all(0 < v <= 1 for v in values),
                key,
                values,
                f"a non-empty list of {what} in (0, 1]",
            )
        for key, bits, lowest in (
            ("space.weight_bits", self.weight_bits, 1),
            ("space.activation_bits", self.activation_bits, 2),
        ):
            require(
                bool(bits) and all(lowest <= b <= 32 for b in bits),
                key,
                bits,
                f"a non-empty list of bit-widths in {lowest}..32 (32 = float)",
            )


@dataclass(frozen=True)
class TrainingConfig:
    """Training fidelity and optimiser for the from-scratch evaluation of every candidate.

    ``samples`` training images (``null`` = all), ``epochs`` passes, at ``resolution_scale`` times
    the candidate's deploy resolution; SGD with Nesterov momentum and a one-cycle schedule.
    ``device``: ``auto`` (CUDA when available, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``.
    ``precision``: ``fp32``, or autocast to ``bf16`` or ``fp16`` (GPU only); ``auto``: ``bf16``
    on GPUs that have it (else ``fp16``) and on CPUs with native bfloat16 (AVX512-BF16 or AMX),
    as ``benchmarks/train_speed.py`` measured faster with accuracy equal within the seeds'
    spread (``autoprune.evaluators.CPU_AUTO_PRECISION``), else ``fp32``. Training runs in
    channels-last memory format under GPU autocast and on the CPU.
    """

    samples: int | None = 20000
    epochs: int = 2
    resolution_scale: float = 1.0
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    device: str = "auto"
    precision: str = "auto"

    def __post_init__(self) -> None:
        require(
            self.device in ("auto", "cpu", "cuda")
            or re.fullmatch(r"cuda:\d+", self.device) is not None,
            "training.device",
            self.device,
            "auto (CUDA when available), cpu, cuda or cuda:N",
        )
        require(
            self.precision in ("auto", "fp32", "bf16", "fp16"),
            "training.precision",
            self.precision,
            "auto, fp32, bf16 or fp16 (fp16 on a GPU only)",
        )
        require(
            self.samples is None or self.samples >= 1,
            "training.samples",
            self.samples,
            "an int >= 1 or null for all",
        )
        require(self.epochs >= 1, "training.epochs", self.epochs, "an int >= 1")
        require(
            0 < self.resolution_scale <= 1,
            "training.resolution_scale",
            self.resolution_scale,
            "a number in (0, 1]",
        )
        require(self.batch_size >= 1, "training.batch_size", self.batch_size, "an int >= 1")
        require(self.lr > 0, "training.lr", self.lr, "a positive number")
        require(0 <= self.momentum < 1, "training.momentum", self.momentum, "a number in [0, 1)")
        require(self.weight_decay >= 0, "training.weight_decay", self.weight_decay, "a number >= 0")


@dataclass(frozen=True)
class EvaluatorConfig:
    """How a candidate's accuracy is obtained: an evaluator's name and evaluators' settings.

    ``name`` is one of ``autoprune.evaluators.list_evaluators()`` (``scratch-e``,
    ``scratch-b``, ``finetune``, ``distill``, ``proxy``, and any registered with
    ``@register_evaluator``). ``settings`` maps an evaluator's name to its own settings as
    given, e.g. ``{"distill": {"temperature": 3.0}}``: the fields of its ``Settings``, checked
    and completed with their defaults when the run is assembled
    (``autoprune.evaluators.evaluator_settings``). Settings of evaluators other than ``name``
    are kept (a retrain may use them) but do not affect the search. In YAML::

        evaluator:
          name: distill
          distill: {temperature: 3.0}

    and ``evaluator: distill`` is short for ``{name: distill}``.
    """

    name: str = "scratch-e"
    settings: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        require(bool(self.name), "evaluator.name", self.name, "an evaluator name such as scratch-e")
        object.__setattr__(self, "settings", {k: dict(v) for k, v in self.settings.items()})

    def to_dict(self) -> dict[str, Any]:
        """The YAML section: ``{"name": ..., EVALUATOR: {KEY: VALUE, ...}, ...}``."""
        return {"name": self.name, **{k: dict(v) for k, v in self.settings.items()}}


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
        require(
            self.early_stopping in EARLY_STOPPING,
            "search.early_stopping",
            self.early_stopping,
            "none, or dominated (stop a candidate that a cheaper trial beat by "
            "early_stopping_margin at the same epoch)",
        )
        require(
            0 <= self.early_stopping_margin <= 1,
            "search.early_stopping_margin",
            self.early_stopping_margin,
            "an accuracy difference in [0, 1], e.g. 0.02",
        )
        require(
            self.early_stopping_min_trials >= 1,
            "search.early_stopping_min_trials",
            self.early_stopping_min_trials,
            "an int >= 1",
        )
        require(self.trials >= 1, "search.trials", self.trials, "an int >= 1")
        require(
            self.workers >= 1,
            "search.workers",
            self.workers,
            "an int >= 1 (the most trials that run at once)",
        )
        require(
            self.ray_address is None or _RAY_ADDRESS_RE.match(self.ray_address) is not None,
            "search.ray_address",
            self.ray_address,
            "auto or HOST:PORT of a running Ray cluster's head (`ray start --head` prints it), "
            "or null to run locally",
        )
        require(
            self.cpus_per_trial > 0,
            "search.cpus_per_trial",
            self.cpus_per_trial,
            "a positive number of CPUs (fractions share a CPU)",
        )
        require(
            self.gpus_per_trial >= 0,
            "search.gpus_per_trial",
            self.gpus_per_trial,
            "a number of GPUs >= 0 (fractions share a GPU)",
        )
        require(
            self.max_failures >= 0,
            "search.max_failures",
            self.max_failures,
            "an int >= 0 (re-runs of a trial whose Ray worker died)",
        )
        require(
            self.timeout_s is None or self.timeout_s > 0,
            "search.timeout_s",
            self.timeout_s,
            "a positive number of seconds or null",
        )
        require(0 <= self.seed < 2**32, "search.seed", self.seed, "an int in 0..4294967295")
        require(
            self.population_size >= 2, "search.population_size", self.population_size, "an int >= 2"
        )


#: How latency is obtained: measured where the target is reachable, else estimated (``auto``).
LATENCY_MODES = ("auto", "measured", "estimated")
#: How latency and energy are estimated: per fused TVM kernel, or per layer without TVM.
ESTIMATORS = ("kernels", "layers")


def check_latency_mode(mode: str) -> None:
    """Raise :class:`ConfigError` unless ``mode`` is one of :data:`LATENCY_MODES`."""
    require(mode in LATENCY_MODES, "hardware.latency", mode, f"one of {', '.join(LATENCY_MODES)}")


@dataclass(frozen=True)
class HardwareConfig:
    """Where latency comes from: ``auto`` measures TVM-built code where the target is reachable
    (the ``host`` profile, or a board behind ``rpc_tracker``) and estimates it elsewhere.

    ``tuning_trials_per_task``: measured on this host, kernels are first tuned with MetaSchedule,
    this many trials per fused kernel that the run's shared tuning database does not hold yet
    (untuned TVM code on a CPU is naive loops, no latency signal: ``docs/tvm.md``; 0 measures
    it anyway).
    ``measure_timeout_s`` bounds each tuning, build and measurement, seconds.
    ``estimator``: how latency and energy are estimated: ``kernels`` (per fused TVM kernel, the
    fidelity measured in ``benchmarks/``) or ``layers`` (per layer of the exact cost count, no
    TVM: seconds faster per candidate on large graphs, blind to fusion)."""

    latency: str = "auto"
    rpc_tracker: str | None = None
    rpc_key: str | None = None
    measure_timeout_s: float = 600.0
    tuning_trials_per_task: int = 4
    estimator: str = "kernels"

    def __post_init__(self) -> None:
        check_latency_mode(self.latency)
        require(
            self.estimator in ESTIMATORS,
            "hardware.estimator",
            self.estimator,
            f"one of {', '.join(ESTIMATORS)}",
        )
        require(
            (self.rpc_tracker is None) == (self.rpc_key is None),
            "hardware.rpc_key",
            self.rpc_key,
            "given together with hardware.rpc_tracker (HOST:PORT)",
        )
        require(
            self.measure_timeout_s > 0,
            "hardware.measure_timeout_s",
            self.measure_timeout_s,
            "a positive number of seconds",
        )
        require(
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
            elif isinstance(value, EvaluatorConfig):
                out[f.name] = value.to_dict()
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


#: Section name -> its dataclass, in the order a config file lists them.
SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "data": DataConfig,
    "space": SpaceConfig,
    "training": TrainingConfig,
    "evaluator": EvaluatorConfig,
    "search": SearchConfig,
    "hardware": HardwareConfig,
}
