"""Worker processes: models sent to another process, run there with a timeout, and answered.

Every measurement, tuning and output check runs in a worker process (``multiprocessing``
"spawn" context) with a wall-clock limit, so a crash (a segfault in a compiler), a hang or an
exception in the worker comes back as data, never as an exception that kills the caller.

A worker is kept between jobs of the same kind (``keep="tvm"``, ``keep="pytorch"``): Python,
torch and TVM are imported once per search process, not once per candidate (several seconds
each). A worker that crashes or passes its limit is killed, and the next job starts a fresh
one. PyTorch is timed in a worker of its own, never in one where TVM's thread pool already
runs (``docs/tvm.md``). Kept workers end with the caller (at exit, or when its end of their
pipe closes).

Models travel as a payload (:func:`model_payload`): a candidate as its dict, a module pickled by
reference to its classes. Live TVM objects are never sent.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import logging
import multiprocessing
import os
import pickle
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from torch import nn

from autoprune.errors import ConfigError
from autoprune.spaces import Candidate, build_model

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "ModelLike",
    "example_input",
    "fingerprint",
    "model_from_payload",
    "model_payload",
    "close_kept_workers",
    "run_in_worker",
]

_logger = logging.getLogger("autoprune.hwprofiles.measure")

#: Default wall-clock limit of one worker process (interpreter start, imports, build, timing), s.
DEFAULT_TIMEOUT_S = 600.0

ModelLike = nn.Module | Candidate


def model_payload(model: ModelLike) -> tuple[str, Any]:
    """What a worker needs to rebuild ``model``: a candidate dict, or the pickled module.

    Modules are pickled by reference to their classes, so they must be importable by the worker
    (``torch.nn`` layers, the model zoo, any class defined at module level of an installed
    module).

    Raises:
        ConfigError: ``model`` is neither a module nor a candidate, or cannot be pickled.
    """
    if isinstance(model, Candidate):
        return ("candidate", model.to_dict())
    if isinstance(model, nn.Module):
        try:
            return ("module", pickle.dumps(model))
        except Exception as exc:  # noqa: BLE001 - any pickling failure is a user error here
            raise ConfigError(
                f"cannot send model {type(model).__name__} to a worker process ({exc}); define "
                "its class at module level of an importable module, or pass a Candidate"
            ) from exc
    raise ConfigError(
        f"`model` must be an nn.Module or a Candidate, but got {type(model).__name__}"
    )


def model_from_payload(payload: tuple[str, Any]) -> nn.Module:
    """Rebuild the model of :func:`model_payload` in eval mode (candidates with seed 0)."""
    kind, data = payload
    if kind == "candidate":
        model = build_model(Candidate.from_dict(data), seed=0)
    else:
        model = pickle.loads(data)
    return model.eval()


def fingerprint(model: ModelLike) -> str:
    """Architecture key of ``model`` for the caches: the candidate hash, or a hash of the module.

    A module's fingerprint covers its printed structure and every parameter and buffer name,
    shape and dtype, not the weight values (latency of dense code does not depend on them).

    Example:
        >>> from torch import nn
        >>> fingerprint(nn.Conv2d(1, 8, 3)) == fingerprint(nn.Conv2d(1, 8, 3))
        True
    """
    if isinstance(model, Candidate):
        return f"candidate-{model.hash}"
    parts = [repr(model)]
    for name, module in model.named_modules():
        parts.append(f"{name}:{type(module).__module__}.{type(module).__qualname__}")
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        parts.append(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}")
    digest = hashlib.sha256("\n".join(parts).encode("utf-8")).hexdigest()[:16]
    return f"module-{digest}"


def example_input(input_shape: tuple[int, int, int]) -> Any:
    """The batch-1 input every measurement and check uses: ``randn(1, C, H, W)``, seed 0."""
    import torch

    generator = torch.Generator().manual_seed(0)
    return torch.randn(1, *input_shape, generator=generator)


def _run_job(
    job: Callable[[Any], Any], payload: Any, context: Any, threads: int
) -> tuple[str, Any]:
    """``("ok", job(payload))`` run in the caller's ``context`` (:func:`_caller_context`), or
    ``("error", its exception's last line)``."""
    try:
        environ, path, folder = context
        os.environ.clear()
        os.environ.update(environ)
        # TVM reads TVM_NUM_THREADS when its thread pool starts, at the first parallel kernel.
        os.environ["TVM_NUM_THREADS"] = str(threads)
        sys.path[:] = path
        os.chdir(folder)
        return ("ok", job(payload))
    except BaseException as exc:  # noqa: BLE001 - everything goes back to the caller as data
        last = traceback.format_exception_only(type(exc), exc)[-1].strip()
        return ("error", last.splitlines()[0][:2000] if last else type(exc).__name__)


def _worker_main(conn: Any, threads: int) -> None:
    """Body of a worker process: set the threads, then run each ``(job, payload, context)``
    received, in the caller's environment variables, import path and working folder
    (:func:`_caller_context`), and send its outcome, until ``None`` arrives or the caller's end
    of the pipe closes. Ctrl-C is the caller's to handle: it kills a worker whose job it
    interrupts."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import torch

    torch.set_num_threads(threads)
    with conn:
        while True:
            try:
                task = conn.recv()
            except (EOFError, OSError):  # the caller is gone
                return
            if task is None:
                return
            conn.send(_run_job(*task, threads))


def _caller_context() -> tuple[dict[str, str], list[str], str]:
    """What a fresh process would inherit from the caller now: its environment variables,
    import path and working folder."""
    return dict(os.environ), list(sys.path), os.getcwd()


class _Worker:
    """One spawned worker process and the caller's end of its pipe."""

    def __init__(self, threads: int) -> None:
        context = multiprocessing.get_context("spawn")
        self.conn, child = context.Pipe(duplex=True)
        self.process = context.Process(
            target=_worker_main, args=(child, threads), name="autoprune-measure"
        )
        self.process.start()
        child.close()  # only the child holds its end: its death means EOF here

    def run(self, job: Callable[[Any], Any], payload: Any, timeout_s: float) -> tuple[bool, Any]:
        """Send one job and wait for it; a crash or timeout kills the process (see
        :func:`run_in_worker` for the outcomes)."""
        try:
            self.conn.send((job, payload, _caller_context()))
            if self.conn.poll(timeout_s):
                status, value = self.conn.recv()
                return status == "ok", value
        except (EOFError, OSError, BrokenPipeError):
            self.process.join(5.0)
            return False, _died(self.process.exitcode)
        _logger.warning("measurement worker passed its %.3g s limit; killing it", timeout_s)
        self.close(kill=True)
        return False, f"timeout: the worker passed its limit of {timeout_s:.3g} s and was killed"

    @property
    def alive(self) -> bool:
        return self.process.is_alive() and not self.conn.closed

    def close(self, *, kill: bool = False) -> None:
        if not kill and self.alive:
            with contextlib.suppress(OSError, BrokenPipeError):
                self.conn.send(None)
            self.process.join(5.0)
        if self.process.is_alive():
            self.process.kill()
        self.process.join(5.0)
        self.conn.close()


_kept: dict[tuple[str, int], _Worker] = {}  # idle kept workers, by (keep, threads)
_kept_lock = threading.Lock()


@atexit.register
def close_kept_workers() -> None:
    """End every idle kept worker (at exit; also to free their memory)."""
    with _kept_lock:
        workers = list(_kept.values())
        _kept.clear()
    for worker in workers:
        worker.close()


def run_in_worker(
    job: Callable[[Any], Any],
    payload: Any,
    *,
    threads: int,
    timeout_s: float,
    keep: str | None = None,
) -> tuple[bool, Any]:
    """Run ``job(payload)`` in a worker process; ``(True, result)`` or ``(False, error)``.

    ``job`` must be a module-level function (pickled by reference), ``payload`` and its result
    picklable. The worker gets ``threads`` CPU threads (``TVM_NUM_THREADS``,
    ``torch.set_num_threads``) and is killed after ``timeout_s`` seconds of wall time, counted
    from the job's start (a new worker's interpreter start and imports included). With
    ``keep``, the worker is the idle one kept under that name and thread count (started when
    there is none) and is kept for the next job; without, it is a fresh process for this job
    alone. A crash (segfault, ``os._exit``), an exception or a timeout returns
    ``(False, message)``, the message starting with ``"crash:"`` or ``"timeout:"`` for the
    first and last; nothing raises.

    Raises:
        ConfigError: ``timeout_s`` is not positive.
    """
    if not timeout_s > 0:
        raise ConfigError(f"`timeout_s` must be > 0 seconds, but got {timeout_s!r}")
    key = (keep, threads) if keep is not None else None
    with _kept_lock:
        worker = _kept.pop(key, None) if key is not None else None
    if worker is not None and not worker.alive:  # ended while idle (killed from outside)
        worker.close(kill=True)
        worker = None
    if worker is None:
        worker = _Worker(threads)
    started = time.monotonic()
    try:
        ok, value = worker.run(job, payload, timeout_s)
    except BaseException:  # Ctrl-C while it ran: the job is abandoned with its worker
        worker.close(kill=True)
        raise
    _logger.debug("worker %s ran a job in %.2f s", worker.process.pid, time.monotonic() - started)
    if key is not None and worker.alive:
        with _kept_lock:
            worker, _kept[key] = _kept.get(key), worker  # keep the latest; close any other
    if worker is not None:
        worker.close(kill=not worker.alive)
    return ok, value


def _died(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"crash: the worker was killed by {name} (exit code {exitcode})"
    return f"crash: the worker exited with code {exitcode} before reporting a result"
