"""The trial objective: one candidate from proposal to objectives, in data-flow order.

params -> :class:`~autoprune.spaces.Candidate` -> compact ``nn.Module`` (fresh init) -> exact
costs at the deploy shape -> latency and energy on the target -> budget gate (over budget:
recorded infeasible, never trained) -> training from scratch at the configured fidelity ->
(validation accuracy, latency_ms, energy_mj).

Everything a trial establishes is written to the trial's user attributes, so the study storage
alone is the record of a run; the trained weights go to ``trials/NNNN/model.pt``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import optuna
import torch

from autoprune.config import Budget, Config
from autoprune.evaluators import DatasetSplits, Fidelity, load_dataset, train_from_scratch
from autoprune.hwprofiles import DeviceProfile, HardwareCoster, estimate_with_tvm
from autoprune.search._repair import repair
from autoprune.spaces import Candidate, CostReport, SearchSpace, build_model, count_costs

__all__ = [
    "CandidateObjective",
    "candidate_costs",
    "candidate_seed",
    "model_costs",
    "trial_dir",
]

_logger = logging.getLogger("autoprune.search")


def trial_dir(run_dir: Path, number: int) -> Path:
    """Folder of one trial's artefacts (``trials/0007``)."""
    return run_dir / "trials" / f"{number:04d}"


def candidate_seed(candidate: Candidate, search_seed: int) -> int:
    """Training seed of a candidate: the same architecture gets the same seed in every trial."""
    return (int(candidate.hash[:8], 16) ^ search_seed) % (2**31 - 1)


def candidate_costs(
    candidate: Candidate, profile: DeviceProfile, coster: HardwareCoster | None = None
) -> dict[str, Any]:
    """Exact costs of a candidate and its latency and energy on the target, as flat fields.

    The model is built on the meta device for counting (shapes only, no weights, nearly free).
    The estimate comes from the candidate's fused TVM kernels (``estimate_with_tvm``, cached in
    the coster's ``cache_dir``); ``coster`` decides whether latency is measured instead
    (default: the estimate).

    Raises:
        MeasurementFailed: latency was to be measured and the build or measurement failed.
    """
    costs = count_costs(build_model(candidate, device="meta"), candidate.input_shape)
    coster = coster or HardwareCoster(profile, latency="estimated")
    estimate = estimate_with_tvm(
        candidate, candidate.input_shape, profile, cache_dir=coster.cache_dir
    )
    return {**_exact(costs), **coster(candidate, estimate)}


def model_costs(
    model: torch.nn.Module, input_shape: tuple[int, int, int], profile: DeviceProfile
) -> dict[str, Any]:
    """MACs, params, size_bytes and estimated latency_ms and energy_mj of a model on a target."""
    costs = count_costs(model, input_shape)
    hardware = estimate_with_tvm(model, input_shape, profile)
    return {
        **_exact(costs),
        "latency_ms": hardware.latency_ms,
        "latency_source": hardware.latency_source,
        "energy_mj": hardware.energy_mj,
        "energy_source": hardware.energy_source,
        "hardware_method": hardware.method,
    }


def _exact(costs: CostReport) -> dict[str, int]:
    return {"macs": costs.macs, "params": costs.params, "size_bytes": costs.size_bytes}


