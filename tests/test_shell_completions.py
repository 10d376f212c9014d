"""Completion as a user meets it: interactive bash, zsh and fish in tmux, keys typed, the screen read back."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
COMPLETIONS = REPO / "completions"
SHELLS = ("bash", "zsh", "fish")
WAIT_S = 10.0  # generous for a loaded CI machine; a working shell answers in well under a second
BASH_COMPLETION = Path("/usr/share/bash-completion/bash_completion")

# The install lines of docs/usage.md (Shell completion), word for word (keep the two in step), each run by its
# shell on an empty HOME.
README_BASH = (
    "mkdir -p ~/.local/share/bash-completion/completions && "
    "vae completion bash > ~/.local/share/bash-completion/completions/vae"
)
README_BASH_WITHOUT_BASH_COMPLETION = "echo 'source ~/.local/share/bash-completion/completions/vae' >> ~/.bashrc"
README_ZSH = (
    "mkdir -p ~/.zfunc && vae completion zsh > ~/.zfunc/_vae\n"
    "echo 'fpath+=(~/.zfunc); autoload -U compinit && compinit' >> ~/.zshrc"
)
README_FISH = "mkdir -p ~/.config/fish/completions && vae completion fish > ~/.config/fish/completions/vae.fish"
# The keys after which each shell shows the choices. fish lists them on the first TAB. zsh lists them on
# the first, or on the second when the first inserted their common prefix (the t of train and test);
# bash lists them on the second, or then on the third, since a TAB that inserted text starts afresh.
LIST_KEYS = {"bash": ("Tab", "Tab", "Tab"), "zsh": ("Tab", "Tab"), "fish": ("Tab",)}


class Terminal:
    """One interactive shell in a private tmux server of a fixed size, driven by keys and read from the screen."""

    def __init__(self, shell: str, argv: list[str], home: Path, cwd: Path, tools: Path):
        self.shell, self.socket = shell, tools.parent / "tmux.sock"
        path = os.pathsep.join([str(tools), str(Path(argv[0]).parent), "/usr/local/bin", "/usr/bin", "/bin"])
        # env -i: nothing from the caller's environment (no user config, no XDG folders) reaches the shell.
        env = ["env", "-i", f"HOME={home}", f"PATH={path}", "TERM=screen", "LANG=C.UTF-8"]
        size = ["-x", "160", "-y", "48"]  # wide enough that no listing wraps, tall enough that none pages
        # -f /dev/null: no tmux config; remain-on-exit: a shell that dies at start leaves its last words on screen.
        self.tmux("-f", "/dev/null", "start-server", ";", "set-option", "-wg", "remain-on-exit", "on", ";",
                  "new-session", "-d", "-s", "t", *size, "-c", str(cwd), *env, *argv)
        self.wait_until_idle()

    def tmux(self, *args: str) -> str:
        # A private socket, and no $TMUX: tests started inside a tmux session must not talk to that one.
        env = {name: value for name, value in os.environ.items() if name != "TMUX"}
        command = ["tmux", "-S", str(self.socket), *args]
        run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=WAIT_S)
        assert run.returncode == 0, f"tmux {' '.join(args)}: {run.stderr}"
        return run.stdout

    def screen(self) -> list[str]:
        return [line.rstrip() for line in self.tmux("capture-pane", "-p", "-t", "t").splitlines()]

    def wait_for(self, check, what: str) -> list[str]:
        """Poll the screen until check(lines) holds; fail with the screen after WAIT_S."""
        deadline = time.monotonic() + WAIT_S
        while True:
            lines = self.screen()
            if check(lines):
                return lines
            if time.monotonic() > deadline:
                pytest.fail(f"{self.shell}: no {what} within {WAIT_S:.0f} s; the screen:\n" + "\n".join(lines))
            time.sleep(0.05)

    def wait_until_idle(self) -> None:
        """Wait for the prompt: a screen with text that stays the same for a few polls."""
        seen: list[list[str]] = []

        def settled(lines: list[str]) -> bool:
            seen.append(lines)
            return any(lines) and len(seen) >= 4 and seen[-4:] == [lines] * 4

        self.wait_for(settled, "prompt")

    def type(self, text: str, *keys: str) -> None:
        """Type text and keys on an empty command line, at the top of a cleared screen."""
        # C-u empties the line and C-l clears the screen in all three shells, with no signal that
        # could flush what is typed next; the line editor reads all of it in order.
        self.tmux("send-keys", "-t", "t", "C-u", "C-l")
        self.tmux("send-keys", "-t", "t", "-l", text)
        self.tmux("send-keys", "-t", "t", *keys)

    def command_line(self, typed: str, expected: str) -> str:
        """Wait until the command line (the top line, after the prompt) reads `expected`."""
        start = typed.split()[0]

        def shows(lines: list[str]) -> bool:
            return bool(lines) and start in lines[0] and lines[0][lines[0].index(start):] == expected

        line = self.wait_for(shows, f"command line {expected!r} after typing {typed!r}")[0]
        return line[line.index(start):]

    def offered(self, typed: str, expected: set[str]) -> set[str]:
        """Wait until the words listed below the command line include `expected`; returns them all."""
        def words(lines: list[str]) -> set[str]:
            return {w for line in lines[1:] for w in line.split()} if lines and typed.strip() in lines[0] else set()

        return words(self.wait_for(lambda lines: expected <= words(lines), f"{sorted(expected)} for {typed!r}"))

    def close(self) -> None:
        self.tmux("kill-server")


def require(shell: str) -> str:
    """The shell's path, or a clean skip when it or tmux is missing."""
    for program in ("tmux", shell):
        if shutil.which(program) is None:
            pytest.skip(f"{program} is not installed (.ci/run installs it with apt-get where it can)")
    return shutil.which(shell)


