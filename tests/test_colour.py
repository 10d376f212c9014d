"""Colour end to end: a tiny logistic model trained on a 32x32 RGB folder, then every command on it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers.runner import run_cli

SIDE = 32


def write_rgb_folder(root: Path, count: int) -> Path:
    """Coloured discs and stripes on coloured backgrounds, in two labelled sub-folders."""
    generator = np.random.default_rng(0)
    yy, xx = np.mgrid[0:SIDE, 0:SIDE] / SIDE
    for index in range(count):
        label = ("discs", "stripes")[index % 2]
        background, foreground = generator.integers(0, 256, (2, 3))
        if label == "discs":
            cx, cy, radius = generator.uniform(0.3, 0.7), generator.uniform(0.3, 0.7), generator.uniform(0.15, 0.3)
            mask = (xx - cx) ** 2 + (yy - cy) ** 2 < radius**2
        else:
            mask = np.sin(2 * np.pi * generator.uniform(2, 5) * (xx + yy * generator.uniform(-1, 1))) > 0
        (root / label).mkdir(parents=True, exist_ok=True)
        pixels = np.where(mask[..., None], foreground, background).astype(np.uint8)
        Image.fromarray(pixels, "RGB").save(root / label / f"{index:03d}.png")
    return root


@pytest.fixture(scope="module")
def colour(tmp_path_factory) -> tuple[Path, Path]:
    """(image folder, checkpoint) of one epoch of a cnn with a 2-logistic mixture on 64 RGB images."""
    where = tmp_path_factory.mktemp("colour")
    folder = write_rgb_folder(where / "shapes", 80)
    model = where / "rgb.safetensors"
    result = run_cli(
        "train", "--dataset", folder, "--channels", "3", "--image-size", str(SIDE), "--likelihood", "logistic",
        "--mixtures", "2", "--arch", "cnn", "--hidden", "8", "--epochs", "1", "--limit", "64", "--batch-size", "32",
        "--device", "cpu", "--json", "--no-report", "-o", model,
    )
    assert result.exit_code == 0, result.stderr
    record = json.loads(result.stdout.splitlines()[0])
    bits = record["test"]["bits_per_dim"]
    assert bits == pytest.approx(record["test"]["loss"] / (3 * SIDE * SIDE * np.log(2)))
    assert "bits/dim" in result.stderr
    return folder, model


def assert_rgb(path: Path, size: tuple[int, int] | None = (SIDE, SIDE)) -> None:
    with Image.open(path) as image:
        assert image.mode == "RGB", path
        if size is not None:
            assert image.size == size, path


def test_sample_writes_rgb_images_means_and_draws(cli, colour, tmp_path):
    _, model = colour
    for extra in ([], ["--sample-pixels"]):
        result = cli("sample", "-m", model, "-n", "3", "-o", "out", "--seed", "1", "--force", *extra)
        assert result.exit_code == 0, result.stderr
        for line in result.stdout.splitlines():
            assert_rgb(tmp_path / line)
    result = cli("sample", "-m", model, "-n", "4", "--grid", "grid.png", "--seed", "1")
    assert result.exit_code == 0, result.stderr
    assert_rgb(tmp_path / "grid.png", (2 * SIDE + 2, 2 * SIDE + 2))


def test_reconstruct_interpolate_encode_decode_in_colour(cli, colour, tmp_path):
    folder, model = colour
    a, b = sorted(folder.glob("*/*.png"))[:2]
    result = cli("reconstruct", "-m", model, a, b, "-o", "rec", "--compare", "pairs.png", "--sample-pixels")
    assert result.exit_code == 0, result.stderr
    assert_rgb(tmp_path / "rec" / f"recon-{a.stem}.png")
    assert_rgb(tmp_path / "pairs.png", None)
    result = cli("interpolate", "-m", model, a, b, "--steps", "2", "-o", "strip.png")
    assert result.exit_code == 0, result.stderr
    assert_rgb(tmp_path / "strip.png", (6 * SIDE + 5 * 2, SIDE))
    codes = cli("encode", "-m", model, a, b)
    assert codes.exit_code == 0, codes.stderr
    result = cli("decode", "-m", model, "-o", "dec", input=codes.stdout_bytes)
    assert result.exit_code == 0, result.stderr
    assert [Path(line).name for line in result.stdout.splitlines()] == ["decoded-0001.png", "decoded-0002.png"]
    assert_rgb(tmp_path / "dec" / "decoded-0001.png")


def test_eval_project_tour_fit_prior_info_in_colour(cli, colour, tmp_path):
    folder, model = colour
    result = cli("eval", "-m", model, "--dataset", folder, "-k", "4", "--limit", "16", "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["bits_per_dim"] == pytest.approx(report["nll"] / (3 * SIDE * SIDE * np.log(2)))
    result = cli("project", "-m", model, "--dataset", folder, "-o", "latent.png")
    assert result.exit_code == 0, result.stderr
    result = cli("tour", "-m", model, "--dataset", folder, "-o", "tour", "--seed", "1")
    assert result.exit_code == 0, result.stderr
    for name in ("reconstructions.png", "interpolation.png", "samples.png"):
        with Image.open(tmp_path / "tour" / name) as image:
            assert image.mode in ("RGB", "RGBA")
    result = cli("fit-prior", "-m", model, "--dataset", folder, "--components", "2", "-o", "prior.safetensors")
    assert result.exit_code == 0, result.stderr
    result = cli("sample", "-m", "prior.safetensors", "-n", "2", "-o", "fitted", "--seed", "2")
    assert result.exit_code == 0, result.stderr
    assert_rgb(tmp_path / result.stdout.splitlines()[0])
    result = cli("info", "prior.safetensors")
    assert result.exit_code == 0, result.stderr
    assert "3 x 32 x 32" in result.stdout
    assert "logistic (discretized, mixture of 2, R, G and B coupled)" in result.stdout


def test_score_traverse_and_manifold_in_colour(cli, colour, tmp_path):
    folder, model = colour
    result = cli("score", "-m", model, "--dataset", folder, "--limit", "4", "-k", "2", "--regret-steps", "2",
                 "-s", "nll,complexity,regret", "--units", "bpd", "--format", "jsonl")
    assert result.exit_code == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(rows) == 4 and all(np.isfinite(row["nll"]) and row["nll"] > 0 for row in rows)
    result = cli("traverse", "-m", model, "--dataset", folder, "--limit", "16", "--steps", "3", "-o", "t.png",
                 "--gif", "t.gif")
    assert result.exit_code == 0, result.stderr
    with Image.open(tmp_path / "t.gif") as gif:  # the sweep's frames are the decoded images themselves
        assert gif.n_frames >= 3
    result = cli("manifold", "-m", model, "--dataset", folder, "--limit", "16", "--size", "3", "-o", "m.png")
    assert result.exit_code == 0, result.stderr
    for figure in ("t.png", "m.png"):
        with Image.open(tmp_path / figure) as image:
            assert image.mode in ("RGB", "RGBA")  # matplotlib figures


def test_every_command_on_a_model_of_a_fabricated_cifar10(cli, tmp_path, monkeypatch):
    """CIFAR-10 in its own on-disk format, trained by name, then the commands that read its test split."""
    from tests.helpers.fabricate import trust_fabricated, write_cifar10

    write_cifar10(tmp_path / "data", train=64, test=24)
    trust_fabricated(monkeypatch)
    data = ["--dataset", "cifar10", "--data-root", tmp_path / "data"]
    result = cli("train", *data, "--likelihood", "logistic", "--arch", "cnn", "--hidden", "8", "--epochs", "1",
                 "--batch-size", "32", "--device", "cpu", "-q", "--no-report", "-o", "c.safetensors")
    assert result.exit_code == 0, result.stderr
    model = ["-m", "c.safetensors"]
    for command in (["eval", "-k", "2"], ["project", "-o", "p.png"], ["tour", "-o", "tour", "--seed", "1"],
                    ["score", "--limit", "3", "-k", "2", "-s", "nll,complexity"],
                    ["traverse", "--limit", "8", "--steps", "3", "-o", "t.png"],
                    ["manifold", "--limit", "8", "--size", "3", "-o", "m.png"],
                    ["fit-prior", "--components", "2", "-o", "f.safetensors"]):
        result = cli(*command, *model, *data)
        assert result.exit_code == 0, (command, result.stderr)
    for command in (["sample", "-n", "2", "-o", "s", "--seed", "1"], ["sample", "-m", "f.safetensors", "-n", "2",
                                                                         "-o", "fs", "--seed", "1"]):
        result = cli(*(command if "-m" in command else [*command, *model]))
        assert result.exit_code == 0, (command, result.stderr)
        assert_rgb(tmp_path / result.stdout.splitlines()[0])
    picture = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8), "RGB").save(picture)
    for command in (["reconstruct", picture, "-o", "rec"], ["interpolate", picture, picture, "-o", "strip.png"],
                    ["encode", picture, "-o", "z.npy"], ["decode", "z.npy", "-o", "dec"]):
        result = cli(*command, *model)
        assert result.exit_code == 0, (command, result.stderr)
    assert_rgb(tmp_path / "rec" / "recon-photo.png")
    assert_rgb(tmp_path / "dec" / "decoded-0001.png")
    shown = cli("info", "c.safetensors")
    assert "cifar10" in shown.stdout and "3 x 32 x 32" in shown.stdout
