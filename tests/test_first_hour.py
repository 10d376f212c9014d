"""What a new user meets first (issue 14): earlier work kept, help that reads right, messages that name the fix."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.cli_checks import one_error_line

TINY = ["--dataset", "digits", "--epochs", "1", "--limit", "64", "--hidden", "4", "-q", "--no-report"]


@pytest.mark.slow
def test_train_keeps_an_earlier_checkpoint_unless_told(cli):
    assert cli("train", *TINY).exit_code == 0
    before = Path("vae.safetensors").read_bytes()
    result = cli("train", *TINY, "--seed", "3")
    assert result.exit_code == 2
    line = one_error_line(result)
    assert "already holds a checkpoint (cnn, 1 epochs on digits)" in line
    assert "--resume vae.safetensors" in line and "-o NEW.safetensors" in line and "--force" in line
    assert Path("vae.safetensors").read_bytes() == before
    assert cli("train", *TINY, "--seed", "3", "--force").exit_code == 0
    assert Path("vae.safetensors").read_bytes() != before
    assert cli("train", "--resume", "vae.safetensors", "--epochs", "2", "-q", "--no-report").exit_code == 0


def test_train_keeps_a_file_that_is_not_a_checkpoint(cli):
    Path("notes.safetensors").write_text("my notes")
    result = cli("train", *TINY, "-o", "notes.safetensors")
    assert result.exit_code == 2 and "is not a vaecli checkpoint" in one_error_line(result)
    assert Path("notes.safetensors").read_text() == "my notes"


def test_a_folder_model_records_where_its_images_are_and_says_so_elsewhere(cli, tmp_path):
    from PIL import Image

    for index in range(4):
        (tmp_path / "cats").mkdir(exist_ok=True)
        Image.new("RGB", (8, 8), (index * 60, 0, 0)).save(tmp_path / "cats" / f"{index}.png")
    result = cli("train", "--dataset", "cats", "--channels", "3", "--image-size", "8", "--epochs", "1",
                 "--hidden", "4", "-q", "--no-report", "-o", "cats.safetensors")
    assert result.exit_code == 0, result.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.chdir(elsewhere)
    for command in (["eval", "-k", "2"], ["project"], ["tour"]):
        result = cli(*command, "-m", tmp_path / "cats.safetensors")
        line = one_error_line(result)
        assert f"--dataset {tmp_path / 'cats'}" in line, line
    result = cli("eval", "-k", "2", "-m", tmp_path / "cats.safetensors", "--dataset", tmp_path / "cats", "-q")
    assert result.exit_code == 0, result.stderr


def test_offline_data_messages_name_the_variable_and_leave_no_folders(cli, tmp_path):
    result = cli("eval", "-m", "mnist", "--data-root", tmp_path / "cache" / "data", "-k", "1")
    line = one_error_line(result)
    assert "VAE_OFFLINE=1 forbids downloading" in line and "--dataset digits" in line and "train" not in line
    assert not (tmp_path / "cache").exists()


def test_a_bad_vae_model_is_named_as_the_variable(cli, tmp_path):
    result = cli("sample", "--grid", "g.png", env={"VAE_MODEL": str(tmp_path / "gone.safetensors")})
    assert result.exit_code == 2 and one_error_line(result).startswith("error: VAE_MODEL=")


def _help(*args: str, columns: int = 60) -> str:
    env = {**os.environ, "COLUMNS": str(columns)}
    return subprocess.run([sys.executable, "-m", "vaecli", *args, "--help"], capture_output=True, text=True,
                          env=env, check=True).stdout


def test_the_command_list_is_not_cut_and_examples_are_not_rewrapped():
    top = _help(columns=80)
    assert "..." not in top.split("Commands:")[1]
    for command in ("sample", "project", "train", "decode"):
        text = _help(command, columns=40)
        example = next(line for line in text.splitlines() if "Example:" in line)
        assert example.strip().startswith("Example: vae ") and "\\" not in example
        assert f"vae {command}" in example or "| vae decode" in example, example


def test_train_help_shows_the_real_width_defaults():
    help_text = _help("train", columns=200)
    hidden = " ".join(help_text[help_text.index("--hidden"):help_text.index("--channels")].split())
    assert "[default: 0]" not in hidden
    assert "mlp 512" in hidden and "cnn 16, RGB 32" in hidden and "resnet 32, RGB 64" in hidden


def _documented_keys(command: str) -> set[str]:
    usage = (Path(__file__).resolve().parent.parent / "docs" / "usage.md").read_text()  # JSON for scripts
    row = next(line for line in usage.splitlines() if line.startswith(f"| `vae {command} --json` |"))
    keys = row.split("|")[3].split("(")[0]
    # "and with `--codecs` `codecs`": a key only that option adds, not in a plain run's record.
    return {key.strip(" `") for key in keys.split(",") if not key.strip().startswith("and with")}


@pytest.mark.slow
def test_json_keys_are_the_documented_ones(cli, tiny_model):
    import json

    train = json.loads(cli("train", *TINY[:-2], "--json", "--no-report").stdout.splitlines()[0])
    evaluation = json.loads(cli("eval", "-m", tiny_model, "--dataset", "digits", "--limit", "8", "-k", "2",
                                "--json", "-q").stdout)
    fitted = json.loads(cli("fit-prior", "-m", tiny_model, "-o", "f.safetensors", "-c", "2", "--limit", "50",
                            "--json", "-q").stdout)
    for command, record in (("train", train), ("eval", evaluation), ("fit-prior", fitted)):
        assert set(record) == _documented_keys(command), command
    assert evaluation["model"] == str(tiny_model) and fitted["model"] == str(tiny_model)
    assert set(evaluation["neg_elbo"]) == set(train["test"]) - {"kl_per_dim", "active_units"}
