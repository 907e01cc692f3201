"""The MetaSchedule tuning database of a run: its files, its lock, and loading it safely.

One :class:`tvm.s_tir.meta_schedule.database.JSONDatabase` per run and target (a folder, e.g.
``<run_dir>/tuning/<profile>``) holds the tuning records of every candidate, keyed by workload
(``docs/tvm.md``). Its files are :data:`WORKLOADS_NAME` and :data:`RECORDS_NAME` (one JSON record
per line). Writers are serialised by an exclusive ``flock`` on :data:`LOCK_NAME` in the folder,
readers take it shared (:func:`database_lock`), so parallel trials of one run on one host can
share it. A process keeps the database it loaded while its files are unchanged (size,
modification time, inode), so a worker that builds candidate after candidate parses it once.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from autoprune.errors import ConfigError, DamagedFileError

__all__ = [
    "LOCK_NAME",
    "RECORDS_NAME",
    "REJECTED_NAME",
    "WORKLOADS_NAME",
    "check_database_dir",
    "check_database_files",
    "database_lock",
    "load_database",
    "read_database",
    "record_count",
    "record_lines",
    "set_aside_unloadable",
    "workload_records",
]

_logger = logging.getLogger("autoprune.hwprofiles.tune")

#: Name of the lock file in a database folder (exclusive while tuning, shared while building).
LOCK_NAME = "autoprune-tune.lock"
#: MetaSchedule's JSONDatabase files in its ``work_dir``.
RECORDS_NAME = "database_tuning_record.json"
WORKLOADS_NAME = "database_workload.json"
#: Where records TVM cannot load are set aside (:func:`set_aside_unloadable`).
REJECTED_NAME = "database_tuning_record.rejected.json"


@contextlib.contextmanager
def database_lock(database_dir: str | os.PathLike[str], *, exclusive: bool) -> Iterator[None]:
    """Hold ``flock`` on the database's lock file: exclusive to tune, shared to read."""
    path = Path(database_dir) / LOCK_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def record_count(database_dir: str | os.PathLike[str]) -> int:
    """Tuning records in a database folder (non-blank lines of its record file; 0 when absent).

    Example:
        >>> record_count("/nonexistent")
        0
    """
    try:
        with open(Path(database_dir) / RECORDS_NAME, "rb") as handle:
            return sum(1 for line in handle if line.strip())
    except FileNotFoundError:
        return 0


def record_lines(database_dir: str | os.PathLike[str]) -> int:
    """Lines in the database's record file, blank ones included (0 when it does not exist)."""
    path = Path(database_dir) / RECORDS_NAME
    if not path.exists():
        return 0
    with open(path, "rb") as handle:
        return sum(1 for _ in handle)


def workload_records(database: Any, mod: Any, at_most: int) -> int:
    """Tuning records of workload ``mod`` (a TIR function) in a loaded database, up to
    ``at_most``."""
    # has_workload first: commit_workload (needed by get_top_k) would write the workload.
    if not database.has_workload(mod):
        return 0
    return len(database.get_top_k(database.commit_workload(mod), at_most))


def check_database_dir(database_dir: str | os.PathLike[str] | None) -> str | None:
    """The absolute tuning database folder, or ``None`` for ``None``.

    Raises:
        ConfigError: the folder holds no MetaSchedule database (no :data:`WORKLOADS_NAME`).
    """
    if database_dir is None:
        return None
    folder = Path(database_dir).resolve()
    if not (folder / WORKLOADS_NAME).is_file():
        raise ConfigError(
            f"`database_dir` {str(folder)!r} holds no MetaSchedule database ({WORKLOADS_NAME}); "
            "run tune_model(..., database_dir=...) first, or pass database_dir=None (untuned)"
        )
    return str(folder)


def _database_loads(work_dir: str | os.PathLike[str]) -> bool:
    """Whether MetaSchedule can load the JSON database in ``work_dir``."""
    from tvm.s_tir import meta_schedule as ms

    try:
        ms.database.JSONDatabase(work_dir=str(work_dir))
    except Exception:  # noqa: BLE001 - any parse or replay error makes it unloadable
        return False
    return True


def _loads(scratch: Path, lines: list[str]) -> bool:
    """Whether ``lines`` (records) load beside the database's workloads, in ``scratch``."""
    (scratch / RECORDS_NAME).write_text("".join(lines))
    return _database_loads(scratch)


