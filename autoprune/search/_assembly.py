"""Assembly: a config turned into a run's parts, every check made before anything is written.

:func:`assemble` resolves, in data-flow order, the target's device profile, where latency and
energy come from (the hardware coster), the evaluator and its settings, and, on first use, the
search space over the base model (bit-widths limited to what the target executes), the
controller's sampler and the data set. The search loop, Ray workers, ``retrain`` and
``autoprune profile`` build their parts here and nowhere else, so a bad name or value is refused
in one line, the same way, before a run directory exists.

Example:
    >>> from autoprune.config import load_config
    >>> run = RunDir("runs/demo")  # a search's run directory
    >>> parts = assemble(load_config(run.path / "config.yaml"), run=run)
    >>> parts.profile.name, parts.evaluator_name, parts.coster.measures
    ('jetson-orin-nano', 'scratch-e', False)
    >>> objective = parts.objective(run)  # what each trial runs
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from autoprune.config import Config, EvaluatorConfig
from autoprune.errors import ConfigError
from autoprune.evaluators import (
    DatasetSplits,
    Evaluator,
    TrainedBase,
    create_evaluator,
    evaluator_class,
    evaluator_settings,
    load_dataset,
)
from autoprune.hwprofiles import (
    DeviceProfile,
    HardwareCoster,
    RpcEndpoint,
    candidate_costs,
    default_kernel_cache,
    load_profile,
)
from autoprune.search._controllers import check_controller, create_sampler
from autoprune.search._early_stopping import DominanceStopper
from autoprune.search._hypervolume import HypervolumeReference
from autoprune.search._objective import CandidateObjective, candidate_seed
from autoprune.search._repair import repairing
from autoprune.search._rundir import RunDir
from autoprune.spaces import SearchSpace

__all__ = ["RunParts", "assemble", "build_space", "check_budgets"]

_logger = logging.getLogger("autoprune.search")


def build_space(config: Config, profile: DeviceProfile) -> SearchSpace:
    """The search space of a config on a target; bit-widths limited to what the target lists.

    Raises:
        ConfigError: a bit-width list keeps nothing the target executes.
        UnknownNameError: the base model is not registered.
    """
    allowed = set(profile.bit_widths) | {32}

    def limit(key: str, bits: tuple[int, ...]) -> tuple[int, ...]:
        kept = tuple(b for b in bits if b in allowed)
        if not kept:
            raise ConfigError(
                f"space.{key} {list(bits)} has no bit-width that target "
                f"{profile.name} supports; allowed: {sorted(allowed)}"
            )
        if kept != bits:
            _logger.info(
                "space.%s: %s dropped; target %s supports %s",
                key,
                sorted(set(bits) - set(kept)),
                profile.name,
                sorted(allowed),
            )
        return kept

    return SearchSpace(
        model=config.model.name,
        num_classes=config.model.num_classes,
        in_channels=config.model.in_channels,
        input_shape=config.data.input_shape,
        width_ratios=config.space.width_ratios,
        depth=config.space.depth,
        resolution_scales=config.space.resolution_scales,
        weight_bits=limit("weight_bits", config.space.weight_bits),
        activation_bits=limit("activation_bits", config.space.activation_bits),
        channel_multiple=profile.channel_multiple,
        rank_ratios=config.space.rank_ratios,
    )


def check_budgets(
    config: Config,
    space: SearchSpace,
    profile: DeviceProfile,
    coster: HardwareCoster | None = None,
) -> list[str]:
    """Compare each budget with the space's extremes before anything runs.

    Returns one line per budget that does not bind (the largest candidate already fits);
    raises :class:`ConfigError` for a budget that no candidate can meet. Latency and energy are
    the profile's estimates here (nothing is tuned or measured before the run); when the run
    measures them (``coster.measures``), an estimate over a latency or energy budget is a
    warning, since the measured figures decide.
    """
    if not config.budgets:
        return []
    largest = candidate_costs(space.largest(), profile)
    smallest = candidate_costs(space.smallest(), profile)
    shape = "x".join(map(str, config.data.input_shape))
    measured = coster is not None and coster.measures
    notes = []
    for budget in config.budgets:
        hardware = budget.metric in ("latency_ms", "energy_mj")
        if smallest[budget.metric] > budget.limit and measured and hardware:
            notes.append(
                f"budget {budget.spec} may not be met: the smallest candidate of the space is "
                f"estimated at {budget.describe(smallest[budget.metric])} on {profile.name}; "
                f"measured figures decide"
            )
        elif smallest[budget.metric] > budget.limit:
            raise ConfigError(
                f"budget {budget.spec} cannot be met: the smallest candidate of the space needs "
                f"{budget.describe(smallest[budget.metric])}; loosen the budget or widen the space "
                f"(space.width_ratios, space.resolution_scales, space.weight_bits)"
            )
        elif largest[budget.metric] <= budget.limit and not (measured and hardware):
            notes.append(
                f"budget {budget.spec} does not bind: the unpruned {config.model.name} at {shape} "
                f"needs {budget.describe(largest[budget.metric])} on {profile.name}, "
                f"so every candidate fits"
            )
    return notes


@dataclass
class RunParts:
    """A run's parts, built from its config (:func:`assemble`); the costly ones on first use.

    Attributes:
        config: the run's configuration, resolved (the evaluator's settings completed with
            their defaults): what ``config.yaml`` holds.
        profile: the target device.
        coster: where latency and energy come from (measured or estimated), with the run's
            caches when it has a run directory.
    """

    config: Config
    profile: DeviceProfile
    coster: HardwareCoster
    progress: bool = False
    _data: DatasetSplits | None = field(default=None, repr=False)

    @property
    def evaluator_name(self) -> str:
        return self.config.evaluator.name

    @property
    def evaluator_class(self) -> type[Evaluator]:
        return evaluator_class(self.evaluator_name)

    @functools.cached_property
    def space(self) -> SearchSpace:
        """The search space over the base model (analysed on first use)."""
        return build_space(self.config, self.profile)

    @functools.cached_property
    def sampler(self) -> optuna.samplers.BaseSampler:
        """The controller's sampler, repairing proposals over exact budgets when asked."""
        search = self.config.search
        sampler = create_sampler(
            search.controller, seed=search.seed, population_size=search.population_size
        )
        if search.repair:
            sampler = repairing(sampler, self.space, self.config.budgets)
        return sampler

    def load_data(self) -> DatasetSplits:
        """The run's data set, split as every stage of the run sees it (loaded once).

        Raises:
            DataError: the data set is missing or unreadable.
            ConfigError: its images have another channel count than ``model.in_channels``.
        """
        if self._data is None:
            data = self.config.data
            splits = load_dataset(
                data.dataset,
                root=data.root,
                val_samples=data.val_samples,
                seed=self.config.search.seed,
                download=data.download,
                input_shape=data.input_shape,
                num_workers=data.num_workers,
                cache=data.cache,
            )
            if tuple(splits.input_shape[:1]) != (self.config.model.in_channels,):
                raise ConfigError(
                    f"model.in_channels is {self.config.model.in_channels} but data set "
                    f"{data.dataset} has {splits.input_shape[0]}-channel images"
                )
            self._data = splits
        return self._data

    def check(self) -> list[str]:
        """Build now what a search needs before it starts (the data set, the space, the
        sampler, your ``model.weights`` loaded into the base model), so that a problem shows
        before anything is written; and check the budgets (:func:`check_budgets`): the notes
        of budgets that do not bind.
        """
        self.load_data()
        _ = self.sampler  # builds the space too
        self.evaluator_class.check_run(
            evaluator_settings(self.config.evaluator),
            training=self.config.training,
            weights=self.config.model.weights,
        )
        self._check_weights()
        return check_budgets(self.config, self.space, self.profile, self.coster)

    def _check_weights(self) -> None:
        """Load ``model.weights`` into the unpruned base as the run will, and say in one log
        line what the run's evaluator does with them."""
        weights = self.config.model.weights
        if weights is None:
            return
        TrainedBase.check_weights(self.space.largest(), weights)
        name = self.evaluator_name
        if self.evaluator_class.needs_base:
            _logger.info("%s starts from your weights (%s); no base is trained", name, weights)
        else:
            _logger.info(
                "%s trains every candidate from scratch, by design: your weights (%s) are the "
                "unpruned reference only (the report's reference line%s)",
                name,
                weights,
                ", and trial 0" if self.config.search.include_base else "",
            )

    def base_reference(self) -> HypervolumeReference:
        """The hypervolume reference of the run: the unpruned base model's *estimated* latency
        and energy on the target (known before anything runs, the same whether the run
        measures or estimates); its kernel list goes to the coster's cache."""
        estimate = self.coster.estimate(self.space.largest())
        return HypervolumeReference.for_base(
            latency_ms=estimate.latency_ms, energy_mj=estimate.energy_mj
        )

    def trained_base(self, folder: Path, *, seed: int | None = None) -> TrainedBase:
        """The unpruned base model trained once into ``folder`` at the run's fidelity
        (``seed``: default the seed the search gives the base's architecture), or, with
        ``model.weights``, your weights, evaluated once into ``folder``."""
        base = self.space.largest()
        return TrainedBase(
            base,
            data=self.load_data,
            training=self.config.training,
            seed=candidate_seed(base, self.config.search.seed) if seed is None else seed,
            folder=folder,
            progress=self.progress,
            weights=self.config.model.weights,
            weights_sha256=self.config.model.weights_sha256,
            snapshots=self.evaluator_class.base_snapshots(
                evaluator_settings(self.config.evaluator)
            ),
        )

    def evaluator(self, base: TrainedBase) -> Evaluator:
        """The run's evaluator, starting from ``base`` where it needs one."""
        return create_evaluator(
            self.config.evaluator,
            data=self.load_data,
            training=self.config.training,
            base=base,
            progress=self.progress,
        )

    def objective(
        self, run: RunDir, *, reuse_trained: bool = True, measure_weights: bool = True
    ) -> CandidateObjective:
        """The trial objective of ``run`` (in the search process or a Ray worker, whose
        ``run`` is the node's own folder and whose driver looks for a trained architecture,
        hence ``reuse_trained=False``). With ``model.weights``, their accuracy is measured first
        (once per run, ``base/eval.json``): the report's reference, whichever the evaluator;
        not with ``measure_weights=False`` (a Ray driver, which only looks architectures up)."""
        search = self.config.search
        stopper = None
        if search.early_stopping == "dominated":
            stopper = DominanceStopper(
                margin=search.early_stopping_margin, min_trials=search.early_stopping_min_trials
            )
        base = self.trained_base(run.base_dir)
        if base.weights is not None and measure_weights:
            base.get()
        return CandidateObjective(
            config=self.config,
            space=self.space,
            run=run,
            coster=self.coster,
            evaluator=self.evaluator(base),
            base=base,
            stopper=stopper,
            reuse_trained=reuse_trained,
        )


