"""The :class:`DeviceProfile` record and its validation.

A profile is data: one YAML file per device under ``autoprune/hwprofiles/profiles/``, every number
with a provenance comment beside it. This module turns such a mapping into a frozen, validated
record; :mod:`autoprune.hwprofiles._registry` finds and reads the files.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from autoprune.errors import ConfigError

__all__ = ["FACTORS", "PRECISION_BITS", "DeviceProfile"]

#: Bit width of each execution precision a profile may list, narrowest last.
PRECISION_BITS: Mapping[str, int] = MappingProxyType({"fp32": 32, "fp16": 16, "int8": 8})

_KINDS = ("cpu", "gpu")

#: Kernel classes with their own efficiency factor; ``conv`` (spatial) is the reference.
_CLASSES = ("conv3x3", "depthwise", "pointwise", "fc")

#: The modelling factors of a profile, as ``autoprune calibrate`` names them: each is fitted to
#: published measurements or listed under the profile's ``assumed`` with a reason.
#: ``compute_efficiency.<precision>`` exists per native precision.
FACTORS = (
    "compute_efficiency",
    "memory_efficiency",
    "kernel_launch_overhead_us",
    *(f"kernel_class_efficiency.{c}" for c in _CLASSES),
    "idle_power_w",
    "energy_scale",
)


def _freeze(value: Any) -> Any:
    """Deep read-only copy of a YAML value: mappings -> MappingProxyType, lists -> tuples."""
    if isinstance(value, Mapping):
        return MappingProxyType({str(k): _freeze(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    return value


def _thaw(value: Any) -> Any:
    """Inverse of :func:`_freeze`: plain dicts and lists, ready for JSON, YAML or TVM."""
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_thaw(v) for v in value]
    return copy.copy(value)


@dataclass(frozen=True)
class DeviceProfile:
    """What autoprune knows about one inference device: peaks, bandwidth, power, TVM target.

    Profiles are loaded from YAML with :func:`~autoprune.hwprofiles.load_profile`; build one by
    hand with :meth:`from_dict`, which validates every field. Units are in the field names:
    ``peak_macs_per_s`` counts multiply-accumulates per second (a vendor's TFLOPS figure counts
    two FLOPs per MAC, so MAC/s = FLOPS / 2), ``memory_bandwidth_bytes_per_s`` bytes per second.

    Attributes:
        name: registry key, the same string in Python, YAML and on the CLI (``--target``);
            letters, digits, ``.``, ``_`` and ``-`` (it names folders).
        aliases: other names accepted by ``load_profile`` (case-insensitive).
        description: one line for ``autoprune targets``.
        kind: ``"gpu"`` or ``"cpu"``.
        tvm_target: a TVM target tag (``"nvidia/jetson-orin-nano"``), ``"llvm"``, or a dict-form
            target; read it through :meth:`tvm_target_spec` to get a plain, mutable copy.
        peak_macs_per_s: precision (``"fp32"``, ``"fp16"``, ``"int8"``) -> peak MAC/s; lists
            exactly the native precisions.
        memory_bandwidth_bytes_per_s: DRAM bandwidth, bytes/s.
        native_precisions: precisions the hardware executes at their own speed, widest first.
        bit_widths: bit widths fake quantization may use for this device (32 = float).
        channel_multiple: channel counts are rounded to this multiple (8 for tensor-core GPUs,
            4 for 128-bit NEON CPUs).
        compute_efficiency: precision -> fraction of its peak MAC/s that batch-1 dense
            convolutions reach, (0, 1]; one number in YAML stands for every native precision.
        memory_efficiency: fraction of DRAM bandwidth reached, (0, 1].
        kernel_launch_overhead_us: fixed cost per kernel launch, microseconds.
        idle_power_w: board power while idle, watts; charged for the whole latency.
        max_power_w: power ceiling of the mode profiled (TDP / power mode), watts.
        energy_scale: multiplier on Horowitz's 45 nm energies for this process node (assumed).
        sources: where the numbers come from, one string each.
        runtime: the runtime whose code the estimate models (``tensorrt``, ``ncnn``, ``tvm``).
        kernel_class_efficiency: kernel class (``conv3x3``, ``depthwise``, ``pointwise``, ``fc``)
            -> factor on ``compute_efficiency`` for its kernels; a missing class is 1 (as
            ``conv``). ``conv3x3`` (dense, stride 1) may exceed 1: runtimes run it by Winograd's
            algorithm, with fewer multiplications than its MACs.
        kernel_class_aliases: kernel class -> the class whose kernels the runtime runs it with,
            and whose factor it takes (``{pointwise: conv3x3}`` on tensor-core GPUs, where
            TensorRT runs 1x1 and dense 3x3 convolutions as the same implicit GEMMs).
        expected_error: the estimate's typical relative latency error (0.18 = +-18 %), from
            leave-one-model-out cross-validation of the fit; ``None`` when never calibrated.
        assumed: factor (as in :data:`FACTORS`) -> why it is assumed rather than fitted.
        calibration: the fit's provenance (date, rows used, residuals, cross-validation), as
            ``autoprune calibrate`` wrote it; ``None`` when never calibrated.

    Example:
        >>> from autoprune.hwprofiles import load_profile
        >>> p = load_profile("jetson")
        >>> p.name, p.peak_macs_per_s["int8"]
        ('jetson-orin-nano', 10000000000000.0)
    """

    name: str
    description: str
    kind: Literal["gpu", "cpu"]
    tvm_target: str | Mapping[str, Any] = field(hash=False)
    peak_macs_per_s: Mapping[str, float] = field(hash=False)
    memory_bandwidth_bytes_per_s: float
    native_precisions: tuple[str, ...]
    bit_widths: tuple[int, ...]
    channel_multiple: int
    compute_efficiency: Mapping[str, float] = field(hash=False)
    memory_efficiency: float
    kernel_launch_overhead_us: float
    idle_power_w: float
    max_power_w: float
    energy_scale: float
    sources: tuple[str, ...]
    aliases: tuple[str, ...] = ()
    runtime: str = "tvm"
    kernel_class_efficiency: Mapping[str, float] = field(
        default_factory=lambda: MappingProxyType({}), hash=False
    )
    kernel_class_aliases: Mapping[str, str] = field(
        default_factory=lambda: MappingProxyType({}), hash=False
    )
    expected_error: float | None = None
    assumed: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}), hash=False)
    calibration: Mapping[str, Any] | None = field(default=None, hash=False, compare=False)

    def efficiency(self, precision: str, kernel_class: str = "conv") -> float:
        """Fraction of ``peak_macs_per_s[precision]`` that a ``kernel_class`` kernel reaches.

        Example:
            >>> from autoprune.hwprofiles import load_profile
            >>> load_profile("host").efficiency("fp32") > 0
            True
        """
        base = self.compute_efficiency[precision]
        return base * self.class_factor(kernel_class)

    def class_factor(self, kernel_class: str) -> float:
        """The ``kernel_class_efficiency`` factor a ``kernel_class`` kernel runs at (through
        ``kernel_class_aliases``; 1 for a class without one).

        Example:
            >>> from autoprune.hwprofiles import load_profile
            >>> load_profile("jetson").class_factor("conv")
            1.0
        """
        kernel_class = self.kernel_class_aliases.get(kernel_class, kernel_class)
        return self.kernel_class_efficiency.get(kernel_class, 1.0)

    def factor_provenance(self) -> dict[str, str]:
        """Each of :meth:`factor_keys` -> ``"fitted to rows N, M, ..."`` or ``"assumed: why"``.

        Example:
            >>> from autoprune.hwprofiles import load_profile
            >>> load_profile("jetson").factor_provenance()["energy_scale"][:8]
            'assumed:'
        """
        fitted = dict((self.calibration or {}).get("fitted_factors") or {})
        rows = ", ".join(map(str, (self.calibration or {}).get("rows") or ()))
        out = {}
        for key in self.factor_keys():
            if key in fitted:
                out[key] = f"fitted to calibration/rows.csv lines {rows}"
            else:
                why = self.assumed.get(key) or self.assumed.get(key.split(".")[0])
                out[key] = f"assumed: {why or 'no reason given'}"
        return out

    def factor_keys(self) -> list[str]:
        """Every factor of this profile, ``compute_efficiency`` split per native precision (an
        aliased kernel class has none of its own)."""
        keys = [f"compute_efficiency.{p}" for p in self.native_precisions]
        aliased = {f"kernel_class_efficiency.{c}" for c in self.kernel_class_aliases}
        return keys + [f for f in FACTORS if f != "compute_efficiency" and f not in aliased]

    def tvm_target_spec(self) -> str | dict[str, Any]:
        """The TVM target as ``tvm.target.Target`` accepts it: a tag string or a plain dict.

        Example:
            >>> from autoprune.hwprofiles import load_profile
            >>> load_profile("jetson-nano").tvm_target_spec()
            'nvidia/jetson-nano'
        """
        return _thaw(self.tvm_target)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/YAML-ready dict; ``DeviceProfile.from_dict(p.to_dict()) == p``."""
        return {f.name: _thaw(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "<dict>") -> DeviceProfile:
        """Validate ``data`` (a parsed profile YAML) and build the profile.

        Args:
            data: mapping with one key per field (``aliases`` may be left out).
            source: where ``data`` came from, quoted in error messages (a file path).

        Raises:
            ConfigError: a field is missing, unknown, of the wrong type or out of range; the
                message names ``source`` and the field.
        """
        return _parse(data, source=source)


# --------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------

_FIELDS = tuple(f.name for f in dataclasses.fields(DeviceProfile))
_OPTIONAL = frozenset(
    {
        "aliases",
        "runtime",
        "kernel_class_efficiency",
        "kernel_class_aliases",
        "expected_error",
        "assumed",
        "calibration",
    }
)


def _fail(source: str, name: str, message: str) -> ConfigError:
    return ConfigError(f"{source}: field {name!r} {message}; fix it in the profile YAML")


def _number(source: str, name: str, value: Any) -> float:
    # PyYAML reads `6.4e11` (no dot or no exponent sign) as a string, a YAML 1.1 quirk; accept
    # such numeric strings rather than make every profile author learn it.
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            pass
    try:  # an int beyond a float's range (10**400) overflows: not a finite number either
        finite = not isinstance(value, bool) and math.isfinite(value)
    except (TypeError, OverflowError):
        finite = False
    if not finite:
        raise _fail(source, name, f"must be a finite number, got {value!r:.80}")
    return float(value)


def _positive(source: str, name: str, value: Any) -> float:
    number = _number(source, name, value)
    if number <= 0:
        raise _fail(source, name, f"must be > 0, got {value!r}")
    return number


def _non_negative(source: str, name: str, value: Any) -> float:
    number = _number(source, name, value)
    if number < 0:
        raise _fail(source, name, f"must be >= 0, got {value!r}")
    return number


def _fraction(source: str, name: str, value: Any) -> float:
    number = _number(source, name, value)
    if not 0 < number <= 1:
        raise _fail(source, name, f"must be in (0, 1], got {value!r}")
    return number


def _string(source: str, name: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _fail(source, name, f"must be a non-empty string, got {value!r}")
    return value.strip()


#: A profile's name names folders (``RUN_DIR/tuning/<name>``, the tuning cache): one path part.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def _name(source: str, value: Any) -> str:
    name = _string(source, "name", value)
    if not _NAME.fullmatch(name):
        raise _fail(
            source,
            "name",
            f"must be letters, digits, '.', '_' and '-' (a folder name), got {name!r}",
        )
    return name


def _strings(source: str, name: str, value: Any, *, allow_empty: bool) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) and v for v in value):
        raise _fail(source, name, f"must be a list of non-empty strings, got {value!r}")
    if not value and not allow_empty:
        raise _fail(source, name, "must not be empty")
    return tuple(v.strip() for v in value)