def make_tools(root: Path) -> Path:
    """A folder for PATH holding `vae`, this checkout's: the README's lines run it; TAB never does."""
    tools = root / "bin"
    tools.mkdir()
    (tools / "vae").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m vaecli "$@"\n')
    (tools / "vae").chmod(0o755)
    return tools


def make_work(root: Path) -> Path:
    """The folder the shell starts in: a picture with a space in its name, a checkpoint, an image folder."""
    work = root / "work"
    (work / "pictures").mkdir(parents=True)
    (work / "my file.png").write_bytes(b"")
    (work / "model.safetensors").write_bytes(b"")
    return work


def install_own_script(shell: str, home: Path) -> None:
    """The committed script where each shell looks for it, and a minimal rc file with a plain prompt."""
    if shell == "bash":
        (home / ".bashrc").write_text(f"PS1='$ '\nsource '{COMPLETIONS / 'vae.bash'}'\n")
    elif shell == "zsh":
        (home / ".zfunc").mkdir()
        shutil.copy(COMPLETIONS / "_vae", home / ".zfunc" / "_vae")
        (home / ".zshrc").write_text("PS1='%% '\nfpath=(~/.zfunc $fpath)\nautoload -U compinit && compinit\n")
    else:
        config = home / ".config" / "fish"
        (config / "completions").mkdir(parents=True)
        shutil.copy(COMPLETIONS / "vae.fish", config / "completions" / "vae.fish")
        # No greeting and no autosuggestion: the grey suggested text would read as typed text on the screen.
        (config / "config.fish").write_text(
            "set -g fish_greeting ''\nset -g fish_autosuggestion_enabled 0\nfunction fish_prompt; echo -n '> '; end\n"
        )


@pytest.fixture(scope="module", params=SHELLS)
def terminal(request, tmp_path_factory):
    """One interactive shell per kind, with the committed script installed, shared by this module's cases."""
    shell = request.param
    binary = require(shell)
    root = tmp_path_factory.mktemp(shell)
    home = root / "home"
    home.mkdir()
    install_own_script(shell, home)
    term = Terminal(shell, [binary, "-i"], home, make_work(root), make_tools(root))
    yield term
    term.close()


def test_tab_completes_a_command(terminal):
    terminal.type("vae sa", "Tab")
    terminal.command_line("vae sa", "vae sample")


def test_tab_tab_lists_the_options_of_a_command(terminal):
    typed = "vae sample --"
    terminal.type(typed, *LIST_KEYS[terminal.shell])
    offered = terminal.offered(typed, {"--count", "--model", "--out", "--device", "--seed", "--quiet", "--help"})
    assert "--arch" not in offered  # train's, not sample's


@pytest.mark.parametrize(
    "typed,expected",
    [
        ("vae train --arch ", {"mlp", "cnn", "resnet"}),
        ("vae eval --split ", {"train", "test"}),
        ("vae train --channels ", {"1", "3"}),
        ("vae train --dataset ", {"mnist", "fashion-mnist", "kmnist", "digits", "pictures/"}),
        ("vae sample --label ", {"all", "0", "7", "9"}),
    ],
)
def test_tab_lists_the_values_of_an_option(terminal, typed, expected):
    terminal.type(typed, *LIST_KEYS[terminal.shell])
    terminal.offered(typed, expected)


@pytest.mark.parametrize("typed", ["vae info ", "vae sample -m "])
def test_models_are_bundled_names_and_checkpoints(terminal, typed):
    terminal.type(typed, *LIST_KEYS[terminal.shell])
    offered = terminal.offered(typed, {"mnist", "fashion-mnist", "model.safetensors"})
    assert "file.png" not in " ".join(offered)  # a picture is no checkpoint


@pytest.mark.parametrize(
    "typed,expected",
    [
        ("vae reconstruct my\\ ", "vae reconstruct my\\ file.png"),
        ('vae reconstruct "my f', 'vae reconstruct "my file.png"'),
    ],
)
def test_a_file_name_with_a_space_completes_as_one_word(terminal, typed, expected):
    terminal.type(typed, "Tab")
    terminal.command_line(typed, expected)


@pytest.mark.parametrize(
    "shell,lines,with_bash_completion",
    [
        ("bash", README_BASH, True),
        ("bash", README_BASH + "\n" + README_BASH_WITHOUT_BASH_COMPLETION, False),
        ("zsh", README_ZSH, False),
        ("fish", README_FISH, False),
    ],
    ids=["bash", "bash-without-bash-completion", "zsh", "fish"],
)
def test_readme_install_lines_work_on_a_fresh_account(shell, lines, with_bash_completion, tmp_path):
    binary = require(shell)
    home, tools = tmp_path / "home", make_tools(tmp_path)
    home.mkdir()
    if with_bash_completion:
        if not BASH_COMPLETION.is_file():
            pytest.skip("bash-completion is not installed; the README's first bash line relies on it")
        # What a new account's ~/.bashrc does on Debian and Ubuntu (from /etc/skel): load bash-completion.
        (home / ".bashrc").write_text(f". {BASH_COMPLETION}\n")
    env = {"HOME": str(home), "PATH": os.pathsep.join([str(tools), "/usr/bin", "/bin"]), "LANG": "C.UTF-8"}
    subprocess.run([binary, "-c", lines], env=env, cwd=tmp_path, check=True, timeout=60)
    term = Terminal(shell, [binary, "-i"], home, make_work(tmp_path), tools)
    try:
        term.type("vae train --arch ", *LIST_KEYS[shell])
        term.offered("vae train --arch ", {"mlp", "cnn", "resnet"})
        term.type("vae info ", *LIST_KEYS[shell])
        term.offered("vae info ", {"mnist", "fashion-mnist", "model.safetensors"})
    finally:
        term.close()