def set_aside_unloadable(work_dir: str | os.PathLike[str], *, first: int = 0) -> int:
    """Move the record lines from ``first`` on that TVM cannot load out of the database.

    TVM 0.27 writes some records that it then fails to parse (seen: a ``mean`` reduction's
    trace with ``RFactor``; loading stops with "parallel_for_dynamic error"), and one such line
    makes the whole database unloadable: every later tuning and tuned build of the run would
    fail. Records parse independently, so the lines from ``first`` on are loaded alone (beside
    the workloads) in a scratch folder, and a bad line is found by bisection. Bad lines go to
    :data:`REJECTED_NAME`. Returns how many were set aside. Hold the database's exclusive lock
    (:func:`database_lock`) when calling this.
    """
    folder = Path(work_dir)
    records = folder / RECORDS_NAME
    if not records.exists():
        return 0
    scratch = folder / "autoprune-scratch"
    scratch.mkdir(exist_ok=True)
    rejected: list[str] = []
    try:
        (scratch / WORKLOADS_NAME).write_bytes((folder / WORKLOADS_NAME).read_bytes())
        lines = records.read_text().splitlines(keepends=True)
        while first < len(lines) and not _loads(scratch, lines[first:]):
            good, bad = first, len(lines)  # lines[first:good] load, lines[first:bad] do not
            while bad - good > 1:
                middle = (good + bad) // 2
                good, bad = (
                    (middle, bad) if _loads(scratch, lines[first:middle]) else (good, middle)
                )
            rejected.append(lines.pop(bad - 1))
            first = bad - 1  # the lines before it load
        if rejected:
            temporary = records.with_suffix(".tmp")
            temporary.write_text("".join(lines))
            os.replace(temporary, records)
            with open(folder / REJECTED_NAME, "a") as handle:
                handle.writelines(r if r.endswith("\n") else r + "\n" for r in rejected)
            _logger.warning(
                "%d tuning record(s) of %s cannot be loaded by TVM; set aside in %s",
                len(rejected),
                records,
                REJECTED_NAME,
            )
    finally:
        for child in scratch.iterdir():
            child.unlink()
        scratch.rmdir()
    return len(rejected)


def check_database_files(work_dir: str | os.PathLike[str]) -> None:
    """Check that the database's files in ``work_dir`` are JSON lines (nothing is changed).

    A last record line cut short (a tuning killed while it appended) is left to
    :func:`set_aside_unloadable`; any other line that is not JSON makes the database damaged.

    Raises:
        DamagedFileError: a line of :data:`WORKLOADS_NAME` or :data:`RECORDS_NAME` is not JSON.
    """
    for name in (WORKLOADS_NAME, RECORDS_NAME):
        path = Path(work_dir) / name
        if not path.exists():
            continue
        try:
            lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
        except UnicodeDecodeError:
            lines = ["\x00\n"]  # not text: damaged at line 1
        for number, line in enumerate(lines, 1):
            if not line.strip() or (name == RECORDS_NAME and not line.endswith("\n")):
                continue
            try:
                json.loads(line)
            except ValueError:
                raise DamagedFileError(
                    f"tuning database file {str(path)!r} is damaged (line {number} is not "
                    f"JSON); restore it from a backup, or move the folder {str(work_dir)!r} "
                    f"aside to tune again from scratch"
                ) from None


#: The database each folder last loaded into, with its files' stamp and whether they were
#: checked (:func:`check_database_files`).
_loaded: dict[str, tuple[tuple[int, ...], Any, bool]] = {}


def _stamp(work_dir: str | os.PathLike[str]) -> tuple[int, ...]:
    """Size, modification time and inode of the database's files (-1s where one is missing)."""
    stamp: list[int] = []
    for name in (WORKLOADS_NAME, RECORDS_NAME):
        try:
            stat = os.stat(Path(work_dir) / name)
        except FileNotFoundError:
            stamp += [-1, -1, -1]
        else:
            stamp += [stat.st_size, stat.st_mtime_ns, stat.st_ino]
    return tuple(stamp)


def _kept(work_dir: str | os.PathLike[str], *, checked: bool) -> Any | None:
    """The database this process loaded from ``work_dir`` if its files have not changed since
    (and were checked, when ``checked``); else ``None``."""
    entry = _loaded.get(str(Path(work_dir).resolve()))
    if entry is None or entry[0] != _stamp(work_dir) or (checked and not entry[2]):
        return None
    return entry[1]


def _keep(work_dir: str | os.PathLike[str], database: Any, *, checked: bool) -> Any:
    _loaded[str(Path(work_dir).resolve())] = (_stamp(work_dir), database, checked)
    return database


def read_database(work_dir: str | os.PathLike[str]) -> Any | None:
    """MetaSchedule's JSON database in ``work_dir`` as it is, or ``None`` when TVM cannot parse
    a record of it (then :func:`load_database` under the exclusive lock). Hold at least the
    shared lock when calling this."""
    kept = _kept(work_dir, checked=False)
    if kept is not None:
        return kept
    from tvm.s_tir import meta_schedule as ms

    try:
        database = ms.database.JSONDatabase(work_dir=str(work_dir))
    except Exception:  # noqa: BLE001 - a record TVM cannot parse
        return None
    return _keep(work_dir, database, checked=False)


def load_database(work_dir: str | os.PathLike[str]) -> Any:
    """MetaSchedule's JSON database in ``work_dir``; records TVM cannot load are set aside
    first (:func:`set_aside_unloadable`). Hold the exclusive lock when calling this. The same
    object comes back while the files do not change; writing to it changes them.

    Raises:
        DamagedFileError: its files are damaged (:func:`check_database_files`).
    """
    kept = _kept(work_dir, checked=True)
    if kept is not None:
        return kept
    from tvm.s_tir import meta_schedule as ms

    check_database_files(work_dir)

    try:
        database = ms.database.JSONDatabase(work_dir=str(work_dir))
    except Exception:  # noqa: BLE001 - a record TVM cannot parse
        set_aside_unloadable(work_dir)
        database = ms.database.JSONDatabase(work_dir=str(work_dir))
    return _keep(work_dir, database, checked=True)
