"""A process keeps the tuning database it loaded while the database's files are unchanged."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from autoprune.errors import DamagedFileError
from autoprune.hwprofiles._database import WORKLOADS_NAME, load_database, read_database


def test_a_loaded_database_is_kept_until_its_files_change(tmp_path: Path) -> None:
    loaded = load_database(tmp_path)  # an empty database: MetaSchedule writes its two files
    assert load_database(tmp_path) is loaded and read_database(tmp_path) is loaded

    workloads = tmp_path / WORKLOADS_NAME
    stat = workloads.stat()
    os.utime(workloads, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # written anew
    read = read_database(tmp_path)
    assert read is not None and read is not loaded
    assert read_database(tmp_path) is read
    checked = load_database(tmp_path)  # a read is not checked: loading checks the files first
    assert checked is not read and load_database(tmp_path) is checked

    workloads.write_text('{"not": "a workload"\n')  # damaged after it was kept
    with pytest.raises(DamagedFileError):
        load_database(tmp_path)
