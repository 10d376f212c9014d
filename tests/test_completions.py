"""Shell completions: generated from the CLI, committed fresh, and answering from the shell alone."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from vaecli.completion import FILE_NAMES, SHELLS, script

COMPLETIONS = Path(__file__).resolve().parent.parent / "completions"


@pytest.mark.parametrize("shell", SHELLS)
def test_committed_scripts_are_fresh(shell):
    committed = (COMPLETIONS / FILE_NAMES[shell]).read_text()
    assert committed == script(shell), "stale: run `python scripts/generate_completions.py`"


def test_completion_command_prints_the_script(cli):
    result = cli("completion", "bash")
    assert result.exit_code == 0
    assert result.stdout == script("bash").rstrip("\n") + "\n"
    assert cli("completion", "tcsh").exit_code == 2


def _bash_complete(words: list[str], cwd: Path) -> list[str]:
    line = " ".join(f"'{w}'" for w in words)
    program = (
        f"source '{COMPLETIONS / 'vae.bash'}'; COMP_WORDS=({line}); COMP_CWORD={len(words) - 1}; _vae; "
        'printf "%s\\n" "${COMPREPLY[@]}"'
    )
    out = subprocess.run(["bash", "-c", program], cwd=cwd, capture_output=True, text=True, check=True)
    return [w for w in out.stdout.splitlines() if w]


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_bash_completes_commands_options_values_and_paths(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    (tmp_path / "pictures").mkdir()
    assert "train" in _bash_complete(["vae", "tr"], tmp_path)
    assert set(_bash_complete(["vae", ""], tmp_path)) >= {"train", "sample", "interpolate", "project", "info"}
    assert _bash_complete(["vae", "train", "--ar"], tmp_path) == ["--arch"]
    assert set(_bash_complete(["vae", "train", "--arch", ""], tmp_path)) == {"mlp", "cnn", "resnet"}
    datasets = _bash_complete(["vae", "train", "--dataset", ""], tmp_path)
    assert {"mnist", "fashion-mnist", "kmnist", "digits", "pictures"} <= set(datasets)
    assert _bash_complete(["vae", "sample", "--device", "c"], tmp_path) == ["cpu", "cuda"]
    assert _bash_complete(["vae", "info", "mo"], tmp_path) == ["model.safetensors"]
    assert _bash_complete(["vae", "sample", "-m", "mo"], tmp_path) == ["model.safetensors"]
    assert _bash_complete(["vae", "completion", ""], tmp_path) == ["bash", "zsh", "fish"]


def test_scripts_never_start_python():
    # Answering from the shell alone keeps TAB instant: no `vae` or python call inside.
    for shell in SHELLS:
        body = script(shell)
        assert "python" not in body and "_VAE_COMPLETE" not in body


@pytest.mark.parametrize("shell,checker", [("zsh", ["zsh", "-n"]), ("fish", ["fish", "--no-execute"])])
def test_other_shells_parse_their_scripts(shell, checker):
    if shutil.which(checker[0]) is None:
        pytest.skip(f"{shell} is not installed")
    subprocess.run([*checker, str(COMPLETIONS / FILE_NAMES[shell])], check=True)
