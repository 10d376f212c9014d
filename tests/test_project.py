"""`vae project`: the latent scatter PNG, the --points CSV, image folders, determinism, errors."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
from PIL import Image

from vaecli.config import ModelConfig, TrainConfig
from vaecli.model.networks import build_model
from vaecli.store.checkpoint import build_metadata, save_checkpoint

DIGITS = ["--dataset", "digits", "--limit", "50", "--device", "cpu"]


def read_png(path: Path) -> Image.Image:
    image = Image.open(path)
    image.load()
    assert image.format == "PNG"
    return image


def read_rows(path: Path) -> list[list[str]]:
    with open(path, newline="") as handle:
        return list(csv.reader(handle))


def untrained_checkpoint(path: Path, latent_dim: int) -> Path:
    """A seeded, untrained model with any latent size: enough to exercise the 1-D and 2-D paths."""
    import torch

    config = TrainConfig(model=ModelConfig(arch="mlp", latent_dim=latent_dim, hidden=8), dataset="digits")
    torch.manual_seed(0)
    save_checkpoint(path, build_model(config.model), build_metadata(config, epochs_done=0, history=[]))
    return path


def test_writes_a_png_and_prints_only_its_path(cli, tiny_model, tmp_path):
    result = cli("project", "-m", tiny_model, *DIGITS)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "latent.png\n"
    assert "encoded 50 digits test images" in result.stderr
    image = read_png(tmp_path / "latent.png")
    assert image.width > 400 and image.height > 300


def test_points_csv_has_one_row_per_image_and_the_full_mean(cli, tiny_model, tmp_path):
    result = cli("project", "-m", tiny_model, *DIGITS, "-o", "out/scatter.png", "--points", "p.csv")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "out/scatter.png\np.csv\n"
    header, *rows = read_rows(tmp_path / "p.csv")
    assert header == ["index", "label", "class", "x", "y", "mu_1", "mu_2", "mu_3", "mu_4"]
    assert len(rows) == 50
    assert [int(row[0]) for row in rows] == list(range(50))
    assert all(row[1] == row[2] for row in rows)  # digits: the class name is the digit
    assert len({row[1] for row in rows}) > 1
    assert all(len(row) == len(header) for row in rows)
    values = [float(v) for row in rows for v in row[3:]]
    assert all(math.isfinite(v) for v in values)
    read_png(tmp_path / "out" / "scatter.png")


def test_same_seed_gives_identical_bytes(cli, tiny_model, tmp_path):
    for name in ("a.png", "b.png"):
        assert cli("project", "-m", tiny_model, *DIGITS, "--seed", "3", "-o", name, "-q").exit_code == 0
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()


def test_png_bytes_on_stdout(cli, tiny_model, tmp_path):
    result = cli("project", "-m", tiny_model, *DIGITS, "-o", "-", "-q")
    assert result.exit_code == 0, result.stderr
    assert result.stdout_bytes.startswith(b"\x89PNG\r\n\x1a\n")
    assert result.stderr == ""


def test_image_folder_labels_come_from_sub_folders(cli, tiny_model, tmp_path):
    for index, (label, colour) in enumerate([("cats", 30), ("cats", 60), ("cats", 90),
                                             ("dogs", 160), ("dogs", 200), ("dogs", 240)]):
        folder = tmp_path / "pets" / label
        folder.mkdir(parents=True, exist_ok=True)
        # RGB at another size: the command converts to the model's 1 x 28 x 28.
        image = Image.new("RGB", (20, 16), (colour, 255 - colour, colour // 2))
        image.putpixel((index, index), (255, 255, 255))
        image.save(folder / f"{index}.png")
    result = cli("project", "-m", tiny_model, "--dataset", "pets", "--points", "pets.csv", "--device", "cpu")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "latent.png\npets.csv\n"
    _, *rows = read_rows(tmp_path / "pets.csv")
    assert [(row[1], row[2]) for row in rows] == [("0", "cats")] * 3 + [("1", "dogs")] * 3
    read_png(tmp_path / "latent.png")


@pytest.mark.parametrize("latent_dim, xlabel_start", [(1, "z1"), (2, "z1")])
def test_small_latents_are_drawn_without_pca(cli, tmp_path, latent_dim, xlabel_start):
    model = untrained_checkpoint(tmp_path / f"z{latent_dim}.safetensors", latent_dim)
    result = cli("project", "-m", model, *DIGITS, "--points", "p.csv")
    assert result.exit_code == 0, result.stderr
    header, *rows = read_rows(tmp_path / "p.csv")
    assert len(header) == 5 + latent_dim and len(rows) == 50
    # x is the first mean itself; a 1-D latent is drawn one row per class (y = label).
    assert all(float(row[3]) == float(row[5]) for row in rows)
    if latent_dim == 1:
        assert all(float(row[4]) == float(row[1]) for row in rows)
        assert "one row per class" in result.stderr
    else:
        assert all(float(row[4]) == float(row[6]) for row in rows)


def test_bad_outputs_and_inputs_fail_in_one_line(cli, tiny_model, tmp_path):
    (tmp_path / "folder").mkdir()
    result = cli("project", "-m", tiny_model, *DIGITS, "-o", "folder")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and "is a folder" in result.stderr

    result = cli("project", "-m", tiny_model, "--dataset", "nowhere", "--device", "cpu")
    assert result.exit_code == 2
    assert "unknown dataset" in result.stderr and result.stdout == ""

    result = cli("project", "-m", tiny_model, "--dataset", "digits", "--limit", "1", "--device", "cpu")
    assert result.exit_code == 2
    assert "PCA needs at least 2 images, got 1; raise --limit" in result.stderr
