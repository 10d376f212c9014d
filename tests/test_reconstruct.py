"""`vae reconstruct` end to end: conversion to the model's shape, inversion, outputs, errors."""

from __future__ import annotations

import io

import pytest
import torch
from PIL import Image, ImageDraw, ImageOps

from vaecli.data.images import GRID_PADDING, border_is_light, should_invert

from tests.helpers.cli_checks import one_error_line


def digit(path, size=28, black_on_white=False, mode="L"):
    """A white ring on black (MNIST's polarity), or black on white, saved as PNG."""
    image = Image.new("L", (size, size), 0)
    ImageDraw.Draw(image).ellipse(
        (size * 0.3, size * 0.2, size * 0.7, size * 0.8), outline=255, width=max(2, size // 10)
    )
    if black_on_white:
        image = ImageOps.invert(image)
    image.convert(mode).save(path)
    return path


def test_one_png_per_input_named_after_it(cli, tiny_model, tmp_path):
    digit(tmp_path / "a.png")
    digit(tmp_path / "b.png")
    result = cli("reconstruct", "a.png", "b.png", "-m", tiny_model, "-o", "out")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "out/recon-a.png\nout/recon-b.png\n"
    assert result.stderr == ""  # already 28x28 grey and light on dark: nothing to say
    for line in result.stdout.splitlines():
        image = Image.open(tmp_path / line)
        assert image.format == "PNG" and image.size == (28, 28) and image.mode == "L"


def test_other_sizes_and_rgb_are_converted_with_one_note(cli, tiny_model, tmp_path):
    digit(tmp_path / "big.png", size=100, mode="RGB")
    digit(tmp_path / "small.jpg", size=20)
    result = cli("reconstruct", "big.png", "small.jpg", "-m", tiny_model, "--scale", "2")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "recon-big.png\nrecon-small.png\n"
    assert result.stderr.strip().splitlines() == ["resized 2 of 2 input(s) to 28x28, the model's size"]
    image = Image.open(tmp_path / "recon-big.png")
    assert image.size == (56, 56) and image.mode == "L"


def test_auto_inverts_black_on_white_drawings(cli, tiny_model, tmp_path):
    digit(tmp_path / "paper.png", black_on_white=True)
    auto = cli("reconstruct", "paper.png", "-m", tiny_model, "-o", "auto")
    kept = cli("reconstruct", "paper.png", "-m", tiny_model, "-o", "no", "--invert", "no")
    forced = cli("reconstruct", "paper.png", "-m", tiny_model, "-o", "yes", "--invert", "yes", "-q")
    assert auto.exit_code == kept.exit_code == forced.exit_code == 0
    assert "inverted 1 of 1 input(s)" in auto.stderr and kept.stderr == ""
    recon = {name: (tmp_path / name / "recon-paper.png").read_bytes() for name in ("auto", "no", "yes")}
    assert recon["auto"] == recon["yes"]
    assert recon["auto"] != recon["no"]


def test_invert_decision():
    dark = torch.zeros((1, 28, 28), dtype=torch.uint8)
    dark[:, 10:18, 10:18] = 255  # a light stroke inside does not count
    light = 255 - dark
    assert not border_is_light(dark) and border_is_light(light)
    assert should_invert(light, "auto") and not should_invert(dark, "auto")
    assert should_invert(dark, "yes") and not should_invert(light, "no")
    rgb_paper = torch.full((3, 8, 8), 230, dtype=torch.uint8)
    assert not should_invert(rgb_paper, "auto")  # a colour model's input is a picture: auto leaves it
    assert should_invert(rgb_paper, "yes")


def test_compare_figure_pairs_each_input_with_its_reconstruction(cli, tiny_model, tmp_path):
    digit(tmp_path / "a.png")
    digit(tmp_path / "b.png", black_on_white=True)
    result = cli("reconstruct", "a.png", "b.png", "-m", tiny_model, "--compare", "cmp.png", "-q")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "cmp.png\n"
    assert not list(tmp_path.glob("recon-*.png"))  # the figure instead of single files
    figure = Image.open(tmp_path / "cmp.png")
    pair = 2 * 28 + GRID_PADDING
    assert figure.size == (2 * pair + 3 * GRID_PADDING, 28) and figure.mode == "L"
    # The first cell is input a as the model saw it.
    assert figure.crop((0, 0, 28, 28)).tobytes() == Image.open(tmp_path / "a.png").tobytes()


def test_compare_to_stdout_as_png_bytes(cli, tiny_model, tmp_path):
    digit(tmp_path / "a.png")
    result = cli("reconstruct", "a.png", "-m", tiny_model, "--compare", "-")
    assert result.exit_code == 0, result.stderr
    assert Image.open(io.BytesIO(result.stdout_bytes)).size == (2 * 28 + GRID_PADDING, 28)


def test_stdin_and_repeated_names(cli, tiny_model, tmp_path):
    (tmp_path / "x").mkdir()
    digit(tmp_path / "x" / "d.png")
    digit(tmp_path / "d.png")
    data = (tmp_path / "d.png").read_bytes()
    result = cli("reconstruct", "d.png", "x/d.png", "-", "-m", tiny_model, "-o", "out", input=data)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "out/recon-d.png\nout/recon-d-2.png\nout/recon-stdin.png\n"
    assert (tmp_path / "out/recon-d.png").read_bytes() == (tmp_path / "out/recon-stdin.png").read_bytes()


@pytest.mark.parametrize(
    ("setup", "args", "expected"),
    [
        (None, ["missing.png"], "missing.png: no such file"),
        ("text", ["notes.txt"], "notes.txt: not a readable image"),
        ("png", ["d.png", "-", "-"], "`-` (stdin) can be given only once"),
        ("png", ["d.png", "-o", "-"], "-o takes a folder"),
    ],
)
def test_bad_inputs_are_one_line_errors(cli, tiny_model, tmp_path, setup, args, expected):
    if setup == "text":
        (tmp_path / "notes.txt").write_text("hello")
    if setup == "png":
        digit(tmp_path / "d.png")
    result = cli("reconstruct", *args, "-m", tiny_model)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert expected in one_error_line(result)
