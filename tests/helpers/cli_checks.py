"""Test helpers for failed commands: the one-line error, and outputs that must survive."""

from __future__ import annotations

from pathlib import Path

SENTINEL = b"an earlier output that must survive\n"


def one_error_line(result) -> str:
    """The single stderr line of a failed command; fails on a traceback or any other line."""
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]


def keep_outputs(root: Path, names: list[str]) -> dict[Path, bytes]:
    """Pre-existing outputs (sentinel bytes) that a failed command must leave alone."""
    kept = {}
    for name in names:
        path = Path(root) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(SENTINEL)
        kept[path] = SENTINEL
    return kept


def assert_untouched(kept: dict[Path, bytes]) -> None:
    for path, data in kept.items():
        assert path.is_file() and path.read_bytes() == data, f"{path} was changed"


def fill(args: list[str], **values: object) -> list[str]:
    """Replace {M}, {C}... placeholders in a command line, e.g. fill(["-m", "{M}"], M=model)."""
    out = []
    for arg in args:
        for key, value in values.items():
            arg = arg.replace("{" + key + "}", str(value))
        out.append(arg)
    return out