def assemble(
    config: Config,
    *,
    run: RunDir | None = None,
    tuning_dir: str | os.PathLike[str] | None = None,
    progress: bool = False,
    data: DatasetSplits | None = None,
) -> RunParts:
    """Check ``config`` against the registries and build its run's parts.

    With ``run``, latency measurements and kernel lists are cached in the run directory and
    its tuning database is the run's; otherwise nothing is cached and kernels are tuned into
    ``tuning_dir`` (``None``: measured untuned). ``data`` gives the run's data set as objects
    (the Python API) instead of ``config.data``'s registered one. Nothing is written here.

    Raises:
        UnknownNameError: the target, evaluator or controller is not registered.
        ConfigError: an evaluator setting or the hardware settings are invalid (an unreachable
            target with ``hardware.latency: measured``, a malformed RPC tracker), or
            ``model.weights`` is missing or differs from ``model.weights_sha256``.
    """
    profile = load_profile(config.target)
    hardware = config.hardware
    endpoint = None
    if hardware.rpc_tracker is not None:
        endpoint = RpcEndpoint.parse(hardware.rpc_tracker, key=hardware.rpc_key or "")
    coster = HardwareCoster(
        profile,
        latency=hardware.latency,
        endpoint=endpoint,
        timeout_s=hardware.measure_timeout_s,
        tuning_trials_per_task=hardware.tuning_trials_per_task,
        estimator=hardware.estimator,
        cache_dir=None if run is None else run.hw_cache_dir,
        shared_cache_dir=default_kernel_cache(),
        tuning_dir=run.tuning_dir(profile.name) if run is not None else tuning_dir,
    )
    settings = evaluator_settings(config.evaluator)
    check_controller(config.search.controller)
    return RunParts(
        config=_resolved(_pinned_weights(config), settings),
        profile=profile,
        coster=coster,
        progress=progress,
        _data=data,
    )


