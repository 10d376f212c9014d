"""The line between the library and the command line: commands load only when run, and the library names
settings (`batch_size`) that the terminal alone turns into flags (--batch-size)."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from vaecli.config import OFF_FLAGS, SETTING_FLAGS, TRAIN_FLAGS
from vaecli.terminal.console import as_flags

PACKAGE = Path(__file__).resolve().parent.parent / "vaecli"
LIBRARY = ("model", "training", "data", "store", "analysis", "figures", "runtime", "explore")


def _loaded_commands(*argv: str) -> list[str]:
    """The command modules imported, in a fresh interpreter, by `vae ARGV`."""
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from vaecli.cli import app\n"
        f"r = CliRunner().invoke(app, {list(argv)!r})\n"
        "assert r.exit_code == 0, r.output\n"
        "print(' '.join(sorted(m for m in sys.modules if m.startswith('vaecli.commands.'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.split()


def test_vae_help_lists_every_command_without_importing_any():
    assert _loaded_commands("--help") == []


def test_a_command_imports_its_own_module_and_no_other_command():
    loaded = _loaded_commands("info", "--help")
    assert "vaecli.commands.info" in loaded
    others = {m for m in loaded if m not in ("vaecli.commands.info", "vaecli.commands.options",
                                             "vaecli.commands.common")}
    assert others == set(), others


def test_help_shows_each_command_with_its_summary(cli):
    from vaecli.cli import SUMMARIES

    result = cli("--help")
    assert result.exit_code == 0
    for name, summary in SUMMARIES.items():
        assert re.search(rf"^\s+{re.escape(name)}\s+{re.escape(summary)}$", result.stdout, re.MULTILINE), name


def test_every_named_command_loads_and_a_misspelt_one_gets_a_suggestion(cli):
    import typer

    from vaecli.cli import SUMMARIES, app

    group = typer.main.get_command(app)
    assert list(group.commands) == list(SUMMARIES)
    assert all(group.commands[name].name == name for name in SUMMARIES)
    result = cli("trian")
    assert result.exit_code == 2
    assert "No such command 'trian'. Did you mean 'train'?" in result.stderr


@pytest.mark.parametrize(("message", "shown"), [
    ("`batch_size` must be 1 or more, not 0", "--batch-size must be 1 or more, not 0"),
    ("`device=cuda:3`: no such GPU; use `device=cpu` or `device=auto`",
     "--device cuda:3: no such GPU; use --device cpu or --device auto"),
    ("`conditional` is not available with `arch=hvae`", "--conditional is not available with --arch hvae"),
    ("lower `n` or change `nrow`", "lower -n or change --nrow"),
    ("`range=-3 3`: give two finite numbers", "--range -3 3: give two finite numbers"),
])
def test_the_terminal_shows_settings_as_the_flags_that_give_them(message, shown):
    assert as_flags(message) == shown


def test_text_that_names_no_setting_is_shown_as_written():
    for text in ("redirect stdout (`> file.png`)", "train one with `vae train`", "`not_a_setting` stays",
                 "plain text with --flags already"):
        assert as_flags(text) == text


def test_a_library_error_reaches_the_terminal_as_flags(cli):
    result = cli("sample", "-n", "1", "--temperature", "-1", "-o", "x.png")
    assert result.exit_code == 2
    assert "--temperature must be a finite number" in result.stderr
    assert "`temperature`" not in result.stderr


def test_every_train_flag_is_in_the_one_table():
    assert all(SETTING_FLAGS[name] == flag for name, flag in TRAIN_FLAGS.items())


def _library_texts(path: Path) -> list[tuple[int, str]]:
    """The string constants of a module (messages and docstrings), with their lines."""
    tree = ast.parse(path.read_text())
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)]


def test_the_library_names_settings_not_command_line_flags():
    flag = re.compile(r"(?<![\w-])--[a-z][a-z-]+")
    found = []
    for package in LIBRARY:
        for path in sorted((PACKAGE / package).glob("*.py")):
            found += [f"{package}/{path.name}:{line}: {text[:80]!r}" for line, text in _library_texts(path)
                      if flag.search(text)]
    # config.py holds the one table from settings to flags, and builds the recorded `vae train` command.
    found += [f"config.py:{line}: {text[:80]!r}" for line, text in _library_texts(PACKAGE / "config.py")
              if flag.search(text) and text not in {*TRAIN_FLAGS.values(), *SETTING_FLAGS.values(),
                                                    *OFF_FLAGS.values()}]
    assert found == [], "\n".join(found)
