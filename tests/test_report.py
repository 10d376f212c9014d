"""The training report: loss curves and KL bars beside the checkpoint, --report DIR, --no-report."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from PIL import Image

from vaecli.errors import Interrupted
from vaecli.figures.report import report_after_training, write_report

TINY = ["--dataset", "digits", "--arch", "mlp", "--hidden", "8", "--latent-dim", "4",
        "--epochs", "1", "--limit", "100", "--device", "cpu"]


def assert_png(path: Path) -> None:
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width > 300


def test_train_writes_the_report_beside_the_checkpoint(cli, tmp_path):
    result = cli("train", *TINY, "-o", "runs/small.safetensors")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "runs/small.safetensors\n"  # the report's paths go to stderr only
    assert "report: runs/small-losses.png" in result.stderr
    assert "report: runs/small-kl.png" in result.stderr
    assert_png(tmp_path / "runs" / "small-losses.png")
    assert_png(tmp_path / "runs" / "small-kl.png")


def test_report_dir_and_no_report(cli, tmp_path):
    result = cli("train", *TINY, "-q", "--report", "reports/here")
    assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "reports" / "here").iterdir()) == ["vae-kl.png", "vae-losses.png"]
    assert not list(tmp_path.glob("*.png"))

    result = cli("train", *TINY, "-o", "quiet.safetensors", "--no-report")
    assert result.exit_code == 0, result.stderr
    assert "report" not in result.stderr
    assert not list(tmp_path.glob("quiet-*.png"))


def test_report_folder_that_is_a_file_is_refused_before_training(cli, tmp_path):
    (tmp_path / "taken").write_text("x")
    result = cli("train", *TINY, "--report", "taken")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert not (tmp_path / "vae.safetensors").exists()


def test_history_without_kl_per_dim_gives_only_the_loss_curves(tmp_path):
    history = [
        {"epoch": e, "train": {"recon": 100.0 - e, "kl": 5.0 + e, "loss": 105.0},
         "test": {"recon": 101.0 - e, "kl": 5.5 + e, "loss": 106.5}}
        for e in (1, 2, 3)
    ]
    written = write_report(history, tmp_path / "old.safetensors", tmp_path / "r")
    assert written == [tmp_path / "r" / "old-losses.png"]
    assert_png(written[0])
    assert write_report([], tmp_path / "none.safetensors") == []


@pytest.mark.parametrize("saved_during_run", [True, False])
def test_interrupt_reports_only_when_this_run_saved_an_epoch(tiny_model, tmp_path, saved_during_run):
    checkpoint = tmp_path / "run.safetensors"
    if not saved_during_run:
        shutil.copy(tiny_model, checkpoint)  # an older file that this run never rewrote
    written: list[Path] = []
    report = report_after_training(checkpoint, None, True, written.append, pytest.fail)
    with pytest.raises(Interrupted), report:
        if saved_during_run:
            shutil.copy(tiny_model, checkpoint)
        raise Interrupted("interrupted during epoch 2")
    expected = [tmp_path / "run-losses.png", tmp_path / "run-kl.png"] if saved_during_run else []
    assert written == expected
    assert sorted(tmp_path.glob("*.png")) == sorted(expected)
