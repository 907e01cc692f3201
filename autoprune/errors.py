"""User-facing errors.

Every error a user can cause (a bad budget string, an unknown target, a YAML key that does not
exist, missing data) is an :class:`AutopruneError`. Its message is one line that quotes the bad
value, lists what is allowed and says how to fix it; the CLI prints that line and exits with
status 2. Internal invariants use ``assert`` instead.
"""

from __future__ import annotations

__all__ = [
    "AutopruneError",
    "ConfigError",
    "DamagedFileError",
    "DataError",
    "RunDirError",
    "UnknownNameError",
]


class AutopruneError(Exception):
    """Base class of every error caused by user input; the CLI exits with status 2."""


class ConfigError(AutopruneError):
    """A config file, a ``--set`` override or a budget string is invalid."""


class UnknownNameError(AutopruneError, KeyError):
    """A registry lookup (model, target, controller, dataset) got a name it does not know."""

    def __init__(self, kind: str, name: str, valid: list[str]) -> None:
        self.kind = kind
        self.name = name
        self.valid = sorted(valid)
        super().__init__(f"unknown {kind} {name!r}; valid {kind}s: {', '.join(self.valid)}")

    def __str__(self) -> str:  # KeyError would quote the message otherwise
        return str(self.args[0])


class DataError(AutopruneError):
    """A data set is missing or unreadable."""


class RunDirError(AutopruneError):
    """A run directory is missing, incomplete, or holds a different run."""


class DamagedFileError(AutopruneError):
    """A file autoprune wrote (a study, weights, ``run.json``, a tuning database) is truncated
    or corrupted; autoprune leaves it as it is and says how to restore or replace it."""
