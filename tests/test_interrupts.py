"""A Ctrl-C that lands in a finaliser is swallowed by Python; a kept one is raised again."""

from __future__ import annotations

import os
import signal
import weakref

import pytest

from autoprune._interrupts import interrupts_deferred, interrupts_kept, raise_if_interrupted


class _Object:
    pass


def _signal_inside_a_weakref_callback(signum: int) -> None:
    """Deliver ``signum`` while Python runs a weakref callback, where exceptions are swallowed."""
    obj = _Object()

    def callback(_: object) -> None:
        os.kill(os.getpid(), signum)
        for _ in range(10_000):  # the handler runs at one of these bytecodes, inside the callback
            pass

    ref = weakref.ref(obj, callback)
    del obj  # runs the callback: its KeyboardInterrupt goes to "Exception ignored in: ..."
    assert ref() is None


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the swallowing
def test_a_signal_swallowed_by_a_finaliser_is_raised_again() -> None:
    with interrupts_kept((signal.SIGTERM,)):
        _signal_inside_a_weakref_callback(signal.SIGTERM)  # returns: the exception was swallowed
        with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
            raise_if_interrupted()


def test_a_signal_raises_where_it_lands_and_is_forgotten_after_the_block() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt), interrupts_kept((signal.SIGTERM,)):
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(10_000):
            pass
    raise_if_interrupted()  # nothing remembered any more
    assert signal.getsignal(signal.SIGTERM) is before


def test_no_signal_no_interrupt() -> None:
    with interrupts_kept((signal.SIGTERM,)):
        raise_if_interrupted()


def test_an_ignored_signal_stays_ignored() -> None:
    previous = signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    try:
        with interrupts_kept((signal.SIGUSR1,)):
            assert signal.getsignal(signal.SIGUSR1) is signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGUSR1)
            raise_if_interrupted()
    finally:
        signal.signal(signal.SIGUSR1, previous)


def test_a_deferred_signal_is_raised_when_the_outermost_block_ends() -> None:
    reached = []
    with pytest.raises(KeyboardInterrupt, match="SIGTERM"), interrupts_kept((signal.SIGTERM,)):
        with interrupts_deferred():
            with interrupts_deferred():
                os.kill(os.getpid(), signal.SIGTERM)
                for _ in range(10_000):  # the handler runs here, and must not raise
                    pass
                reached.append("inner end")
            reached.append("outer end")  # the inner block's end does not raise either
    assert reached == ["inner end", "outer end"]


def test_deferring_outside_kept_signals_changes_nothing() -> None:
    with interrupts_deferred():
        raise_if_interrupted()
