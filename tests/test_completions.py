"""Shell completions: generated from the CLI, committed fresh, and answering from the shell alone."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from vaecli.cli import app
from vaecli.store.bundled import BUNDLED_MODELS
from vaecli.terminal.completion import FILE_NAMES, SHELLS, script

COMPLETIONS = Path(__file__).resolve().parent.parent / "completions"


@pytest.mark.parametrize("shell", SHELLS)
def test_committed_scripts_are_fresh(shell):
    committed = (COMPLETIONS / FILE_NAMES[shell]).read_text()
    assert committed == script(shell, app), "stale: run `python scripts/generate_completions.py`"


@pytest.mark.parametrize("shell", SHELLS)
def test_completion_command_prints_the_script(cli, shell):
    result = cli("completion", shell)
    assert result.exit_code == 0
    assert result.stdout == script(shell, app).rstrip("\n") + "\n"


def test_completion_command_refuses_other_shells(cli):
    assert cli("completion", "tcsh").exit_code == 2


def _bash_complete(words: list[str], cwd: Path) -> list[str]:
    """Call the bash script's function as readline would, with COMP_WORDS as typed; COMPREPLY, one per line."""
    line = " ".join(shlex.quote(w) for w in words)
    program = (
        f"source {shlex.quote(str(COMPLETIONS / 'vae.bash'))}; COMP_WORDS=({line}); COMP_CWORD={len(words) - 1}; _vae; "
        'printf "%s\\n" "${COMPREPLY[@]}"'
    )
    out = subprocess.run(["bash", "-c", program], cwd=cwd, capture_output=True, text=True, check=True)
    return [w for w in out.stdout.splitlines() if w]


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_bash_completes_commands_options_values_and_paths(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    (tmp_path / "my file.png").write_bytes(b"")
    (tmp_path / "pictures").mkdir()
    assert "train" in _bash_complete(["vae", "tr"], tmp_path)
    assert set(_bash_complete(["vae", ""], tmp_path)) >= {"train", "sample", "interpolate", "project", "info"}
    assert _bash_complete(["vae", "train", "--ar"], tmp_path) == ["--arch"]
    datasets = _bash_complete(["vae", "train", "--dataset", ""], tmp_path)
    assert {"mnist", "fashion-mnist", "kmnist", "digits", "pictures"} <= set(datasets)
    assert _bash_complete(["vae", "sample", "--device", "c"], tmp_path) == ["cpu", "cuda"]
    models = sorted(_bash_complete(["vae", "info", ""], tmp_path))
    # No "my file.png": only checkpoints, bundled names and folders.
    assert models == sorted([*BUNDLED_MODELS, "model.safetensors", "pictures"])
    assert _bash_complete(["vae", "sample", "-m", "mo"], tmp_path) == ["model.safetensors"]
    assert _bash_complete(["vae", "completion", ""], tmp_path) == ["bash", "zsh", "fish"]
    assert _bash_complete(["vae", "sample", "--seed", ""], tmp_path) == []  # a number: nothing to offer


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
@pytest.mark.parametrize(
    "words,expected",
    [
        (["train", "--arch"], ["mlp", "cnn", "resnet", "hvae"]),
        (["train", "--likelihood"], ["bernoulli", "gaussian", "logistic"]),
        (["train", "--lr-schedule"], ["constant", "cosine"]),
        (["train", "--precision"], ["fp32", "bf16"]),
        (["train", "--channels"], ["1", "3"]),
        (["eval", "--split"], ["train", "test"]),
        (["project", "--split"], ["train", "test"]),
        (["interpolate", "--method"], ["lerp", "slerp"]),
        (["reconstruct", "--invert"], ["yes", "no", "auto"]),
        (["tour", "--device"], ["auto", "cpu", "cuda", "mps"]),
        (["sample", "--label"], ["all", *"0123456789"]),
        (["traverse", "--label"], list("0123456789")),
        (["eval", "--label"], list("0123456789")),
    ],
)
def test_bash_offers_every_choice(tmp_path, words, expected):
    assert _bash_complete(["vae", *words, ""], tmp_path) == expected
    assert _bash_complete(["vae", *words[:-1], words[-1], "=", ""], tmp_path) == expected  # --option=value


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
@pytest.mark.parametrize("command", ["sample", "reconstruct", "encode", "decode", "interpolate", "traverse",
                                     "manifold", "eval"])
def test_bash_offers_classes_not_files_for_label(tmp_path, command):
    # A class, never a file name: the static script cannot read the model's class names, so it offers numbers.
    (tmp_path / "3.png").write_bytes(b"")
    (tmp_path / "all-digits").mkdir()
    assert _bash_complete(["vae", command, "--label", "3"], tmp_path) == ["3"]
    assert _bash_complete(["vae", command, "--label", "a"], tmp_path) == (["all"] if command == "sample" else [])


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
@pytest.mark.parametrize("typed", ["my", "my\\ ", "'my f", '"my f', "m'y '"])
def test_bash_keeps_a_file_name_with_spaces_whole(tmp_path, typed):
    # Readline quotes what it inserts (-o filenames); the script must read the quoting as typed.
    (tmp_path / "my file.png").write_bytes(b"")
    assert _bash_complete(["vae", "reconstruct", typed], tmp_path) == ["my file.png"]


def test_scripts_never_start_python():
    # Answering from the shell alone keeps TAB instant: no `vae` or python call inside.
    for shell in SHELLS:
        body = script(shell, app)
        assert "python" not in body and "_VAE_COMPLETE" not in body


# Syntax only; tests/test_shell_completions.py types into the real interactive shells.
@pytest.mark.parametrize(
    "shell,checker", [("bash", ["bash", "-n"]), ("zsh", ["zsh", "-n"]), ("fish", ["fish", "--no-execute"])]
)
def test_other_shells_parse_their_scripts(shell, checker):
    if shutil.which(checker[0]) is None:
        pytest.skip(f"{shell} is not installed")
    subprocess.run([*checker, str(COMPLETIONS / FILE_NAMES[shell])], check=True)
