"""`vae tour`: the four figures in one folder, their paths on stdout, the offline fallback."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from vaecli.store.checkpoint import load_checkpoint, save_checkpoint

FIGURES = ("latent.png", "reconstructions.png", "interpolation.png", "samples.png")


@pytest.mark.slow
def test_tour_writes_four_pngs_and_prints_their_paths(cli, tiny_model, tmp_path):
    result = cli("tour", "-m", tiny_model, "-o", "figs", "--device", "cpu")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines() == [f"figs/{name}" for name in FIGURES]
    for name in FIGURES:
        with Image.open(tmp_path / "figs" / name) as image:
            assert image.format == "PNG"
    with Image.open(tmp_path / "figs" / "interpolation.png") as strip:
        assert strip.width > 4 * strip.height  # one row of 9 panels


@pytest.mark.slow
def test_tour_falls_back_to_digits_when_mnist_is_missing(cli, tiny_model, tmp_path):
    # The same weights, recorded as trained on MNIST, which this empty data root lacks.
    checkpoint = load_checkpoint(tiny_model)
    checkpoint.meta["config"]["dataset"] = checkpoint.meta["dataset"] = "mnist"
    save_checkpoint(tmp_path / "m.safetensors", checkpoint.model, checkpoint.meta)
    (tmp_path / "empty").mkdir()
    result = cli("tour", "-m", "m.safetensors", "--data-root", "empty", "--device", "cpu", "--seed", "1")
    assert result.exit_code == 0, result.stderr
    assert "mnist is not available" in result.stderr and "digits" in result.stderr
    assert result.stdout.splitlines() == [str(Path("tour") / name) for name in FIGURES]


def test_tour_refuses_a_file_as_its_folder(cli, tiny_model, tmp_path):
    (tmp_path / "file").write_text("x")
    result = cli("tour", "-m", tiny_model, "-o", "file")
    assert result.exit_code == 2
    assert result.stdout == ""
