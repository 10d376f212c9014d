"""Lossless codecs beside a model's bits/dim: vaecli.analysis.codecs and `vae eval --codecs`.

Every figure is checked against files this test writes itself with Pillow and measures on disk."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, features

from vaecli.analysis.codecs import CODECS, Codec, codec_bits
from vaecli.errors import SettingError

# Written here from the settings the docs state, not read from the module: each image its own file.
PNG_OPTIONS = [{"optimize": True}]
WEBP_OPTIONS = [{"lossless": True, "quality": 100, "method": 4}]
J2K_OPTIONS = [{"irreversible": False, "num_resolutions": levels} for levels in range(1, 6)]  # .j2k: a codestream
SUFFIX = {"png": ".png", "webp": ".webp", "jpeg2000": ".j2k"}


def file_bits(images: np.ndarray, folder: Path) -> dict[str, float | None]:
    """Each codec's bits/dim from files on disk; None where unwritable. JPEG 2000 tries 1 wavelet level, then
    more while the file shrinks and the image is large enough to halve."""
    folder.mkdir()
    totals: dict[str, float | None] = {}
    for name, options in (("png", PNG_OPTIONS), ("webp", WEBP_OPTIONS), ("jpeg2000", J2K_OPTIONS)):
        if name == "jpeg2000" and not features.check("jpg_2000"):
            totals[name] = None
            continue
        total = 0
        for index, image in enumerate(images):
            picture = Image.fromarray(image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0))
            if name == "png" and image.shape[0] == 1 and set(np.unique(image)) <= {0, 255}:
                picture = picture.convert("1")  # a black-and-white image as 1-bit PNG
            sizes: list[int] = []
            for number, settings in enumerate(options):
                if settings.get("num_resolutions", 1) > 1 + np.log2(min(image.shape[1:])):
                    break
                extra = {"mct": 1} if name == "jpeg2000" and image.shape[0] == 3 else {}
                path = folder / f"{name}-{index}-{number}{SUFFIX[name]}"
                picture.save(path, **settings, **extra)
                with Image.open(path) as back:
                    same = np.array_equal(np.asarray(back.convert("RGB")), np.asarray(picture.convert("RGB")))
                assert same, path  # the test's own files are lossless
                if sizes and path.stat().st_size >= min(sizes):
                    break
                sizes.append(path.stat().st_size)
            total += min(sizes)
        totals[name] = 8 * total / images.size
    return totals


def shapes(channels: int, count: int = 5, side: int = 24, seed: int = 0) -> np.ndarray:
    """Smooth gradients with a noisy disc: images a codec compresses, but not to nothing."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:side, 0:side]
    images = np.empty((count, channels, side, side), dtype=np.uint8)
    for i in range(count):
        for c in range(channels):
            ramp = (xx * rng.uniform(2, 8) + yy * rng.uniform(-4, 4) + rng.integers(0, 256)) % 256
            disc = (xx - rng.integers(6, 18)) ** 2 + (yy - rng.integers(6, 18)) ** 2 < 30
            images[i, c] = np.where(disc, rng.integers(0, 256, (side, side)), ramp)
    return images


def figures(images: np.ndarray | torch.Tensor) -> dict[str, float | None]:
    return {result.name: result.bits_per_dim for result in codec_bits(images)}


@pytest.mark.parametrize("channels", [1, 3])
def test_figures_equal_files_on_disk(tmp_path, channels):
    images = shapes(channels)
    measured = figures(images)
    assert measured == pytest.approx(file_bits(images, tmp_path / "files"))
    assert set(measured) == {"png", "webp", "jpeg2000"}
    assert figures(torch.from_numpy(images)) == measured  # a tensor of the same pixels gives the same files