class CandidateObjective:
    """Optuna objective returning ``(accuracy, latency_ms, energy_mj)`` for one trial.

    Budgets are checked on the exact costs before any training: a candidate over budget is
    recorded with ``feasible=False`` and objective values ``(0.0, latency, energy)`` (it is never
    trained; the sampler ranks it by its constraint violation). A candidate already trained in
    this study (same content hash) reuses that result instead of training again.
    """

    def __init__(
        self,
        *,
        config: Config,
        space: SearchSpace,
        profile: DeviceProfile,
        run_dir: Path,
        coster: HardwareCoster | None = None,
        progress: bool = False,
    ) -> None:
        self.config = config
        self.coster = coster
        self.space = space
        self.profile = profile
        self.run_dir = run_dir
        self.progress = progress
        self.fidelity = Fidelity(
            samples=config.training.samples,
            epochs=config.training.epochs,
            resolution_scale=config.training.resolution_scale,
            batch_size=config.training.batch_size,
        )
        self._data: DatasetSplits | None = None

    @property
    def data(self) -> DatasetSplits:
        """The data set, loaded on first use (infeasible-only runs never load it)."""
        if self._data is None:
            self._data = load_dataset(
                self.config.data.dataset,
                root=self.config.data.root,
                val_samples=self.config.data.val_samples,
                seed=self.config.search.seed,
            )
        return self._data

    def budget_violations(self, values: dict[str, Any]) -> dict[str, float]:
        """Relative excess over each budget (``<= 0`` holds), keyed by the budget's spec."""
        budgets: tuple[Budget, ...] = self.config.budgets
        return {b.spec: b.violation(float(values[b.metric])) for b in budgets}

    def __call__(self, trial: optuna.Trial) -> tuple[float, float, float]:
        try:
            return self._evaluate(trial)
        except KeyboardInterrupt:
            trial.set_user_attr("interrupted", True)
            raise
        except Exception as exc:
            trial.set_user_attr("error", f"{type(exc).__name__}: {exc}")
            raise

    def _evaluate(self, trial: optuna.Trial) -> tuple[float, float, float]:
        params = {
            d.name: trial.suggest_categorical(d.name, d.choices) for d in self.space.decisions
        }
        if self.config.search.repair and "reference" not in trial.user_attrs:
            params, steps = repair(self.space, params, self.config.budgets)
            trial.set_user_attr("repair_steps", steps)
            if steps:
                _logger.info(
                    "trial %d: proposal over budget; shrunk in %d steps", trial.number, steps
                )
        candidate = self.space.candidate(params)
        trial.set_user_attr("candidate", candidate.to_dict())
        trial.set_user_attr("candidate_hash", candidate.hash)

        values = candidate_costs(candidate, self.profile, self.coster)
        violations = self.budget_violations(values)
        feasible = all(v <= 0 for v in violations.values())
        trial.set_user_attr("costs", values)
        trial.set_user_attr("violations", violations)
        for spec, violation in violations.items():
            trial.set_constraint(spec, violation)  # Optuna: feasible when every value <= 0
        trial.set_user_attr("feasible", feasible)
        latency, energy = float(values["latency_ms"]), float(values["energy_mj"])
        if not feasible:
            over = ", ".join(spec for spec, v in violations.items() if v > 0)
            _logger.info(
                "trial %d: candidate %s is over budget %s; not trained",
                trial.number,
                candidate.hash,
                over,
            )
            trial.set_user_attr("trained", False)
            return 0.0, latency, energy

        cached = self._trained_before(trial, candidate.hash)
        if cached is not None:
            _logger.info(
                "trial %d: candidate %s was trained in trial %d; reusing its result",
                trial.number,
                candidate.hash,
                cached.number,
            )
            for key in ("trained", "eval", "accuracy", "fidelity"):
                trial.set_user_attr(key, cached.user_attrs[key])
            trial.set_user_attr("cached_from", cached.number)
            return float(cached.user_attrs["accuracy"]), latency, energy

        seed = candidate_seed(candidate, self.config.search.seed)
        model = build_model(candidate, seed=seed)
        started = time.perf_counter()
        result = train_from_scratch(
            model,
            self.data,
            fidelity=self.fidelity,
            input_shape=candidate.input_shape,
            seed=seed,
            lr=self.config.training.lr,
            momentum=self.config.training.momentum,
            weight_decay=self.config.training.weight_decay,
            progress=self.progress,
        )
        folder = trial_dir(self.run_dir, trial.number)
        folder.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), folder / "model.pt")
        trial.set_user_attr("trained", True)
        trial.set_user_attr("eval", result.to_dict())
        trial.set_user_attr("accuracy", result.accuracy)
        trial.set_user_attr("fidelity", self.fidelity.describe(candidate.input_shape[1:]))
        _logger.info(
            "trial %d: candidate %s reached %.2f %% %s accuracy in %.0f s",
            trial.number,
            candidate.hash,
            100 * result.accuracy,
            result.split,
            time.perf_counter() - started,
        )
        return float(result.accuracy), latency, energy

    @staticmethod
    def _trained_before(
        trial: optuna.Trial, candidate_hash: str
    ) -> optuna.trial.FrozenTrial | None:
        for other in trial.study.get_trials(
            deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)
        ):
            attrs = other.user_attrs
            if attrs.get("candidate_hash") == candidate_hash and attrs.get("trained"):
                return other
        return None
