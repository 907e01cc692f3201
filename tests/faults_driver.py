"""Run ``autoprune`` with one fault injected at a chosen moment (a test driver, never shipped).

Usage: ``python tests/faults_driver.py FAULT [FAULT ...] -- ARGS`` runs ``autoprune ARGS`` in
this process with each FAULT in place:

* ``kill-writing:NAME:N``: SIGKILL halfway through the N-th write of a file named ``NAME``
  (through :func:`autoprune._files.write_atomic`: its temporary file holds half the bytes);
* ``kill-commit:N`` / ``kill-committed:N``: SIGKILL just before / just after the storage's
  commit that completes the N-th trial told by this process (state COMPLETE);
* ``kill-test-eval:N``: SIGKILL in the N-th test-split evaluation of a Pareto member;
* ``kill-export:N``: SIGKILL when the N-th exported trial's folder is written, before it is
  renamed into place;
* ``pause-weights:READY:GO``: at the first weights write, write to file descriptor READY and
  wait for one byte (or end of file) on file descriptor GO, then go on (the test runs a second
  search meanwhile);
* ``fsize-at-weights:BYTES``: from the first write of a trial's weights on, ``RLIMIT_FSIZE`` at
  BYTES with SIGXFSZ ignored (a write past it fails with EFBIG, as on a full disk);
* ``memory:N:MIB``: while the N-th model trains, ``RLIMIT_AS`` at the address space the process
  holds when it starts plus MIB (a candidate too large for the memory left).

Nothing here is part of autoprune: it patches autoprune's functions from outside, as a fault
would strike them.
"""

from __future__ import annotations

import os
import resource
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

_counts: dict[str, int] = {}


def _nth(key: str, n: int) -> bool:
    """Whether this is the ``n``-th time ``key`` is reached (counting from 1)."""
    _counts[key] = _counts.get(key, 0) + 1
    return _counts[key] == n


def _die() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _kill_writing(name: str, n: int) -> None:
    import autoprune._files as files

    class _HalfThenKill:
        def __init__(self, handle: Any) -> None:
            self._handle = handle

        def __enter__(self) -> _HalfThenKill:
            return self

        def __exit__(self, *exc: object) -> None:
            self._handle.close()

        def write(self, data: bytes) -> int:
            self._handle.write(bytes(data)[: len(data) // 2])
            self._handle.flush()
            os.fsync(self._handle.fileno())
            _die()
            return 0

    def patched_open(path: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        handle = open(path, mode, *args, **kwargs)  # noqa: SIM115 - closed by the wrapper
        if "w" in mode and Path(path).name.startswith(name + ".") and _nth("write", n):
            return _HalfThenKill(handle)
        return handle

    files.open = patched_open  # type: ignore[attr-defined]  # the module's, not builtins'


def _kill_commit(n: int, *, after: bool) -> None:
    import optuna.storages._rdb.storage as rdb
    from optuna.trial import TrialState
    from sqlalchemy.orm import Session

    armed = {"on": False}
    set_state = rdb.RDBStorage.set_trial_state_values

    def patched_set_state(self: Any, trial_id: int, state: Any, values: Any = None) -> bool:
        armed["on"] = state == TrialState.COMPLETE and _nth("complete", n)
        try:
            return set_state(self, trial_id, state, values)
        finally:
            armed["on"] = False

    commit = Session.commit

    def patched_commit(self: Session) -> None:
        if armed["on"] and not after:
            _die()
        commit(self)
        if armed["on"] and after:
            _die()

    rdb.RDBStorage.set_trial_state_values = patched_set_state  # type: ignore[method-assign]
    Session.commit = patched_commit  # type: ignore[method-assign]


def _wrap(module: Any, name: str, before: Callable[[], None]) -> None:
    original = getattr(module, name)

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        before()
        return original(*args, **kwargs)

    setattr(module, name, wrapped)


def _pause_at_weights(ready_fd: int, go_fd: int) -> None:
    import autoprune.search._rundir as rundir

    original = rundir.RunDir.save_weights

    def paused(self: Any, number: int, model: Any) -> Path:
        if _nth("pause", 1):
            os.write(ready_fd, b"paused")  # the test reads it: this search holds the run now
            os.close(ready_fd)
            os.read(go_fd, 1)  # blocks until the test writes, closes its end, or kills us
        return original(self, number, model)

    rundir.RunDir.save_weights = paused  # type: ignore[method-assign]


def _fsize_at_weights(limit: int) -> None:
    import autoprune.search._rundir as rundir

    original = rundir.RunDir.save_weights

    def limited(self: Any, number: int, model: Any) -> Path:
        if _nth("fsize", 1):
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
        return original(self, number, model)

    rundir.RunDir.save_weights = limited  # type: ignore[method-assign]


def _memory(n: int, mib: int) -> None:
    import autoprune.evaluators._base_model as base_model
    import autoprune.evaluators._evaluator as evaluator

    def in_use() -> int:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
        raise AssertionError("no VmSize in /proc/self/status")

    for module in (base_model, evaluator):
        original = module.train_model

        def limited(*args: Any, _original: Any = original, **kwargs: Any) -> Any:
            if not _nth("train", n):
                return _original(*args, **kwargs)
            soft, hard = resource.getrlimit(resource.RLIMIT_AS)
            resource.setrlimit(resource.RLIMIT_AS, (in_use() + mib * 2**20, hard))
            try:
                return _original(*args, **kwargs)
            finally:
                resource.setrlimit(resource.RLIMIT_AS, (soft, hard))

        module.train_model = limited


def main(argv: list[str]) -> int:
    split = argv.index("--")
    faults, args = argv[:split], argv[split + 1 :]
    for fault in faults:
        kind, _, value = fault.partition(":")
        if kind == "kill-writing":
            name, _, n = value.rpartition(":")
            _kill_writing(name, int(n))
        elif kind in ("kill-commit", "kill-committed"):
            _kill_commit(int(value), after=kind == "kill-committed")
        elif kind == "kill-test-eval":
            import autoprune.search._loop as loop

            _wrap(loop, "evaluate_accuracy", lambda n=int(value): _nth("test", n) and _die())
        elif kind == "kill-export":
            import autoprune.export._run as export

            _wrap(export, "_replace", lambda n=int(value): _nth("export", n) and _die())
        elif kind == "pause-weights":
            ready, _, go = value.partition(":")
            _pause_at_weights(int(ready), int(go))
        elif kind == "fsize-at-weights":
            _fsize_at_weights(int(value))
        elif kind == "memory":
            n, _, mib = value.partition(":")
            _memory(int(n), int(mib))
        else:
            raise SystemExit(f"faults_driver: unknown fault {fault!r}")
    from autoprune.cli import main as autoprune

    return autoprune(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