def test_black_and_white_grey_is_stored_at_one_bit(tmp_path):
    images = (shapes(1, count=4) > 127).astype(np.uint8) * 255
    measured = figures(images)
    assert measured == pytest.approx(file_bits(images, tmp_path / "files"))
    eight_bit = sum(len(_png(image[0])) for image in images) * 8 / images.size
    assert measured["png"] < eight_bit  # the 1-bit file is the smaller: what a user would store


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def test_a_lossy_codec_is_not_reported():
    lossy = Codec("jpeg", "JPEG", "JPEG", "jpg", ({"quality": 60},))
    result, png = codec_bits(shapes(3), (lossy, CODECS[0]))
    assert result.bits_per_dim is None and "not lossless" in result.skipped
    assert png.bits_per_dim is not None and not png.skipped


def test_every_file_is_decoded_and_compared(monkeypatch):
    # A decoder that gives back other pixels (here: one subpixel off by one) must sink every codec's figure.
    real_open = Image.open

    def off_by_one(fp, *args, **kwargs):
        with real_open(fp, *args, **kwargs) as picture:
            changed = picture.copy()
        value = changed.getpixel((0, 0))
        changed.putpixel((0, 0), tuple(v ^ 1 for v in value) if isinstance(value, tuple) else value ^ 1)
        return changed

    monkeypatch.setattr(Image, "open", off_by_one)
    assert all(result.bits_per_dim is None and "not lossless" in result.skipped for result in codec_bits(shapes(1)))


def test_jpeg2000_missing_is_skipped_with_its_reason(monkeypatch):
    real = features.check
    monkeypatch.setattr(features, "check", lambda name: False if name == "jpg_2000" else real(name))
    results = {result.name: result for result in codec_bits(shapes(3))}
    assert results["jpeg2000"].bits_per_dim is None and "OpenJPEG" in results["jpeg2000"].skipped
    assert results["png"].bits_per_dim and results["webp"].bits_per_dim


def test_one_pixel_images_and_bad_arrays():
    tiny = np.full((2, 1, 1, 1), 7, dtype=np.uint8)
    results = {result.name: result for result in codec_bits(tiny)}
    assert results["png"].bits_per_dim == pytest.approx(8 * len(_png(tiny[0, 0])))  # 1 dim per image
    for bad in (np.zeros((2, 2, 4, 4), np.uint8), np.zeros((2, 1, 4, 4), np.float32), np.zeros((0, 1, 4, 4), np.uint8)):
        with pytest.raises(SettingError, match="`images`"):
            codec_bits(bad)


# --- vae eval --codecs ------------------------------------------------------------------------------------------


SIDE = 16


@pytest.fixture(scope="module")
def rgb_folder_model(tmp_path_factory) -> tuple[Path, Path]:
    """A folder of 20 RGB PNGs (test split: the 10th and 20th in name order) and a tiny logistic model of it."""
    from tests.helpers.runner import run_cli

    where = tmp_path_factory.mktemp("codecs")
    folder = where / "shapes"
    folder.mkdir()
    for index, image in enumerate(shapes(3, count=20, side=SIDE, seed=1)):
        Image.fromarray(image.transpose(1, 2, 0)).save(folder / f"{index:02d}.png")
    model = where / "rgb.safetensors"
    result = run_cli("train", "--dataset", folder, "--channels", "3", "--image-size", str(SIDE), "--likelihood",
                     "logistic", "--arch", "mlp", "--hidden", "8", "--latent-dim", "2", "--epochs", "1",
                     "--device", "cpu", "-q", "--no-report", "-o", model)
    assert result.exit_code == 0, result.stderr
    return folder, model


def test_eval_codecs_json_on_a_folder(cli, rgb_folder_model, tmp_path):
    folder, model = rgb_folder_model
    result = cli("eval", "-m", model, "--dataset", folder, "-k", "2", "--codecs", "--json", "--device", "cpu")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    test_files = sorted(folder.iterdir())[9::10]  # vae train's rule: every tenth file in name order
    images = np.stack([np.asarray(Image.open(path)).transpose(2, 0, 1) for path in test_files])
    assert report["images"] == 2
    assert report["codecs"] == pytest.approx(file_bits(images, tmp_path / "files"))
    assert list(report["codecs"]) == ["png", "webp", "jpeg2000"]


