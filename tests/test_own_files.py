"""Files vaecli names itself (the report, the snapshots GIF, the -best copy, installed completions) are
written only as regular files: a link or FIFO planted at their path never decides what is written."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vaecli.errors import OutputError
from vaecli.store.files import write_atomic

from tests.helpers.cli_checks import one_error_line

TRAIN = ["train", "--dataset", "digits", "--arch", "mlp", "--hidden", "8", "--latent-dim", "2", "--limit", "64",
         "--epochs", "1", "--device", "cpu", "-q", "-o", "m.safetensors"]
VICTIM = b"a file the link points at, which vaecli must never write\n"


def plant(path: Path, how: str, victim: Path) -> None:
    """A symbolic link to `victim`, or a FIFO, at path."""
    victim.write_bytes(VICTIM)
    if how == "link":
        path.symlink_to(victim)
    else:
        os.mkfifo(path)


@pytest.mark.parametrize("how", ["link", "fifo"])
@pytest.mark.parametrize(("name", "options"), [
    ("m-losses.png", []),
    ("m-kl.png", []),
    ("m-evolution.gif", ["--snapshots"]),
    ("m-best.safetensors", ["--keep-best", "--force"]),
])
def test_train_refuses_a_planted_path_for_a_file_it_names_before_any_work(cli, tmp_path, monkeypatch, name,
                                                                         options, how):
    monkeypatch.chdir(tmp_path)
    plant(tmp_path / name, how, tmp_path / "victim.txt")
    result = cli(*TRAIN, *options)
    assert result.exit_code == 2
    line = one_error_line(result)
    assert name in line and ("symbolic link" in line or "special file" in line), line
    assert (tmp_path / "victim.txt").read_bytes() == VICTIM
    assert not (tmp_path / "m.safetensors").exists()  # refused before training


def test_train_writes_its_report_and_best_copy_as_regular_files(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m-losses.png").write_bytes(b"an old report, replaced")
    result = cli(*TRAIN, "--keep-best")
    assert result.exit_code == 0, result.stderr
    for name in ("m-losses.png", "m-best.safetensors"):
        path = tmp_path / name
        assert path.is_file() and not path.is_symlink() and path.stat().st_size > 100


def test_an_own_file_is_never_written_through_a_link_that_appears(tmp_path):
    victim, path = tmp_path / "victim.txt", tmp_path / "report.png"
    plant(path, "link", victim)
    with pytest.raises(OutputError, match="symbolic link"):
        write_atomic(path, b"new", own=True)
    assert victim.read_bytes() == VICTIM and path.is_symlink()
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_a_named_output_still_follows_its_link(tmp_path):
    """What the user names keeps its behaviour: the link's file is replaced, the link stays."""
    victim, path = tmp_path / "victim.txt", tmp_path / "out.png"
    plant(path, "link", victim)
    write_atomic(path, b"new")
    assert victim.read_bytes() == b"new" and path.is_symlink()


def test_completions_are_not_installed_through_a_planted_link(tmp_path):
    from vaecli.cli import app
    from vaecli.terminal.completion import FILE_NAMES, write_all

    victim = tmp_path / "victim.txt"
    folder = tmp_path / "completions"
    folder.mkdir()
    plant(folder / FILE_NAMES["bash"], "link", victim)
    with pytest.raises(OutputError, match="symbolic link"):
        write_all(folder, app)
    assert victim.read_bytes() == VICTIM
