"""Fit a profile's factors to published measurements (``autoprune calibrate``).

The per-kernel estimate of a row's model (:func:`~autoprune.hwprofiles.estimate_from_kernels`)
is, per fused kernel, ``max(macs / (peak[p] * compute_efficiency[p] * class_factor[class]),
bytes / (bandwidth * memory_efficiency)) + kernel_launch_overhead``, summed. The fit chooses
the factors that minimise the squared error of log latency over the board's rows, by
``scipy.optimize.least_squares`` within bounds, from the profile's own values and five
deterministic restarts. A factor counts as fitted when some row's latency moves by at least 10 %
of the factor's relative change (sensitivity >= 0.1); otherwise it keeps the profile's value and
stays assumed, with that reason.

A row of another runtime than the one the profile models (``runtime``) enters through a
per-runtime factor on its latency, fitted with the rest and reported; it is never silently taken
for the profile's runtime. Rows of the profile's runtime published by different people (one
file of one repository, or one page: a *setup*) differ in versions, power mode and what is
timed: each setup with rows of two or more models gets a ``setup_factor`` on its latency,
relative to the setup with the most rows, whose figures the profile then models.
Leave-one-model-out cross-validation gives the expected error that ``profile``, the report and
model cards print beside every estimate.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from autoprune.errors import ConfigError
from autoprune.hwprofiles._kernels import KERNEL_CLASSES, KernelCost
from autoprune.hwprofiles._profile import _CLASSES, DeviceProfile
from autoprune.hwprofiles._row_model import (
    _Arrays,
    _arrays,
    _reference_setup,
    _rows_latency_ms,
    _setups_with_factor,
    _Stack,
    predict_latency_ms,
)
from autoprune.hwprofiles._rows import CalibrationRow

__all__ = [
    "CalibrationFit",
    "fit_profile",
    "point_figures",
    "predict_latency_ms",
]

_logger = logging.getLogger("autoprune.hwprofiles.calibrate")

_BOUNDS = {  # natural-log bounds per kind of factor
    "compute_efficiency": (math.log(0.002), 0.0),
    "memory_efficiency": (math.log(0.01), 0.0),
    "kernel_launch_overhead_us": (math.log(0.1), math.log(5000.0)),
    "kernel_class_efficiency": (math.log(0.03), math.log(5.0)),
    "runtime_factor": (math.log(0.05), math.log(50.0)),
    "runtime_overhead_us": (math.log(0.1), math.log(5000.0)),
    "setup_factor": (math.log(0.2), math.log(5.0)),
}
_MIN_SENSITIVITY = 0.1
_RESTARTS = 5


@dataclass(frozen=True)
class CalibrationFit:
    """What :func:`fit_profile` found for one board.

    Attributes:
        profile: the profile with the fitted factors in place (and ``expected_error``).
        fitted: factor -> fitted value, for the factors the rows constrain.
        at_bound: fitted factors that ended at an end of their allowed range, and which.
        derived: efficiency of each native precision no row ran at, scaled with the fitted
            ones (applied, but still assumed).
        not_fitted: factor -> why it was left at the profile's value.
        runtime_factors: ``runtime_factor.<runtime>`` (its speed on the roofline part relative
            to ``profile.runtime``) and ``runtime_overhead_us.<runtime>`` (its cost per kernel),
            for each other runtime in the rows; ``setup_factor.<setup>`` (its latency relative
            to ``reference_setup``) for each other setup of ``profile.runtime`` with a factor.
        reference_setup: the setup (source file or page) whose figures the profile models.
        rows: the CSV lines of the rows used.
        residuals_percent: CSV line -> (estimate / published - 1) * 100 with the full fit.
        cross_validation: leave-one-model-out figures over the rows of ``profile.runtime``,
            one point per distinct (model, input, precision) at the median of its rows:
            ``median_ape_percent``, ``kendall_tau``, ``points``, ``rows``, ``models``, and
            ``per_row`` (CSV line -> held-out estimate, ms).
    """

    profile: DeviceProfile
    fitted: dict[str, float]
    at_bound: dict[str, str]
    derived: dict[str, float]
    not_fitted: dict[str, str]
    runtime_factors: dict[str, float]
    rows: list[int]
    residuals_percent: dict[int, float]
    cross_validation: dict[str, Any] = field(default_factory=dict)
    reference_setup: str | None = None

    def overlay(self) -> dict[str, Any]:
        """The ``calibration/<profile>.yaml`` mapping (see :func:`apply_overlay`)."""
        cv = {k: v for k, v in self.cross_validation.items() if k != "per_row"}
        return {
            "profile": self.profile.name,
            "date": datetime.date.today().isoformat(),
            "runtime": self.profile.runtime,
            "fitted": {k: _round(v) for k, v in self.fitted.items()},
            "at_bound": dict(self.at_bound),
            "derived": {k: _round(v) for k, v in self.derived.items()},
            "not_fitted": dict(self.not_fitted),
            "runtime_factors": {k: _round(v) for k, v in self.runtime_factors.items()},
            "reference_setup": self.reference_setup,
            "expected_error": self.profile.expected_error,
            "cross_validation": cv,
            "rows": list(self.rows),
            "residuals_percent": {k: round(v, 1) for k, v in self.residuals_percent.items()},
        }


def _round(value: float) -> float:
    return float(f"{value:.4g}")


# --------------------------------------------------------------------------------------------
# parameters
# --------------------------------------------------------------------------------------------


def _factor_value(profile: DeviceProfile, name: str) -> float:
    kind, _, key = name.partition(".")
    if kind == "compute_efficiency":
        return profile.compute_efficiency[key]
    if kind == "kernel_class_efficiency":
        return profile.kernel_class_efficiency.get(key, 1.0)
    return float(getattr(profile, kind))


def _with_factors(profile: DeviceProfile, values: Mapping[str, float]) -> DeviceProfile:
    efficiency = dict(profile.compute_efficiency)
    classes = dict(profile.kernel_class_efficiency)
    scalars: dict[str, float] = {}
    for name, value in values.items():
        kind, _, key = name.partition(".")
        if kind == "compute_efficiency":
            efficiency[key] = min(value, 1.0)
        elif kind == "kernel_class_efficiency":
            classes[key] = value
        elif kind == "memory_efficiency":
            scalars[kind] = min(value, 1.0)
        elif not kind.startswith(("runtime_", "setup_")):
            scalars[kind] = value
    return dataclasses.replace(
        profile, compute_efficiency=efficiency, kernel_class_efficiency=classes, **scalars
    )


def _parameters(
    profile: DeviceProfile, arrays: Sequence[_Arrays], rows: Sequence[CalibrationRow]
) -> list:
    names = [f"compute_efficiency.{p}" for p in sorted({a.precision for a in arrays})]
    names += ["memory_efficiency", "kernel_launch_overhead_us"]
    present = {
        profile.kernel_class_aliases.get(c, c)
        for c in KERNEL_CLASSES
        if any((a.macs[a.classes == KERNEL_CLASSES.index(c)] > 0).any() for a in arrays)
    }
    names += [f"kernel_class_efficiency.{c}" for c in _CLASSES if c in present]
    for runtime in sorted({r.runtime for r in rows} - {profile.runtime}):
        names += [f"runtime_factor.{runtime}", f"runtime_overhead_us.{runtime}"]
    names += [f"setup_factor.{s}" for s in _setups_with_factor(profile, rows)]
    return names


def _start(profile: DeviceProfile, name: str) -> float:
    if name.startswith(("runtime_factor.", "setup_factor.")):
        return 0.0
    if name.startswith("runtime_overhead_us."):
        return math.log(profile.kernel_launch_overhead_us)
    return math.log(_factor_value(profile, name))


# --------------------------------------------------------------------------------------------
# fitting
# --------------------------------------------------------------------------------------------


def _solve(
    profile: DeviceProfile, rows: Sequence[CalibrationRow], arrays: Sequence[_Arrays]
) -> tuple[dict[str, float], dict[str, float]]:
    """Fitted values (natural units) and each factor's largest sensitivity over the rows."""
    from scipy.optimize import least_squares

    names = _parameters(profile, arrays, rows)
    start = np.array([_start(profile, n) for n in names])
    low = np.array([_BOUNDS[n.split(".")[0]][0] for n in names])
    high = np.array([_BOUNDS[n.split(".")[0]][1] for n in names])
    start = np.clip(start, low + 1e-9, high - 1e-9)
    observed = np.log([r.latency_ms for r in rows])

    stack = _Stack.of(arrays)

    def predicted(theta: np.ndarray) -> np.ndarray:
        values = dict(zip(names, np.exp(theta), strict=True))
        return np.log(_rows_latency_ms(stack, _with_factors(profile, values), values, rows))

    def residuals(theta: np.ndarray) -> np.ndarray:
        return predicted(theta) - observed

    # max(compute, memory) makes the surface piecewise: a few deterministic restarts find the
    # best basin, the profile's own values first.
    rng = np.random.default_rng(0)
    starts = [start] + [
        np.clip(start + rng.uniform(-1.5, 1.5, len(start)), low + 1e-9, high - 1e-9)
        for _ in range(_RESTARTS)
    ]
    result = min(
        (
            least_squares(residuals, x0, bounds=(low, high), diff_step=1e-6, ftol=1e-10, xtol=1e-10)
            for x0 in starts
        ),
        key=lambda r: r.cost,
    )
    # Sensitivity by a step into the allowed range (a factor at a bound has no step outward).
    at_solution = predicted(result.x)
    sensitivity = {}
    for i, name in enumerate(names):
        step = -0.05 if result.x[i] > high[i] - 0.05 else 0.05
        moved = result.x.copy()
        moved[i] += step
        sensitivity[name] = float(np.abs((predicted(moved) - at_solution) / step).max())
        if min(result.x[i] - low[i], high[i] - result.x[i]) < 1e-3:
            _logger.debug("%s: %s ends at a bound of its range", profile.name, name)
    values = dict(zip(names, map(float, np.exp(result.x)), strict=True))
    return values, sensitivity