def test_eval_text_shows_the_codecs_and_json_without_the_flag_has_none(cli, rgb_folder_model, monkeypatch):
    folder, model = rgb_folder_model
    plain = cli("eval", "-m", model, "--dataset", folder, "-k", "2", "--json", "--device", "cpu")
    assert "codecs" not in json.loads(plain.stdout)
    real = features.check
    monkeypatch.setattr(features, "check", lambda name: False if name == "jpg_2000" else real(name))
    text = cli("eval", "-m", model, "--dataset", folder, "-k", "2", "--codecs", "--device", "cpu")
    assert text.exit_code == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[lines.index(next(line for line in lines if line.startswith("bits per dim"))) + 1].startswith("codecs")
    assert any(line.split()[:1] == ["PNG"] and float(line.split()[1]) > 0 for line in lines)
    assert any("JPEG 2000" in line and "not measured" in line and "OpenJPEG" in line for line in lines)
    quiet = cli("eval", "-m", model, "--dataset", folder, "-k", "2", "--codecs", "--json", "--device", "cpu")
    assert json.loads(quiet.stdout)["codecs"]["jpeg2000"] is None and "OpenJPEG" in quiet.stderr


def mnist_test_images(root: Path, count: int) -> np.ndarray:
    """The first test images, read from the IDX file here rather than through vaecli."""
    with gzip.open(root / "MNIST" / "raw" / "t10k-images-idx3-ubyte.gz") as handle:
        data = handle.read(16 + count * 784)
    return np.frombuffer(data, dtype=np.uint8, offset=16).reshape(count, 1, 28, 28)


@pytest.mark.slow
def test_eval_codecs_on_mnist_with_limit(cli, mnist_root, tmp_path):
    model = tmp_path / "grey.safetensors"
    trained = cli("train", "--dataset", "mnist", "--data-root", mnist_root, "--likelihood", "logistic", "--arch",
                  "mlp", "--hidden", "8", "--latent-dim", "2", "--epochs", "1", "--limit", "64", "--device", "cpu",
                  "-q", "--no-report", "-o", model)
    assert trained.exit_code == 0, trained.stderr
    result = cli("eval", "-m", model, "--data-root", mnist_root, "--limit", "12", "-k", "2", "--codecs", "--json",
                 "--device", "cpu")
    assert result.exit_code == 0, result.stderr
    images = mnist_test_images(mnist_root, 12)
    assert json.loads(result.stdout)["codecs"] == pytest.approx(file_bits(images, tmp_path / "files"))


def test_binarized_eval_compares_the_same_black_and_white_images(cli, mnist_root, tmp_path):
    result = cli("eval", "-m", "mnist", "--data-root", mnist_root, "--limit", "6", "-k", "1", "--binarize",
                 "--codecs", "--json", "--device", "cpu")
    assert result.exit_code == 0, result.stderr
    # The fixed binarization of eval (one Bernoulli draw, seed 0), drawn here again from the raw file.
    grey = torch.from_numpy(mnist_test_images(mnist_root, 6).copy()).float() / 255
    binary = torch.bernoulli(grey, generator=torch.Generator().manual_seed(0)).mul(255).byte().numpy()
    assert json.loads(result.stdout)["codecs"] == pytest.approx(file_bits(binary, tmp_path / "files"))


@pytest.mark.parametrize("binarize", [False, True])
def test_bits_that_are_not_a_code_length_are_refused(cli, tiny_model, binarize):
    # tiny_model is Bernoulli: its bits/dim are a code length only of binarized images.
    extra = ["--binarize"] if binarize else []
    result = cli("eval", "-m", tiny_model, "--dataset", "digits", "--limit", "4", "-k", "1", "--codecs", "--json",
                 "--device", "cpu", *extra)
    if binarize:
        assert result.exit_code == 0, result.stderr
        assert set(json.loads(result.stdout)["codecs"]) == {"png", "webp", "jpeg2000"}
    else:
        assert result.exit_code == 2 and result.stdout == ""
        assert len(result.stderr.strip().splitlines()) == 1
        assert "--binarize" in result.stderr and "--likelihood logistic" in result.stderr
        assert "Traceback" not in result.stderr
