"""Worker processes: models sent to a fresh process, run there with a timeout, and answered.

Every measurement, tuning and output check runs in a fresh worker process (``multiprocessing``
"spawn" context) with a wall-clock limit, so a crash (a segfault in a compiler), a hang or an
exception in the worker comes back as data, never as an exception that kills the caller. A
fresh process also keeps timings clean: PyTorch is not timed in a process where TVM's thread
pool already runs (``docs/tvm.md``).

Models travel as a payload (:func:`model_payload`): a candidate as its dict, a module pickled by
reference to its classes. Live TVM objects are never sent.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
import pickle
import signal
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


def _worker_main(conn: Any, job: Callable[[Any], Any], payload: Any, threads: int) -> None:
    """Body of a worker process: set the threads, run ``job(payload)``, send the outcome."""
    # TVM reads TVM_NUM_THREADS when its thread pool starts, at the first parallel kernel.
    os.environ["TVM_NUM_THREADS"] = str(threads)
    try:
        import torch

        torch.set_num_threads(threads)
        outcome: tuple[str, Any] = ("ok", job(payload))
    except BaseException as exc:  # noqa: BLE001 - everything goes back to the caller as data
        last = traceback.format_exception_only(type(exc), exc)[-1].strip()
        outcome = ("error", last.splitlines()[0][:2000] if last else type(exc).__name__)
    try:
        conn.send(outcome)
    finally:
        conn.close()


def run_in_worker(
    job: Callable[[Any], Any], payload: Any, *, threads: int, timeout_s: float
) -> tuple[bool, Any]:
    """Run ``job(payload)`` in a fresh "spawn" process; ``(True, result)`` or ``(False, error)``.

    ``job`` must be a module-level function (pickled by reference), ``payload`` and its result
    picklable. The worker gets ``threads`` CPU threads (``TVM_NUM_THREADS``,
    ``torch.set_num_threads``) and is killed after ``timeout_s`` seconds of wall time, counted
    from its start (interpreter start and imports included). A crash (segfault, ``os._exit``),
    an exception or a timeout returns ``(False, message)``, the message starting with
    ``"crash:"`` or ``"timeout:"`` for the first and last; nothing raises.

    Raises:
        ConfigError: ``timeout_s`` is not positive.
    """
    if not timeout_s > 0:
        raise ConfigError(f"`timeout_s` must be > 0 seconds, but got {timeout_s!r}")
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(
        target=_worker_main, args=(sender, job, payload, threads), name="autoprune-measure"
    )
    started = time.monotonic()
    process.start()
    sender.close()  # only the child holds the sending end: its death means EOF here
    try:
        if receiver.poll(timeout_s):
            try:
                status, value = receiver.recv()
            except (EOFError, OSError):
                process.join(5.0)
                return False, _died(process.exitcode)
            process.join(5.0)
            return status == "ok", value
        _logger.warning("measurement worker passed its %.3g s limit; killing it", timeout_s)
        return False, f"timeout: the worker passed its limit of {timeout_s:.3g} s and was killed"
    finally:
        receiver.close()
        if process.is_alive():
            process.kill()
        process.join(5.0)
        _logger.debug("worker %s finished in %.2f s", process.pid, time.monotonic() - started)


def _died(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"crash: the worker was killed by {name} (exit code {exitcode})"
    return f"crash: the worker exited with code {exitcode} before reporting a result"
