"""Files that a kill leaves whole or absent, and damaged files named with their fix.

:func:`write_atomic` writes a temporary file beside the target and renames it into place, so a
process killed while writing leaves the previous file (or none), never a part of the new one.
:func:`read_json` and :func:`check_sqlite` read what autoprune wrote and raise
:class:`~autoprune.errors.DamagedFileError` (one line: the file, what is wrong, the fix) where it
is truncated or corrupted; they never change the file.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import sqlite3
from pathlib import Path
from typing import Any

from autoprune.errors import DamagedFileError

__all__ = ["TEMPORARY_SUFFIX", "check_sqlite", "read_json", "reason", "write_atomic"]

#: Suffix of the temporary files :func:`write_atomic` renames into place.
TEMPORARY_SUFFIX = ".tmp"
#: Errors of a write that found no room: disk full, over the file size limit or the quota.
_NO_ROOM = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


def reason(error: BaseException) -> str:
    """The first line of ``error``'s message, or its type's name when it has none."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def write_atomic(path: str | os.PathLike[str], data: str | bytes | memoryview) -> Path:
    """Write ``data`` (text as UTF-8) to ``path`` through a temporary file and a rename.

    The temporary file (``NAME.<pid>.tmp`` beside ``path``) is removed when the write fails. A
    write that finds no room raises ``OSError`` with the same ``errno`` and a message that says
    so and names ``path``.

    Example:
        >>> write_atomic("/tmp/autoprune-example.json", "[0.874]").read_text()
        '[0.874]'
    """
    path = Path(path)
    temporary = path.with_name(f"{path.name}.{os.getpid()}{TEMPORARY_SUFFIX}")
    try:
        with open(temporary, "wb") as handle:
            handle.write(data.encode() if isinstance(data, str) else data)
        os.replace(temporary, path)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        if error.errno in _NO_ROOM:
            raise OSError(
                error.errno,
                f"cannot write {path}: {os.strerror(error.errno)} (the disk is full or the file "
                f"is over the size limit, `ulimit -f`); free space or raise the limit",
            ) from None
        raise
    return path


def read_json(path: str | os.PathLike[str], *, what: str, fix: str) -> Any:
    """The JSON document in ``path`` (``what`` it is, e.g. ``"run.json"``).

    Raises:
        DamagedFileError: the file is not UTF-8 JSON; the message names it and says ``fix``.
    """
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:  # json.JSONDecodeError is a ValueError
        problem = reason(error)
        raise DamagedFileError(f"{what} {str(path)!r} is damaged ({problem}); {fix}") from None


def check_sqlite(path: str | os.PathLike[str], *, what: str, fix: str) -> None:
    """Check that ``path`` is a whole SQLite database (header and ``PRAGMA quick_check``).

    A missing or empty file is damaged too: SQLite would start a new, empty database there. A
    database busy in another process's write is taken as whole. Nothing is written, unless a
    process killed during a commit left a hot journal, which SQLite rolls back (its own
    recovery).

    Raises:
        DamagedFileError: the file is missing, not a database, or fails the check; the message
            names it and says ``fix``.
    """
    path = Path(path)
    if not path.is_file():
        raise DamagedFileError(f"{what} {str(path)!r} is missing; {fix}")
    with open(path, "rb") as handle:
        header = handle.read(16)
    if header != b"SQLite format 3\x00":
        problem = "empty" if not header else "not an SQLite database"
        raise DamagedFileError(f"{what} {str(path)!r} is damaged ({problem}); {fix}")
    try:
        with contextlib.closing(sqlite3.connect(path, timeout=60)) as database:
            result = str(database.execute("PRAGMA quick_check").fetchone()[0])
    except sqlite3.OperationalError as error:
        if "locked" in str(error) or "busy" in str(error):
            return  # another process is writing it: it is a database
        result = reason(error)
    except sqlite3.DatabaseError as error:
        result = reason(error)
    if result != "ok":  # the first problem quick_check lists, past its "*** in database" line
        lines = [line for line in result.splitlines() if line and not line.startswith("***")]
        problem = lines[0] if lines else result
        raise DamagedFileError(f"{what} {str(path)!r} is damaged ({problem}); {fix}")