def _scaled_precisions(profile: DeviceProfile, values: Mapping[str, float]) -> dict[str, float]:
    """Efficiencies of the native precisions no row ran at, scaled from the hand-written value by
    the geometric mean of fitted / hand-written over the precisions that were fitted (int8 on a
    board with fp16 rows only moves as fp16 moved)."""
    ratios = [
        math.log(values[f"compute_efficiency.{p}"] / profile.compute_efficiency[p])
        for p in profile.native_precisions
        if f"compute_efficiency.{p}" in values
    ]
    if not ratios:
        return {}
    scale = math.exp(sum(ratios) / len(ratios))
    return {
        f"compute_efficiency.{p}": min(1.0, profile.compute_efficiency[p] * scale)
        for p in profile.native_precisions
        if f"compute_efficiency.{p}" not in values
    }


def _predict_row(
    profile: DeviceProfile, values: Mapping[str, float], row: CalibrationRow, a: _Arrays
) -> float | None:
    if row.runtime != profile.runtime and f"runtime_factor.{row.runtime}" not in values:
        return None  # a runtime with no factor in this fit: cannot be predicted
    values = {**values, **_scaled_precisions(profile, values)}
    profile = _with_factors(profile, values)
    return float(_rows_latency_ms(_Stack.of([a]), profile, values, [row])[0])


