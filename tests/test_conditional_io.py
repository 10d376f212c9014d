"""`--label` on decode, encode, reconstruct and interpolate: conditional models through the CLI, end to end."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

from vaecli.data.images import GRID_PADDING

from tests.helpers.cli_checks import one_error_line
from tests.helpers.runner import run_cli

TRAIN = ("train", "--arch", "mlp", "--hidden", "32", "--latent-dim", "4", "--epochs", "1", "--device", "cpu",
         "-q", "--no-report")


def _train(out, dataset: str, *extra: str):
    result = run_cli(*TRAIN, "--dataset", dataset, *extra, "-o", out, env={"VAE_OFFLINE": "1"})
    assert result.exit_code == 0, result.stderr
    return out


def _drawing(path, shape: str, box):
    image = Image.new("L", (28, 28), 0)
    getattr(ImageDraw.Draw(image), shape)(box, outline=255, width=3)
    image.save(path)
    return path


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("conditional")


@pytest.fixture(scope="module")
def models(root):
    """Tiny digits models, conditional (classes "0".."9") and not, and one on a folder with named classes."""
    shapes = root / "shapes"
    for name, shape in (("circle", "ellipse"), ("square", "rectangle")):
        (shapes / name).mkdir(parents=True)
        for i in range(12):
            _drawing(shapes / name / f"{i:02d}.png", shape, (4 + i % 4, 4 + i // 4, 20 + i % 4, 22))
    return {
        "cond": _train(root / "cond.safetensors", "digits", "--conditional", "--limit", "400"),
        "plain": _train(root / "plain.safetensors", "digits", "--limit", "400"),
        "named": _train(root / "named.safetensors", str(shapes), "--conditional"),
    }


@pytest.fixture(scope="module")
def inputs(root):
    """Two images and a .npy of three codes, shared by every command."""
    a = _drawing(root / "a.png", "ellipse", (6, 4, 22, 24))
    b = _drawing(root / "b.png", "rectangle", (8, 6, 20, 22))
    codes = root / "codes.npy"
    np.save(codes, np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32))
    return {"a": str(a), "b": str(b), "codes": str(codes)}


def _args(command: str, inputs: dict) -> list[str]:
    """Each command's run with its bytes on stdout: a grid, a .npy, a comparison figure, a strip."""
    return {
        "decode": ["decode", inputs["codes"], "-o", "-"],
        "encode": ["encode", inputs["a"], inputs["b"]],
        "reconstruct": ["reconstruct", inputs["a"], inputs["b"], "--compare", "-"],
        "interpolate": ["interpolate", inputs["a"], inputs["b"], "--steps", "3", "-o", "-"],
    }[command]


COMMANDS = ("decode", "encode", "reconstruct", "interpolate")


def _run(command: str, inputs: dict, model, *label: str):
    result = run_cli(*_args(command, inputs), "-m", model, *label)
    assert result.exit_code == 0, result.stderr
    return result.stdout_bytes


def _png_size(data: bytes) -> tuple[int, int]:
    return Image.open(io.BytesIO(data)).size


def test_decode_writes_one_image_per_code(models, inputs, tmp_path):
    result = run_cli("decode", inputs["codes"], "-m", models["cond"], "--label", "7", "-o", "out")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "out/decoded-0001.png\nout/decoded-0002.png\nout/decoded-0003.png\n"
    for name in result.stdout.split():
        image = Image.open(tmp_path / name)
        assert image.size == (28, 28) and image.mode == "L"
    side = 2 * 28 + GRID_PADDING  # three codes: a square grid of two by two
    assert _png_size(_run("decode", inputs, models["cond"], "--label", "7")) == (side, side)


def test_encode_writes_the_means_of_q_z_given_x_and_y(models, inputs):
    means = np.load(io.BytesIO(_run("encode", inputs, models["cond"], "--label", "7")), allow_pickle=False)
    assert means.dtype == np.float32 and means.shape == (2, 4)


def test_reconstruct_writes_each_image_and_the_comparison(models, inputs, tmp_path):
    result = run_cli("reconstruct", inputs["a"], inputs["b"], "-m", models["cond"], "--label", "7", "-o", "out")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "out/recon-a.png\nout/recon-b.png\n"
    assert Image.open(tmp_path / "out" / "recon-a.png").size == (28, 28)
    pair = 2 * 28 + GRID_PADDING
    figure = _run("reconstruct", inputs, models["cond"], "--label", "7")
    assert _png_size(figure) == (2 * pair + 3 * GRID_PADDING, 28)


def test_interpolate_writes_a_strip_of_steps_plus_four_panels(models, inputs):
    assert _png_size(_run("interpolate", inputs, models["cond"], "--label", "7")) == (7 * 28 + 6 * GRID_PADDING, 28)


@pytest.mark.parametrize("command", COMMANDS)
def test_the_same_label_gives_the_same_bytes_and_another_label_other_bytes(models, inputs, command):
    first = _run(command, inputs, models["cond"], "--label", "3")
    assert _run(command, inputs, models["cond"], "--label", "3") == first
    assert _run(command, inputs, models["cond"], "--label", "8") != first


def test_decoding_the_labelled_means_gives_the_labelled_reconstructions(models, inputs, tmp_path):
    encoded = run_cli("encode", inputs["a"], inputs["b"], "-m", models["cond"], "--label", "4")
    decoded = run_cli("decode", "-m", models["cond"], "--label", "4", "-o", "dec", input=encoded.stdout_bytes)
    recon = run_cli("reconstruct", inputs["a"], inputs["b"], "-m", models["cond"], "--label", "4", "-o", "rec")
    assert decoded.exit_code == 0 and recon.exit_code == 0, decoded.stderr + recon.stderr
    for decoded_name, recon_name in (("decoded-0001.png", "recon-a.png"), ("decoded-0002.png", "recon-b.png")):
        assert (tmp_path / "dec" / decoded_name).read_bytes() == (tmp_path / "rec" / recon_name).read_bytes()


@pytest.mark.parametrize("command", COMMANDS)
def test_a_class_by_name_and_by_number_agree(models, inputs, command):
    by_name = _run(command, inputs, models["named"], "--label", "square")
    assert _run(command, inputs, models["named"], "--label", "1") == by_name
    assert _run(command, inputs, models["named"], "--label", "circle") != by_name


ERRORS = {
    "a number past the classes": ("cond", ["--label", "12"], "not a class of"),
    "a name no class has": ("cond", ["--label", "cat"], "not a class of"),
    "a label for an unconditional model": ("plain", ["--label", "3"], "is not conditional"),
    "no label for a conditional model": ("cond", [], "give --label"),
}


@pytest.mark.parametrize("case", ERRORS)
@pytest.mark.parametrize("command", COMMANDS)
def test_a_wrong_label_is_one_line_and_exit_2(models, inputs, tmp_path, command, case):
    which, label, fragment = ERRORS[case]
    result = run_cli(*_args(command, inputs), "-m", models[which], *label)
    assert result.exit_code == 2
    line = one_error_line(result)
    assert "--label" in line and fragment in line, line
    assert result.stdout_bytes == b""
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", COMMANDS)
def test_the_label_is_checked_before_the_inputs_are_read(models, inputs, command):
    missing = {key: str(value) + ".missing" for key, value in inputs.items()}
    result = run_cli(*_args(command, missing), "-m", models["cond"])
    assert result.exit_code == 2
    assert "give --label" in one_error_line(result)


@pytest.mark.parametrize("command", COMMANDS)
def test_an_unconditional_model_needs_no_label(models, inputs, command):
    assert _run(command, inputs, models["plain"])
