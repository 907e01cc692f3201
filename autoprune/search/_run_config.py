"""What makes a run directory's config the run it is, and creating a new run's storage."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import optuna
import sqlalchemy.exc

from autoprune.config import Config, config_from_dict
from autoprune.errors import AutopruneError, RunDirError
from autoprune.evaluators import evaluator_settings

__all__ = ["RESUMABLE_KEYS", "config_difference", "create_tables"]

#: Settings a run may continue under with another value: how long it goes on, where and how
#: many at once its trials run, how much tuning and waiting a measurement gets (a larger
#: tuning budget tunes the shared kernels further; latencies measured before keep the budget
#: they had, recorded with them), and how the data are fetched and decoded (not what they are).
RESUMABLE_KEYS = frozenset(
    {
        ("search", "trials"),
        ("search", "timeout_s"),
        ("search", "workers"),
        ("search", "ray_address"),
        ("search", "cpus_per_trial"),
        ("search", "gpus_per_trial"),
        ("search", "max_failures"),
        ("hardware", "tuning_trials_per_task"),
        ("hardware", "measure_timeout_s"),
        ("data", "download"),
        ("data", "num_workers"),
        ("data", "cache"),
    }
)


def _identity(config: dict[str, Any]) -> dict[str, Any]:
    """What makes a ``config.yaml`` the run it is, as a dict: the config as this autoprune
    writes it (older runs' keys translated), with the evaluator section reduced to the name
    and the settings of the evaluator it names (other evaluators' settings do not change the
    search). A config that no longer validates is compared as it is."""
    try:
        parsed = config_from_dict(config)
        settings = evaluator_settings(parsed.evaluator)
    except AutopruneError:
        return config
    out = parsed.to_dict()
    out["evaluator"] = {"name": parsed.evaluator.name, **dataclasses.asdict(settings)}
    return out


def config_difference(old: dict[str, Any], new: dict[str, Any]) -> str:
    """The first setting that differs; a key the old run lacks (added to autoprune since) is
    compared at its default."""
    old, new = _identity(old), _identity(new)
    defaults = Config().to_dict()
    for section in sorted(set(old) | set(new)):
        a, b = old.get(section), new.get(section)
        if isinstance(a, dict) and isinstance(b, dict):
            a = {**defaults.get(section, {}), **a}
            for key in sorted(set(a) | set(b)):
                if (section, key) in RESUMABLE_KEYS:
                    continue
                if (section, key) == ("model", "weights_sha256") and a.get(key) != b.get(key):
                    return (
                        f"model.weights: the file's content changed, SHA-256 "
                        f"{str(a.get(key))[:12]} there, {str(b.get(key))[:12]} now"
                    )
                if a.get(key) != b.get(key):
                    return f"{section}.{key}: {a.get(key)!r} there, {b.get(key)!r} now"
        elif a != b:
            return f"{section}: {a!r} there, {b!r} now"
    return ""


def create_tables(url: str, attempts: int = 3) -> None:
    """Open the storage at ``url`` once, so that Optuna creates its tables now.

    Another process may open the same new storage at the same moment (a report, a dashboard,
    a test polling the run): SQLAlchemy checks for each table and then creates it, so one of
    the two may find a table the other just made. Such a clash is retried, up to ``attempts``
    times in all, 0.1-0.3 s apart; the second opening finds the tables and creates nothing.
    """
    for attempt in range(attempts):
        try:
            _open_once(url)
            return
        except sqlalchemy.exc.SQLAlchemyError as exc:
            if attempt + 1 == attempts or not _created_beside_us(exc):
                raise _storage_error(url, exc) from None
            time.sleep(0.1 * (attempt + 1))


def _open_once(url: str) -> None:
    try:
        optuna.storages.RDBStorage(url).engine.dispose()
    except ImportError as exc:  # the database's driver
        raise RunDirError(
            f"cannot open the storage {url!r}: its driver is not installed ({exc}); install it "
            f"(PostgreSQL: pip install 'autoprune[postgresql]'), or drop --storage for a SQLite "
            f"file in the run directory"
        ) from None


def _created_beside_us(exc: sqlalchemy.exc.SQLAlchemyError) -> bool:
    """Whether ``exc`` is another process creating the same tables or version row just now."""
    return isinstance(exc, sqlalchemy.exc.IntegrityError) or "already exists" in str(exc)


def _storage_error(url: str, exc: sqlalchemy.exc.SQLAlchemyError) -> RunDirError:
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return RunDirError(
        f"cannot open the storage {url!r} ({reason}); pass --storage an SQLAlchemy URL "
        f"that autoprune can reach, e.g. sqlite:///runs/study.db, or drop it for a SQLite "
        f"file in the run directory"
    )