def _cross_validate(
    profile: DeviceProfile, rows: Sequence[CalibrationRow], arrays: Sequence[_Arrays]
) -> dict[str, Any]:
    models = sorted({r.model for r in rows})
    held_out: dict[int, float] = {}
    for model in models:
        train = [i for i, r in enumerate(rows) if r.model != model]
        if not any(rows[i].runtime == profile.runtime for i in train):
            continue
        values, _ = _solve(profile, [rows[i] for i in train], [arrays[i] for i in train])
        for i, row in enumerate(rows):
            if row.model == model:
                estimate = _predict_row(profile, values, row, arrays[i])
                if estimate is not None:
                    held_out[row.line] = estimate
    own = [r for r in rows if r.runtime == profile.runtime and r.line in held_out]
    if not own:
        return {"rows": 0, "models": 0}
    return {
        **point_figures(own, held_out),
        "rows": len(own),
        "models": len({r.model for r in own}),
        "per_row": {r.line: round(held_out[r.line], 4) for r in own},
    }


def point_figures(
    rows: Sequence[CalibrationRow], estimates: Mapping[int, float]
) -> dict[str, float | int]:
    """Median absolute percentage error and Kendall tau of ``estimates`` (CSV line -> ms)
    against ``rows``, one point per distinct measurement (model, input, precision): rows that
    repeat one (MLPerf rounds, two tables of one harness) count once, at their median, so that
    ties between copies of one point neither help nor hurt the rank correlation."""
    from scipy.stats import kendalltau

    points: dict[tuple, list[CalibrationRow]] = {}
    for row in rows:
        points.setdefault((row.workload, row.precision), []).append(row)
    published = [float(np.median([r.latency_ms for r in group])) for group in points.values()]
    estimated = [float(np.median([estimates[r.line] for r in g])) for g in points.values()]
    errors = [abs(e / p - 1) * 100 for e, p in zip(estimated, published, strict=True)]
    tau = float(kendalltau(estimated, published).statistic) if len(points) >= 2 else math.nan
    return {
        "median_ape_percent": round(float(np.median(errors)), 1),
        "kendall_tau": round(tau, 3),
        "points": len(points),
    }


