"""Run the `vae` app in-process with stdout and stderr kept apart (the `cli` fixture)."""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass

import typer
from typer.testing import CliRunner

from vaecli.cli import app


@dataclass
class Result:
    exit_code: int
    stdout: str
    stderr: str
    stdout_bytes: bytes


@functools.cache
def _command():
    # Building the click command from the app costs about as much as a refused command line itself;
    # it is the same for every call, so build it once (CliRunner.invoke builds it on every call).
    return typer.main.get_command(app)


def run_cli(*args: str, input: bytes | str | None = None, env: dict | None = None) -> Result:
    """Run `vae ARGS` in-process, as CliRunner.invoke does with catch_exceptions=False; stdout and stderr apart."""
    runner, command = CliRunner(), _command()
    argv = [str(a) for a in args]
    with runner.isolation(input=input, env=env, color=False) as (stdout, stderr, _):
        exit_code = 0
        try:
            command.main(args=argv, prog_name=runner.get_default_prog_name(command))
        except SystemExit as exc:
            exit_code = _exit_code(exc.code)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
        out, err = stdout.getvalue(), stderr.getvalue()
    return Result(exit_code, out.decode(runner.charset, "replace").replace("\r\n", "\n"),
                  err.decode(runner.charset, "replace").replace("\r\n", "\n"), out)


def _exit_code(code: object) -> int:
    """SystemExit's code as a shell sees it: None is 0, a message is 1 (printed, as click's runner does)."""
    if code is None:
        return 0
    if not isinstance(code, int):
        sys.stdout.write(f"{code}\n")
        return 1
    return code

