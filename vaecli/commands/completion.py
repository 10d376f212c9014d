"""`vae completion SHELL`: print a static completion script for bash, zsh or fish."""

from __future__ import annotations

from typing import Annotated

import typer

from vaecli.errors import UsageError
from vaecli.terminal.console import Terminal


def complete_shell(incomplete: str) -> list[str]:
    return [s for s in ("bash", "zsh", "fish") if s.startswith(incomplete)]


def completion_command(
    ctx: typer.Context,
    shell: Annotated[str, typer.Argument(help="bash, zsh or fish.", autocompletion=complete_shell)],
) -> None:
    """Print the completion script for a shell (see the README for where to put it).

    \b
    Example: vae completion bash > ~/.local/share/bash-completion/completions/vae
    """
    from vaecli.terminal.completion import SHELLS, script

    if shell not in SHELLS:
        raise UsageError(f"unknown shell {shell!r}; choose one of {', '.join(SHELLS)}")
    # The scripts describe the whole CLI: its root command, reached from this command's context.
    Terminal().emit(script(shell, ctx.find_root().command).rstrip("\n"))
