"""Signal dispositions of a foreground command, for tests that send a signal to a child or to themselves.

A test suite run as a background job (`pytest &`) or under nohup starts with SIGINT (or SIGHUP) ignored, and
its children inherit that; a user's shell gives a foreground command the defaults. Tests that signal set the
defaults themselves, so that they check the product and not the way the suite was started.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager

# Windows has no SIGHUP; these tests do not run there, but importing this module should not fail.
SENT = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


def default_signals() -> None:
    """Popen's preexec_fn: the child starts with SIGINT, SIGTERM and SIGHUP at their defaults.

    Set before exec, so Python's own start-up sees SIGINT at its default and installs Ctrl-C's handler."""
    for signum in SENT:
        signal.signal(signum, signal.SIG_DFL)


@contextmanager
def foreground_signals() -> Iterator[None]:
    """In this process, for a while: SIGINT raises KeyboardInterrupt, SIGTERM and SIGHUP are at their defaults."""
    previous = {signum: signal.getsignal(signum) for signum in SENT}
    for signum in SENT:
        signal.signal(signum, signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            if handler is not None:  # None: a handler not set from Python, which cannot be put back
                signal.signal(signum, handler)
