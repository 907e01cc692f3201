"""The profile registry: one YAML file per device in ``autoprune/hwprofiles/profiles/``.

The registry key is the file's ``name`` (equal to its file stem), the same string in Python,
YAML configs and on the CLI. Adding a device means adding a YAML file; no code changes.
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path
from typing import Any

import yaml

from autoprune.errors import ConfigError, UnknownNameError
from autoprune.hwprofiles._profile import DeviceProfile

__all__ = ["PROFILE_DIR", "list_profiles", "load_profile"]

_logger = logging.getLogger("autoprune.hwprofiles")

#: Directory of the built-in profiles (package data: ship ``profiles/*.yaml`` with the wheel).
PROFILE_DIR = Path(__file__).resolve().parent / "profiles"


def _read_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
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


def _load_file(path: Path) -> DeviceProfile:
    if not path.is_file():
        raise ConfigError(
            f"target profile file {str(path)!r} does not exist; pass a profile name "
            f"({', '.join(_names())}) or the path of an existing profile YAML file"
        )
    profile = DeviceProfile.from_dict(_read_yaml(path), source=str(path))
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


def load_profile(name_or_path: str | Path) -> DeviceProfile:
    """A device profile by name or alias (case-insensitive), or from a user's YAML file.

    A :class:`~pathlib.Path`, or a string that ends in ``.yaml``/``.yml`` or contains a path
    separator, is read as a file with the same schema as the built-in profiles.

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
        return _load_file(name_or_path)
    if not isinstance(name_or_path, str):
        raise TypeError(f"name_or_path must be str or Path, got {type(name_or_path).__name__}")
    if _looks_like_path(name_or_path):
        return _load_file(Path(name_or_path).expanduser())
    profile = _builtin()[1].get(name_or_path.strip().casefold())
    if profile is None:
        raise UnknownNameError("target", name_or_path, _names())
    return profile
