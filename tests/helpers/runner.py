"""Run the `vae` app in-process with stdout and stderr kept apart (the `cli` fixture)."""

from __future__ import annotations

from dataclasses import dataclass

from typer.testing import CliRunner

from vaecli.cli import app


@dataclass
class Result:
    exit_code: int
    stdout: str
    stderr: str
    stdout_bytes: bytes


def run_cli(*args: str, input: bytes | str | None = None, env: dict | None = None) -> Result:
    """Run `vae ARGS` in-process; stdout and stderr are kept apart."""
    runner = CliRunner()
    result = runner.invoke(app, [str(a) for a in args], input=input, env=env, catch_exceptions=False)
    return Result(result.exit_code, result.stdout, result.stderr, result.stdout_bytes)
