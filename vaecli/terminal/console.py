"""Where output goes: data to stdout, messages and progress to stderr through rich."""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from vaecli.errors import OutputError, ReaderGone, UsageError

if TYPE_CHECKING:
    from rich.console import Console


# C0 and C1 control characters and DEL: text from files and file names must not drive the terminal.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """Text with control characters shown as escapes (\\x1b), so it is shown, never obeyed."""
    return _CONTROL.sub(lambda match: repr(match.group())[1:-1], text)


# A setting as library messages name it: `name` or `name=value`.
_SETTING = re.compile(r"`([a-z_]+)(?:=([^`]*))?`")


def as_flags(message: str) -> str:
    """A library message as the command line speaks it: `batch_size=0` becomes --batch-size 0."""
    # The config's dataclasses cost `vae --help` 5 ms; only a message needs the table.
    from vaecli.config import SETTING_FLAGS

    def flag(match: re.Match[str]) -> str:
        name, value = match.group(1), match.group(2)
        if name not in SETTING_FLAGS:
            return match.group()
        return SETTING_FLAGS[name] if value is None else f"{SETTING_FLAGS[name]} {value}"

    return _SETTING.sub(flag, message)


def debug_from_env() -> bool:
    """VAE_DEBUG=1 (anything but empty or 0) asks for tracebacks, as --debug does."""
    return os.environ.get("VAE_DEBUG", "") not in ("", "0")


@dataclass
class Terminal:
    """The streams one invocation talks to: each command makes its own and passes it to whatever prints, so
    nothing (-q, --debug) outlives the call; tests may swap the streams."""

    quiet: bool = False
    debug: bool = field(default_factory=lambda: debug_from_env())
    _console: Console | None = None
    _console_file: object = None

    @property
    def stderr(self) -> Console:
        # sys.stderr is looked up each time so test runners that swap it are honoured. A live rich
        # display swaps in a proxy of the same stream: the console that owns the display must stay,
        # since a second one would write past it and glue its text onto the bar.
        stream = getattr(sys.stderr, "rich_proxied_file", sys.stderr)
        if self._console is None or self._console_file is not stream:
            from rich.console import Console

            # No emoji codes and no markup: `digit:smile:.png` is a file name, not a smiley.
            self._console = Console(stderr=True, highlight=False, emoji=False, markup=False)
            self._console_file = stream
        return self._console

    @property
    def live_progress(self) -> bool:
        """True when a live progress bar makes sense: stderr is a terminal and not --quiet."""
        return not self.quiet and self.stderr.is_terminal and not self.stderr.is_dumb_terminal

    def note(self, message: str) -> None:
        if not self.quiet:
            self.stderr.print(printable(as_flags(message)), markup=False, emoji=False, soft_wrap=True)

    def warn(self, message: str) -> None:
        if not self.quiet:
            self.stderr.print(f"warning: {printable(as_flags(message))}", style="yellow", markup=False, emoji=False,
                              soft_wrap=True)

    def error(self, message: str) -> None:
        self.stderr.print(f"error: {printable(as_flags(message))}", style="bold red", markup=False, emoji=False,
                          soft_wrap=True)

    def emit(self, line: str) -> None:
        """Write one line of data to stdout at once, so pipes see it while work goes on."""
        stream = _stdout()
        try:
            stream.write(line + "\n")
            stream.flush()
        except BrokenPipeError:
            raise ReaderGone("stdout was closed by its reader") from None
        except (OSError, ValueError) as exc:
            raise OutputError(_stdout_failure(exc)) from None

    def emit_bytes(self, data: bytes) -> None:
        """Write binary data to stdout, refusing when stdout is a terminal."""
        check_binary_stdout()
        stream = _stdout()
        buffer = getattr(stream, "buffer", stream)
        try:
            view = memoryview(data)
            while view:  # a pipe whose reader leaves takes part of a large write and reports no error
                view = view[buffer.write(view):]
            buffer.flush()
        except BrokenPipeError:
            raise ReaderGone("stdout was closed by its reader") from None
        except (OSError, ValueError) as exc:
            raise OutputError(_stdout_failure(exc)) from None


def check_binary_stdout() -> None:
    """Refuse binary output for a terminal (or a closed stdout) now, before the work."""
    if _stdout().isatty():
        raise UsageError(
            "refusing to write binary data to a terminal: redirect stdout "
            "(`> file.png` or `| ...`) or give a file name instead of `-`"
        )


def _stdout():
    # Python sets sys.stdout to None when the program starts with file descriptor 1 closed (`>&-`).
    if sys.stdout is None:
        raise OutputError("stdout is closed; give the command somewhere to write (`> /dev/null` discards it)")
    return sys.stdout


def _stdout_failure(exc: BaseException) -> str:
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return f"cannot write to stdout ({reason}); redirect it to a file or a program that reads it"

