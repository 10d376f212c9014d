"""SIGTERM and SIGHUP raised like Ctrl-C, so every command cleans up (temporary files) the same way."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

# SIGHUP: the terminal went away. Windows has neither, and has no signal masks.
CAUGHT = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))
HELD = (signal.SIGINT, *CAUGHT)


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised where the program is, like Ctrl-C's KeyboardInterrupt."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def signal_number(exc: BaseException) -> int:
    """The signal that stopped the program: SIGINT for a plain KeyboardInterrupt."""
    return getattr(exc, "signum", signal.SIGINT)


def exit_code(exc: BaseException) -> int:
    """128 + the signal's number, as a shell reports a process that the signal ended: 130, 143, 129."""
    return 128 + int(signal_number(exc))


def message(exc: BaseException) -> str:
    """The one line the CLI prints: `interrupted` for Ctrl-C, else the signal's name."""
    signum = signal_number(exc)
    if signum == signal.SIGINT:
        return "interrupted"
    why = " (its terminal was closed)" if signum == getattr(signal, "SIGHUP", None) else ""
    return f"terminated by {signal.Signals(signum).name}{why}"


@contextmanager
def raised_as_interrupts() -> Iterator[None]:
    """While open, SIGTERM and SIGHUP raise Stopped in the main thread; the earlier handlers come back after.

    A signal that is ignored (`nohup`) or has a handler of the caller's own is left as it is.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}
    for signum in CAUGHT:
        if signal.getsignal(signum) is signal.SIG_DFL:
            previous[signum] = signal.signal(signum, _raise)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _raise(signum: int, frame: object) -> None:
    raise Stopped(signum)


@contextmanager
def held() -> Iterator[None]:
    """Delay SIGINT, SIGTERM and SIGHUP for a few statements (creating a file and noting its name for clean-up).

    A signal that came meanwhile is handled right after, where the clean-up is in place.
    """
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    before = signal.pthread_sigmask(signal.SIG_BLOCK, HELD)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)
