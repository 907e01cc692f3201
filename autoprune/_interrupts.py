"""Ctrl-C and SIGTERM that a long run cannot lose.

Python turns a signal into an exception raised in whatever the main thread happens to run. When
that is a finaliser or a weakref callback (PyTorch frees tensors through them all the time), the
exception is printed as "Exception ignored in: ..." and swallowed, and the run carries on as if
no Ctrl-C had come: a search interrupted at that instant finished every trial and exited 0.

:func:`interrupts_kept` installs handlers that remember the signal before they raise, and
:func:`raise_if_interrupted`, called where a run passes often (every training batch, the end of
every trial), raises it again if it was swallowed. A signal the process inherited as ignored
stays ignored: POSIX starts a script's background jobs with SIGINT ignored on purpose.

Some library code must not be interrupted at all: an exception raised inside the Python callbacks
that ``torch.export`` and TVM's passes run from C++ can end the process with SIGABRT instead of a
clean exit (seen once in CI, mid ``torch.export``). :func:`interrupts_deferred` wraps such calls:
within it a kept signal is only remembered, and raised when the block ends.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

__all__ = ["interrupts_deferred", "interrupts_kept", "raise_if_interrupted"]

_received: int | None = None
_deferring = 0  # depth of nested interrupts_deferred blocks


def _remember_and_raise(signum: int, frame: FrameType | None) -> None:
    global _received
    _received = signum
    if not _deferring:
        raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


def raise_if_interrupted() -> None:
    """Raise :class:`KeyboardInterrupt` if a kept signal arrived, even one already swallowed.

    A no-op (one global read) outside :func:`interrupts_kept` or when no signal arrived.
    """
    if _received is not None:
        raise KeyboardInterrupt(f"signal {signal.Signals(_received).name}")


@contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Within the block, a kept signal is remembered but not raised; it is raised at the end.

    For short calls into native code that runs Python callbacks (``torch.export``, TVM's
    passes), where an exception raised mid-call can abort the process. Outside
    :func:`interrupts_kept` the signals keep their usual handlers and this is a no-op. Blocks may
    nest; the signal is raised when the outermost one ends (not if it ends with an exception).
    """
    global _deferring
    _deferring += 1
    try:
        yield
    finally:
        _deferring -= 1
    if not _deferring:
        raise_if_interrupted()


@contextmanager
def interrupts_kept(
    signals: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM),
) -> Iterator[None]:
    """Within the block, each of ``signals`` raises :class:`KeyboardInterrupt` and is remembered.

    Signals the process ignores are left ignored. On exit the previous handlers come back and
    the remembered signal is forgotten. Call from the main thread (Python's rule for handlers).
    """
    global _received
    previous = {s: signal.getsignal(s) for s in signals}
    _received = None
    try:
        for s, handler in previous.items():
            if handler is not signal.SIG_IGN:
                signal.signal(s, _remember_and_raise)
        yield
    finally:
        for s, handler in previous.items():
            if handler is not None:  # None: set outside Python, and cannot be set back from it
                signal.signal(s, handler)
        _received = None
