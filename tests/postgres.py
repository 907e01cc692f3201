"""A throw-away PostgreSQL server on 127.0.0.1 for tests: Debian's binaries, data and socket in
a temporary folder, trust authentication, stopped and removed afterwards."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path


def postgres_bin() -> Path | None:
    """The newest installed PostgreSQL's ``bin`` folder (Debian's layout), or ``None``."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return found[-1].parent if found else None


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """Start a server; yields its SQLAlchemy URL. As root, the server runs as ``postgres``
    (PostgreSQL refuses root)."""
    binaries = postgres_bin()
    assert binaries is not None, "PostgreSQL is not installed (apt-get install postgresql)"
    folder = Path(tempfile.mkdtemp(prefix="ap-pg-"))  # outside pytest's root-only folders
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    data = folder / "data"
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off"
    pg_ctl = [*as_user, str(binaries / "pg_ctl"), "-D", str(data)]

    def run(command: list[str]) -> None:
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    try:
        initdb = [str(binaries / "initdb"), "-D", str(data), "-U", "autoprune", "--auth=trust"]
        run([*as_user, *initdb, "--no-sync"])
        run([*pg_ctl, "-w", "-l", str(folder / "server.log"), "-o", options, "start"])
        yield f"postgresql+psycopg2://autoprune@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*pg_ctl, "-m", "immediate", "stop"], capture_output=True, timeout=120)
        shutil.rmtree(folder, ignore_errors=True)