def _parse(data: Mapping[str, Any], *, source: str) -> DeviceProfile:
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"{source}: a profile must be a mapping of field -> value, got "
            f"{type(data).__name__}; write one 'field: value' per line"
        )
    unknown = sorted(set(map(str, data)) - set(_FIELDS))
    if unknown:
        raise ConfigError(
            f"{source}: unknown field {unknown[0]!r}; valid fields: {', '.join(_FIELDS)}; "
            "remove or rename it"
        )
    missing = [f for f in _FIELDS if f not in data and f not in _OPTIONAL]
    if missing:
        raise ConfigError(
            f"{source}: missing field {missing[0]!r} (required: "
            f"{', '.join(f for f in _FIELDS if f not in _OPTIONAL)}); add it to the profile YAML"
        )

    kind = data["kind"]
    if kind not in _KINDS:
        raise _fail(source, "kind", f"must be one of {', '.join(_KINDS)}, got {kind!r}")

    tvm_target = data["tvm_target"]
    if isinstance(tvm_target, str):
        tvm_target = _string(source, "tvm_target", tvm_target)
    elif not isinstance(tvm_target, Mapping) or "kind" not in tvm_target:
        raise _fail(
            source,
            "tvm_target",
            f"must be a TVM tag string (e.g. 'nvidia/jetson-nano') or a mapping with a 'kind' "
            f"key, got {tvm_target!r}",
        )

    native = _strings(source, "native_precisions", data["native_precisions"], allow_empty=False)
    for precision in native:
        if precision not in PRECISION_BITS:
            raise _fail(
                source,
                "native_precisions",
                f"has unknown precision {precision!r}; valid: {', '.join(PRECISION_BITS)}",
            )
    if len(set(native)) != len(native):
        raise _fail(source, "native_precisions", f"lists a precision twice: {list(native)!r}")
    native = tuple(sorted(native, key=lambda p: -PRECISION_BITS[p]))

    peaks_raw = data["peak_macs_per_s"]
    if not isinstance(peaks_raw, Mapping):
        raise _fail(source, "peak_macs_per_s", f"must map precision -> MAC/s, got {peaks_raw!r}")
    if set(peaks_raw) != set(native):
        raise _fail(
            source,
            "peak_macs_per_s",
            f"must list exactly the native precisions {list(native)!r}, got {sorted(peaks_raw)!r}",
        )
    peaks = {
        p: _positive(source, f"peak_macs_per_s.{p}", peaks_raw[p])
        for p in sorted(peaks_raw, key=lambda p: -PRECISION_BITS[p])
    }

    bits_raw = data["bit_widths"]
    if (
        not isinstance(bits_raw, list | tuple)
        or not bits_raw
        or not all(
            isinstance(b, int) and not isinstance(b, bool) and 1 <= b <= 32 for b in bits_raw
        )
    ):
        raise _fail(
            source, "bit_widths", f"must be a non-empty list of integers in 1..32, got {bits_raw!r}"
        )

    multiple = data["channel_multiple"]
    if isinstance(multiple, bool) or not isinstance(multiple, int) or multiple < 1:
        raise _fail(source, "channel_multiple", f"must be an integer >= 1, got {multiple!r}")

    efficiency_raw = data["compute_efficiency"]
    if not isinstance(efficiency_raw, Mapping):
        efficiency_raw = dict.fromkeys(
            native, _fraction(source, "compute_efficiency", efficiency_raw)
        )
    missing_precisions = [p for p in native if p not in efficiency_raw]
    if missing_precisions or set(efficiency_raw) - set(native):
        raise _fail(
            source,
            "compute_efficiency",
            f"must be one number or map each native precision {list(native)!r} to one, "
            f"got {dict(efficiency_raw)!r}",
        )
    efficiency = {
        p: _fraction(source, f"compute_efficiency.{p}", efficiency_raw[p]) for p in native
    }

    classes_raw = data.get("kernel_class_efficiency") or {}
    if not isinstance(classes_raw, Mapping) or set(classes_raw) - set(_CLASSES):
        raise _fail(
            source,
            "kernel_class_efficiency",
            f"must map some of {', '.join(_CLASSES)} to a factor, got {classes_raw!r}",
        )
    classes = {
        c: _positive(source, f"kernel_class_efficiency.{c}", v) for c, v in classes_raw.items()
    }

    aliases_raw = data.get("kernel_class_aliases") or {}
    if (
        not isinstance(aliases_raw, Mapping)
        or not all(isinstance(v, str) for v in aliases_raw.values())
        or not set(aliases_raw) | set(aliases_raw.values()) <= set(_CLASSES)
        or set(aliases_raw) & set(aliases_raw.values())
    ):
        raise _fail(
            source,
            "kernel_class_aliases",
            f"must map classes of {', '.join(_CLASSES)} to other ones that are not aliased "
            f"themselves, got {aliases_raw!r}",
        )
    if set(aliases_raw) & set(classes):
        raise _fail(
            source,
            "kernel_class_efficiency",
            f"gives {sorted(set(aliases_raw) & set(classes))[0]!r} a factor, but "
            "kernel_class_aliases gives it another class's; drop one of the two",
        )

    error = data.get("expected_error")
    if error is not None:
        error = _non_negative(source, "expected_error", error)

    assumed_raw = data.get("assumed") or {}
    if not isinstance(assumed_raw, Mapping) or not all(
        isinstance(v, str) and v.strip() for v in assumed_raw.values()
    ):
        raise _fail(source, "assumed", f"must map factor -> reason, got {assumed_raw!r}")
    unknown_factors = sorted(
        str(k)
        for k in assumed_raw
        if str(k).split(".")[0] not in {f.split(".")[0] for f in FACTORS}
    )
    if unknown_factors:
        raise _fail(
            source,
            "assumed",
            f"names unknown factor {unknown_factors[0]!r}; factors: {', '.join(FACTORS)}",
        )

    calibration = data.get("calibration")
    if calibration is not None and not isinstance(calibration, Mapping):
        raise _fail(source, "calibration", f"must be a mapping, got {calibration!r}")

    idle = _non_negative(source, "idle_power_w", data["idle_power_w"])
    peak_power = _positive(source, "max_power_w", data["max_power_w"])
    if idle > peak_power:
        raise _fail(
            source, "idle_power_w", f"({idle} W) must not exceed max_power_w ({peak_power} W)"
        )

    return DeviceProfile(
        name=_name(source, data["name"]),
        aliases=_strings(source, "aliases", data.get("aliases", []), allow_empty=True),
        description=_string(source, "description", data["description"]),
        kind=kind,
        tvm_target=_freeze(tvm_target),
        peak_macs_per_s=MappingProxyType(peaks),
        memory_bandwidth_bytes_per_s=_positive(
            source, "memory_bandwidth_bytes_per_s", data["memory_bandwidth_bytes_per_s"]
        ),
        native_precisions=native,
        bit_widths=tuple(sorted(set(bits_raw))),
        channel_multiple=multiple,
        compute_efficiency=MappingProxyType(efficiency),
        memory_efficiency=_fraction(source, "memory_efficiency", data["memory_efficiency"]),
        kernel_launch_overhead_us=_non_negative(
            source, "kernel_launch_overhead_us", data["kernel_launch_overhead_us"]
        ),
        idle_power_w=idle,
        max_power_w=peak_power,
        energy_scale=_positive(source, "energy_scale", data["energy_scale"]),
        sources=_strings(source, "sources", data["sources"], allow_empty=False),
        runtime=_string(source, "runtime", data.get("runtime", "tvm")),
        kernel_class_efficiency=MappingProxyType(classes),
        kernel_class_aliases=MappingProxyType({str(k): str(v) for k, v in aliases_raw.items()}),
        expected_error=error,
        assumed=MappingProxyType({str(k): v.strip() for k, v in assumed_raw.items()}),
        calibration=None if calibration is None else _freeze(calibration),
    )
