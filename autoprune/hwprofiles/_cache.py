"""The latency cache on disk: one JSON file per measurement key.

A key is a JSON-ready dict that names everything the latency depends on (model fingerprint,
input shape, protocol, target, package versions; each runner builds its own,
:meth:`~autoprune.hwprofiles.LatencyRunner.cache_key`). Its file is
``<key["backend"]>-<first 20 hex digits of the SHA-256 of the canonical key>.json`` and holds the
key and the record, so a hash collision or a hand-edited file is a miss, never a wrong answer.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from autoprune._files import write_atomic
from autoprune.errors import ConfigError
from autoprune.hwprofiles._records import LatencyMeasurement

__all__ = ["cache_load", "cache_path", "cache_root", "cache_store", "package_version"]

_logger = logging.getLogger("autoprune.hwprofiles.measure")


def cache_root() -> Path:
    """``$XDG_CACHE_HOME/autoprune``, with ``~/.cache`` when ``XDG_CACHE_HOME`` is unset or
    empty: where caches kept between commands live. Nothing is created."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "autoprune"


def package_version(name: str) -> str:
    """Installed version of a distribution, or ``"absent"`` (read without importing it)."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "absent"


def cache_path(cache_dir: str | os.PathLike[str], key: Mapping[str, Any]) -> Path:
    """File of ``key`` under ``cache_dir``: ``<backend>-<sha256 of the canonical key>.json``."""
    canonical = json.dumps(dict(key), sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:20]
    return Path(cache_dir) / f"{key['backend']}-{digest}.json"


def cache_load(
    cache_dir: str | os.PathLike[str] | None, key: Mapping[str, Any]
) -> LatencyMeasurement | None:
    """The cached measurement of ``key``, or ``None`` (no cache, a miss, or an unreadable file)."""
    if cache_dir is None:
        return None
    path = cache_path(cache_dir, key)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("key") != json.loads(json.dumps(dict(key))):
            return None
        measurement = LatencyMeasurement.from_dict(data["measurement"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, ConfigError) as exc:
        _logger.warning("ignoring unreadable latency cache file %s (%s)", path, exc)
        return None
    _logger.debug("latency cache hit %s", path.name)
    return measurement


def cache_store(
    cache_dir: str | os.PathLike[str] | None,
    key: Mapping[str, Any],
    measurement: LatencyMeasurement,
) -> None:
    """Write ``measurement`` under ``key`` (atomically); error records are not cached."""
    if cache_dir is None or not measurement.ok:
        return
    path = cache_path(cache_dir, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps({"key": dict(key), "measurement": measurement.to_dict()}, indent=1)
    write_atomic(path, text + "\n")
