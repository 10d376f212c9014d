"""Where output goes: data to stdout, messages and progress to stderr through rich."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from vaecli.errors import UsageError

if TYPE_CHECKING:
    from rich.console import Console


@dataclass
class Terminal:
    """The streams a command talks to; commands set `quiet`, tests may swap streams."""

    quiet: bool = False
    debug: bool = field(default_factory=lambda: os.environ.get("VAE_DEBUG", "") not in ("", "0"))
    _console: Console | None = None
    _console_file: object = None

    @property
    def stderr(self) -> Console:
        # sys.stderr is looked up each time so test runners that swap it are honoured.
        if self._console is None or self._console_file is not sys.stderr:
            from rich.console import Console

            self._console = Console(stderr=True, highlight=False)
            self._console_file = sys.stderr
        return self._console

    @property
    def live_progress(self) -> bool:
        """True when a live progress bar makes sense: stderr is a terminal and not --quiet."""
        return not self.quiet and self.stderr.is_terminal and not self.stderr.is_dumb_terminal

    def note(self, message: str) -> None:
        if not self.quiet:
            self.stderr.print(message, markup=False, soft_wrap=True)

    def warn(self, message: str) -> None:
        if not self.quiet:
            self.stderr.print(f"warning: {message}", style="yellow", markup=False, soft_wrap=True)

    def error(self, message: str) -> None:
        self.stderr.print(f"error: {message}", style="bold red", markup=False, soft_wrap=True)

    def emit(self, line: str) -> None:
        """Write one line of data to stdout at once, so pipes see it while work goes on."""
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    def emit_bytes(self, data: bytes) -> None:
        """Write binary data to stdout, refusing when stdout is a terminal."""
        if sys.stdout.isatty():
            raise UsageError(
                "refusing to write binary data to a terminal: redirect stdout "
                "(`> file.png` or `| ...`) or give a file name instead of `-`"
            )
        buffer = getattr(sys.stdout, "buffer", sys.stdout)
        buffer.write(data)
        buffer.flush()


term = Terminal()
