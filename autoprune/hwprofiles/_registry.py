"""The profile registry: one YAML file per device in ``autoprune/hwprofiles/profiles/``.

The registry key is the file's ``name`` (equal to its file stem), the same string in Python,
YAML configs and on the CLI. Adding a device means adding a YAML file; no code changes.

A profile's fitted factors live beside it, written by ``autoprune calibrate``:
``calibration/<name>.yaml`` for a built-in profile, ``<stem>.calibration.yaml`` next to a user's
``<stem>.yaml``. Loading applies them over the hand-written values (:func:`apply_overlay`).
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path
from typing import Any

import yaml

from autoprune.errors import ConfigError, UnknownNameError
from autoprune.hwprofiles._profile import FACTORS, DeviceProfile

__all__ = [
    "PROFILE_DIR",
    "apply_overlay",
    "list_profiles",
    "load_profile",
    "overlay_path",
    "profile_file",
]

_logger = logging.getLogger("autoprune.hwprofiles")

#: Directory of the built-in profiles (package data: ship ``profiles/*.yaml`` with the wheel).
PROFILE_DIR = Path(__file__).resolve().parent / "profiles"


def _read_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"target profile {str(path)!r} is not UTF-8 text (byte {exc.start}: "
            f"{exc.object[exc.start : exc.start + 1]!r}); save it as UTF-8"
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"cannot read target profile {str(path)!r}: {exc.strerror}; check the path"
        ) from exc
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}: invalid YAML{where}: {problem}; fix the syntax") from exc
    except RecursionError:  # PyYAML composes recursively: ~400 nested [ overflow it
        raise ConfigError(f"{path}: nests lists or mappings too deeply; flatten it") from None


def overlay_path(profile_path: Path) -> Path:
    """Where the calibration of the profile in ``profile_path`` is (or will be) written."""
    if profile_path.resolve().parent == PROFILE_DIR:
        return PROFILE_DIR.parent / "calibration" / profile_path.name
    return profile_path.with_name(f"{profile_path.stem}.calibration.yaml")


def apply_overlay(data: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """A profile mapping with a calibration overlay's fitted factors in place.

    ``overlay["fitted"]`` maps factor names (``compute_efficiency.fp16``,
    ``kernel_class_efficiency.depthwise``, ``memory_efficiency``...) to values; fitted factors
    leave ``assumed``, factors the fit could not inform keep (or get) their reason there. The
    overlay's ``expected_error`` and its provenance (``calibration``) are copied in.
    """
    merged = dict(data)
    native = list(merged.get("native_precisions") or [])
    efficiency = merged.get("compute_efficiency")
    merged["compute_efficiency"] = (
        dict(efficiency) if isinstance(efficiency, dict) else dict.fromkeys(native, efficiency)
    )
    merged["kernel_class_efficiency"] = dict(merged.get("kernel_class_efficiency") or {})
    assumed = dict(merged.get("assumed") or {})
    for name, value in (overlay.get("fitted") or {}).items():
        kind, _, key = str(name).partition(".")
        if key:
            merged[kind][key] = value
        else:
            merged[kind] = value
        assumed.pop(name, None)
        if kind == "compute_efficiency" and all(
            f"compute_efficiency.{p}" in overlay["fitted"] for p in native
        ):
            assumed.pop("compute_efficiency", None)
    for name, value in (overlay.get("derived") or {}).items():  # applied, still assumed
        kind, _, key = str(name).partition(".")
        merged[kind][key] = value
    for name, why in (overlay.get("not_fitted") or {}).items():
        reason = assumed.get(name) or assumed.get(str(name).split(".")[0])
        assumed[name] = f"{reason}; not fitted: {why}" if reason else f"not fitted: {why}"
    merged["assumed"] = assumed
    merged["expected_error"] = overlay.get("expected_error")
    merged["calibration"] = {
        **{k: v for k, v in overlay.items() if k not in ("fitted", "derived", "profile")},
        "fitted_factors": dict(overlay.get("fitted") or {}),
    }
    return merged


def _checked_overlay(path: Path) -> dict[str, Any]:
    """The calibration overlay in ``path``, its factor names checked (the values are checked
    with the profile's, after :func:`apply_overlay`)."""
    fit = _read_yaml(path)
    if not isinstance(fit, dict):
        raise ConfigError(f"{path}: a calibration must be a mapping; rerun autoprune calibrate")
    kinds = {f.split(".")[0] for f in FACTORS}
    for part in ("fitted", "derived", "not_fitted"):
        names = fit.get(part) or {}
        if not isinstance(names, dict):
            raise ConfigError(
                f"{path}: {part} must map factor names to values, but got {names!r:.80}; "
                "rerun autoprune calibrate"
            )
        for name in names:
            kind, _, key = str(name).partition(".")
            keyed = kind in ("compute_efficiency", "kernel_class_efficiency")
            if kind not in kinds or (key and not keyed) or (part == "derived" and not key):
                raise ConfigError(
                    f"{path}: {part} names unknown factor {name!r}; factors: "
                    f"{', '.join(FACTORS)} (compute_efficiency.PRECISION too); rerun "
                    "autoprune calibrate"
                )
    return fit


def _load_file(path: Path, *, calibrated: bool = True) -> DeviceProfile:
    if not path.is_file():
        problem = "is a directory" if path.is_dir() else "does not exist"
        raise ConfigError(
            f"target profile file {str(path)!r} {problem}; pass a profile name "
            f"({', '.join(_names())}) or the path of an existing profile YAML file"
        )
    data = _read_yaml(path)
    overlay = overlay_path(path)
    if calibrated and isinstance(data, dict) and overlay.is_file():
        DeviceProfile.from_dict(data, source=str(path))  # the hand-written values first
        data = apply_overlay(data, _checked_overlay(overlay))
    profile = DeviceProfile.from_dict(data, source=str(path))
    _logger.debug("loaded profile %r from %s", profile.name, path)
    return profile


@functools.cache
def _builtin() -> tuple[tuple[DeviceProfile, ...], dict[str, DeviceProfile]]:
    """All built-in profiles sorted by name, and the case-folded name/alias -> profile index."""
    profiles = []
    for path in sorted(PROFILE_DIR.glob("*.yaml")):
        profile = _load_file(path)
        if profile.name != path.stem:
            raise ConfigError(
                f"{path}: field 'name' is {profile.name!r} but must equal the file name "
                f"{path.stem!r}; rename one of them"
            )
        profiles.append(profile)
    profiles.sort(key=lambda p: p.name)
    index: dict[str, DeviceProfile] = {}
    for profile in profiles:
        for key in (profile.name, *profile.aliases):
            folded = key.casefold()
            if folded in index and index[folded] is not profile:
                raise ConfigError(
                    f"target name {key!r} is used by both {index[folded].name!r} and "
                    f"{profile.name!r} in {PROFILE_DIR}; rename one of them"
                )
            index[folded] = profile
    return tuple(profiles), index


def _names() -> list[str]:
    return sorted(_builtin()[1])


def _looks_like_path(text: str) -> bool:
    return text.endswith((".yaml", ".yml")) or "/" in text or os.sep in text


def list_profiles() -> list[DeviceProfile]:
    """All built-in device profiles, sorted by name.

    Example:
        >>> [p.name for p in list_profiles()][:3]
        ['host', 'jetson-agx-orin', 'jetson-agx-xavier']
    """
    return list(_builtin()[0])


def profile_file(name_or_path: str | Path) -> Path:
    """The YAML file of a profile name or alias, or the path itself for a user's file."""
    if isinstance(name_or_path, Path) or _looks_like_path(str(name_or_path)):
        return Path(name_or_path).expanduser()
    return PROFILE_DIR / f"{load_profile(name_or_path).name}.yaml"


def load_profile(name_or_path: str | Path, *, calibrated: bool = True) -> DeviceProfile:
    """A device profile by name or alias (case-insensitive), or from a user's YAML file.

    A :class:`~pathlib.Path`, or a string that ends in ``.yaml``/``.yml`` or contains a path
    separator, is read as a file with the same schema as the built-in profiles.
    ``calibrated=False`` leaves out the fitted overlay (the hand-written values, which
    ``autoprune calibrate`` starts from).

    Raises:
        UnknownNameError: ``name_or_path`` is neither a known name nor alias (the message lists
            the valid ones).
        ConfigError: the file is missing, is not valid YAML, or a field is missing, unknown, of
            the wrong type or out of range (the message names the file and the field).

    Example:
        >>> load_profile("jetson").name
        'jetson-orin-nano'
        >>> load_profile("Jetson-Nano").peak_macs_per_s["fp16"]  # MAC/s, 128 cores x 921.6 MHz
        235929600000.0
    """
    if isinstance(name_or_path, Path):
        return _load_file(name_or_path, calibrated=calibrated)
    if not isinstance(name_or_path, str):
        raise TypeError(f"name_or_path must be str or Path, got {type(name_or_path).__name__}")
    if _looks_like_path(name_or_path):
        return _load_file(Path(name_or_path).expanduser(), calibrated=calibrated)
    profile = _builtin()[1].get(name_or_path.strip().casefold())
    if profile is None:
        raise UnknownNameError("target", name_or_path, _names())
    if not calibrated:
        return _load_file(PROFILE_DIR / f"{profile.name}.yaml", calibrated=False)
    return profile