def _resolved(config: Config, settings: Any) -> Config:
    """``config`` with its evaluator's settings completed with their defaults."""
    evaluator = config.evaluator
    own = dataclasses.asdict(settings)
    if not own:
        return config
    completed = EvaluatorConfig(
        name=evaluator.name, settings={**evaluator.settings, evaluator.name: own}
    )
    return dataclasses.replace(config, evaluator=completed)


def _pinned_weights(config: Config) -> Config:
    """``config`` with ``model.weights`` made absolute and ``model.weights_sha256`` set to the
    file's SHA-256: what makes the run's identity (a resumed run with another path or content
    is refused), and what Ray workers and ``retrain`` check the file against.

    Raises:
        ConfigError: the file is missing, or its SHA-256 is not the one the config pins.
    """
    model = config.model
    if model.weights is None:
        return config
    path = Path(model.weights).expanduser().absolute()
    digest = TrainedBase.weights_digest(path)
    if model.weights_sha256 is not None and digest != model.weights_sha256:
        raise ConfigError(
            f"model.weights {str(path)!r} has SHA-256 {digest}, not the "
            f"{model.weights_sha256} that model.weights_sha256 pins (the file changed); restore "
            f"it, or set model.weights_sha256=null in a new run directory to start from it"
        )
    pinned = dataclasses.replace(model, weights=str(path), weights_sha256=digest)
    return dataclasses.replace(config, model=pinned)
