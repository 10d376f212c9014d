"""`vae encode` and `vae decode` end to end: .npy on stdout and in files, the pipe, bad arrays."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

from vaecli.data.images import GRID_PADDING


def drawing(path, box):
    image = Image.new("L", (28, 28), 0)
    ImageDraw.Draw(image).ellipse(box, outline=255, width=3)
    image.save(path)
    return path


@pytest.fixture
def images(tmp_path):
    return drawing(tmp_path / "a.png", (6, 4, 22, 24)), drawing(tmp_path / "b.png", (10, 8, 18, 20))


def load_npy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def test_encode_writes_float32_means_to_stdout(cli, tiny_model, images):
    result = cli("encode", "a.png", "b.png", "-m", tiny_model)
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    means = load_npy(result.stdout_bytes)  # stdout is the .npy file and nothing else
    assert means.dtype == np.float32 and means.shape == (2, 4)
    assert not np.allclose(means[0], means[1])


def test_encode_to_a_file_prints_its_path(cli, tiny_model, tmp_path, images):
    piped = cli("encode", "a.png", "b.png", "-m", tiny_model)
    saved = cli("encode", "a.png", "b.png", "-m", tiny_model, "-o", "codes.npy")
    assert saved.exit_code == 0, saved.stderr
    assert saved.stdout == "codes.npy\n"
    assert (tmp_path / "codes.npy").read_bytes() == piped.stdout_bytes


def test_encode_piped_into_decode_round_trips(cli, tiny_model, tmp_path, images):
    encoded = cli("encode", "a.png", "b.png", "-m", tiny_model)
    decoded = cli("decode", "-m", tiny_model, "-o", "out", input=encoded.stdout_bytes)
    assert decoded.exit_code == 0, decoded.stderr
    assert decoded.stdout == "out/decoded-0001.png\nout/decoded-0002.png\n"
    recon = cli("reconstruct", "a.png", "b.png", "-m", tiny_model, "-o", "recon")
    assert recon.exit_code == 0, recon.stderr
    for name, recon_name in (("decoded-0001.png", "recon-a.png"), ("decoded-0002.png", "recon-b.png")):
        image = Image.open(tmp_path / "out" / name)
        assert image.format == "PNG" and image.size == (28, 28) and image.mode == "L"
        # Decoding the means gives exactly the reconstructions.
        assert (tmp_path / "out" / name).read_bytes() == (tmp_path / "recon" / recon_name).read_bytes()


def test_decode_a_file_into_a_grid_or_stdout(cli, tiny_model, tmp_path):
    np.save(tmp_path / "z.npy", np.zeros((3, 4), dtype=np.float64))
    grid = cli("decode", "z.npy", "-m", tiny_model, "--grid", "g.png", "--nrow", "3", "--scale", "2")
    assert grid.exit_code == 0, grid.stderr
    assert grid.stdout == "g.png\n"
    assert Image.open(tmp_path / "g.png").size == (2 * (3 * 28 + 2 * GRID_PADDING), 56)
    raw = cli("decode", "-", "-m", tiny_model, "-o", "-", input=(tmp_path / "z.npy").read_bytes())
    assert raw.exit_code == 0, raw.stderr
    assert Image.open(io.BytesIO(raw.stdout_bytes)).format == "PNG"


def test_decode_numbering_goes_on_like_sample(cli, tiny_model, tmp_path):
    np.save(tmp_path / "z.npy", np.zeros((1, 4), dtype=np.float32))
    first = cli("decode", "z.npy", "-m", tiny_model, "-q")
    second = cli("decode", "z.npy", "-m", tiny_model, "-q")
    assert (first.stdout, second.stdout) == ("decoded-0001.png\n", "decoded-0002.png\n")


def _save(path, array, **kwargs):
    np.save(path, array, **kwargs)


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda p: _save(p, np.zeros((2, 3), np.float32)), "shape (2, 3), but this model needs (N, 4)"),
        (lambda p: _save(p, np.zeros(4, np.float32)), "shape (4,)"),
        (lambda p: _save(p, np.zeros((2, 4), np.int64)), "not floats"),
        (lambda p: _save(p, np.full((1, 4), np.nan, np.float32)), "NaN or Inf"),
        (lambda p: _save(p, np.zeros((0, 4), np.float32)), "no rows"),
        (lambda p: _save(p, np.array([None], dtype=object), allow_pickle=True), "not a readable .npy"),
        (lambda p: p.write_bytes(b"\x89PNG not numpy"), "not a .npy file"),
        (lambda p: p.write_bytes(b""), "empty"),
    ],
)
def test_decode_refuses_bad_arrays_in_one_line(cli, tiny_model, tmp_path, make, expected):
    make(tmp_path / "bad.npy")
    result = cli("decode", "bad.npy", "-m", tiny_model)
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: bad.npy: ") and expected in lines[0], lines


def test_decode_missing_file(cli, tiny_model):
    result = cli("decode", "nope.npy", "-m", tiny_model)
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == ["error: nope.npy: no such file; check the path"]