def fit_profile(
    profile: DeviceProfile,
    rows: Sequence[CalibrationRow],
    kernels: Mapping[tuple[str, int, tuple[int, int]], Sequence[KernelCost]],
    *,
    cross_validate: bool = True,
) -> CalibrationFit:
    """Fit ``profile``'s latency factors to its published ``rows``.

    Args:
        profile: the board's profile; its ``runtime`` is the runtime the estimate models.
        rows: the board's rows (:func:`~autoprune.hwprofiles.load_rows`).
        kernels: the fused kernels of each row's ``workload`` (:func:`kernels_for_rows`).
        cross_validate: also run leave-one-model-out cross-validation (one fit per model).

    Raises:
        ConfigError: no row is of the profile's runtime, or a row's kernels are missing.

    Example:
        A board's published rows are ``load_rows(boards=[profile.name])``, their kernels
        ``kernels_for_rows(rows)`` (TVM lowers each model: minutes); here two made-up models
        of fp16 kernels, timed at 4 ms and 1 ms:

        >>> from autoprune.hwprofiles import CalibrationRow, KernelCost, load_profile
        >>> profile = load_profile("jetson", calibrated=False)  # runtime: tensorrt
        >>> conv = KernelCost("fused_conv2d_add_relu", 2 * 10**9, 10**9, 800_000, 800_000,
        ...                   200_000, "float16", "conv3x3")
        >>> fc = KernelCost("fused_matmul_add", 2 * 10**6, 10**6, 4_000, 4_000, 4_000_000,
        ...                 "float16", "fc")
        >>> kernels = {("big", 1000, (224, 224)): [conv] * 10 + [fc],
        ...            ("small", 1000, (224, 224)): [conv] * 2 + [fc]}
        >>> rows = [CalibrationRow(line, profile.name, model, 1000, (224, 224), "fp16",
        ...                        "tensorrt", ms, None, "example", "published")
        ...         for line, model, ms in ((2, "big", 4.0), (3, "small", 1.0))]
        >>> fit = fit_profile(profile, rows, kernels, cross_validate=False)
        >>> fit.rows, max(abs(r) for r in fit.residuals_percent.values()) < 0.01  # percent
        ([2, 3], True)
        >>> sorted(fit.fitted)
        ['compute_efficiency.fp16', 'kernel_class_efficiency.conv3x3',
         'kernel_launch_overhead_us', 'memory_efficiency']
    """
    if not any(r.runtime == profile.runtime for r in rows):
        runtimes = sorted({r.runtime for r in rows}) or ["none"]
        raise ConfigError(
            f"no calibration row of runtime {profile.runtime!r} for {profile.name} (rows: "
            f"{', '.join(runtimes)}); add rows measured with it, or set the profile's runtime"
        )
    missing = [r.workload for r in rows if r.workload not in kernels]
    if missing:
        raise ConfigError(f"no kernels for {missing[0]}; pass kernels_for_rows(rows)")
    arrays = [_arrays(kernels[r.workload], profile, r.precision) for r in rows]
    values, sensitivity = _solve(profile, rows, arrays)

    fitted: dict[str, float] = {}
    not_fitted: dict[str, str] = {}
    at_bound: dict[str, str] = {}
    runtime_factors: dict[str, float] = {}
    for name, value in values.items():
        if name.startswith(("runtime_", "setup_")):
            runtime_factors[name] = value
        elif sensitivity[name] >= _MIN_SENSITIVITY:
            fitted[name] = value
            kind = name.split(".")[0]
            low, high = (math.exp(b) for b in _BOUNDS[kind])
            if min(value / low, high / value) < 1.001:
                at_bound[name] = (
                    f"at the {'lower' if value / low < 1.001 else 'upper'} end of "
                    f"its range [{low:.3g}, {high:.3g}]: the rows ask for more than it allows"
                )
        else:
            not_fitted[name] = (
                f"the rows barely depend on it (largest d log latency / d log factor "
                f"{sensitivity[name]:.2g} < {_MIN_SENSITIVITY})"
            )
    derived = _scaled_precisions(profile, fitted)
    for name in profile.factor_keys():
        if name not in fitted and name not in not_fitted:
            not_fitted[name] = _why_absent(name, rows)
            if name in derived:
                ratio = derived[name] / _factor_value(profile, name)
                not_fitted[name] += f"; scaled x{ratio:.3g} with the fitted precisions"
    calibrated = _with_factors(profile, {**fitted, **derived})
    residuals = {}
    for row, a in zip(rows, arrays, strict=True):
        estimate = _predict_row(profile, {**fitted, **runtime_factors}, row, a)
        if estimate is not None:
            residuals[row.line] = (estimate / row.latency_ms - 1) * 100
    cv = _cross_validate(profile, rows, arrays) if cross_validate else {}
    error = cv.get("median_ape_percent")
    calibrated = dataclasses.replace(
        calibrated, expected_error=None if error is None else round(error / 100, 3)
    )
    return CalibrationFit(
        profile=calibrated,
        fitted=fitted,
        at_bound=at_bound,
        derived=derived,
        not_fitted=not_fitted,
        runtime_factors=runtime_factors,
        rows=[r.line for r in rows],
        residuals_percent=residuals,
        cross_validation=cv,
        reference_setup=_reference_setup(profile, rows),
    )


def _why_absent(name: str, rows: Sequence[CalibrationRow]) -> str:
    kind, _, key = name.partition(".")
    if kind == "compute_efficiency":
        return f"no row runs at {key} on this board"
    if kind == "kernel_class_efficiency":
        return f"no row's model has {key} kernels with MACs"
    if kind in ("idle_power_w", "energy_scale"):
        return "no published power or energy in this board's rows"
    return "not a latency factor the rows inform"
