"""Reconstructions use the posterior of every layer: an hvae's lower layers are not left at their prior means."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vaecli.store.checkpoint import load_checkpoint

IMAGES = 8
# Lower layers that carry a few nats after two short epochs: a 2-d top code, and free bits that pay them to.
TRAIN = ["train", "--arch", "hvae", "--dataset", "digits", "--limit", "256", "--epochs", "2", "--hidden", "8",
         "--latent-dim", "2", "--groups", "2", "--group-channels", "4", "--batch-size", "16", "--lr", "0.01",
         "--lr-schedule", "constant", "--free-bits", "2", "--device", "cpu", "--seed", "0", "-q", "--no-report"]


@pytest.fixture(scope="module")
def hvae(tmp_path_factory) -> Path:
    from tests.helpers.runner import run_cli

    path = tmp_path_factory.mktemp("hvae") / "h.safetensors"
    result = run_cli(*TRAIN, "-o", path)
    assert result.exit_code == 0, result.stderr
    return path


@pytest.fixture(scope="module")
def digit_files(tmp_path_factory) -> list[Path]:
    """The first test images of the offline digits set, as PNG files."""
    from vaecli.data.datasets import load_dataset

    folder = tmp_path_factory.mktemp("digits")
    paths = []
    for i, pixels in enumerate(load_dataset("digits", "test", limit=IMAGES).images):
        paths.append(folder / f"d{i}.png")
        Image.fromarray(pixels[0].numpy()).save(paths[-1])
    return paths


def _pixels(paths: list[Path]) -> np.ndarray:
    return np.stack([np.asarray(Image.open(p), dtype=np.float64) / 255 for p in paths])


def _reconstruct(cli, model: Path, files: list[Path], folder: Path, *flags: str) -> np.ndarray:
    result = cli("reconstruct", *files, "-m", model, "-o", folder, *flags)
    assert result.exit_code == 0, result.stderr
    return _pixels([folder / f"recon-{f.stem}.png" for f in files])


def _encode_then_decode(cli, model: Path, files: list[Path], folder: Path, *flags: str) -> np.ndarray:
    """The top code's posterior mean decoded alone: `vae decode` sets the lower layers to their prior means."""
    assert cli("encode", *files, "-m", model, "-o", folder / "z.npy").exit_code == 0
    result = cli("decode", folder / "z.npy", "-m", model, "-o", folder / "decoded", *flags)
    assert result.exit_code == 0, result.stderr
    return _pixels([folder / "decoded" / f"decoded-{i:04d}.png" for i in range(1, len(files) + 1)])


@pytest.mark.slow
def test_hierarchical_reconstruction_is_closer_than_the_top_code_alone(cli, hvae, digit_files, tmp_path):
    inputs = _pixels(digit_files)
    recon = _reconstruct(cli, hvae, digit_files, tmp_path / "recon")
    top_only = _encode_then_decode(cli, hvae, digit_files, tmp_path)
    recon_error = ((recon - inputs) ** 2).mean()
    top_error = ((top_only - inputs) ** 2).mean()
    assert recon_error < top_error - 1e-3, (recon_error, top_error)


@pytest.mark.slow
def test_interpolation_ends_are_the_reconstructions_and_it_says_what_moves(cli, hvae, digit_files, tmp_path):
    a, b = digit_files[:2]
    recon = _reconstruct(cli, hvae, [a, b], tmp_path / "recon")
    result = cli("interpolate", a, b, "-m", hvae, "--steps", "3", "--frames", tmp_path / "frames")
    assert result.exit_code == 0, result.stderr
    assert "top code (lerp) and each of the 1 lower layers' posterior-mean maps" in result.stderr
    frames = _pixels([tmp_path / "frames" / f"frame-{i:04d}.png" for i in range(1, 8)])  # A, recon A, 3, recon B, B
    np.testing.assert_array_equal(frames[1], recon[0])
    np.testing.assert_array_equal(frames[5], recon[1])
    # The points between move too: the middle one is neither end.
    assert np.abs(frames[3] - frames[1]).max() > 0 and np.abs(frames[3] - frames[5]).max() > 0


@pytest.mark.slow
def test_training_snapshots_reconstruct_with_every_layer(cli, hvae, digit_files, tmp_path):
    from vaecli.analysis.latent import decode_to_pixels
    from vaecli.figures.snapshots import RECONSTRUCTIONS, Evolution, _captioned

    model = load_checkpoint(hvae).model.eval()
    originals = torch.from_numpy((_pixels(digit_files) * 255).round().astype(np.uint8))[:, None]
    evolution = Evolution.start(model.config.latent_dim, originals, seed=0)
    evolution.take(model, 1.0)
    recon = torch.from_numpy((_reconstruct(cli, hvae, digit_files, tmp_path) * 255).round().astype(np.uint8))
    samples = decode_to_pixels(model, evolution.codes)
    expected = _captioned(torch.cat([samples, originals, recon[:RECONSTRUCTIONS, None]]), "epoch 1")
    np.testing.assert_array_equal(evolution.frames[0], expected)


def test_one_layer_reconstruction_is_the_decoded_posterior_mean_bit_for_bit(cli, tiny_model, digit_files, tmp_path):
    for run, flags in enumerate(((), ("--sample-pixels", "--seed", "3"))):
        (tmp_path / str(run)).mkdir()
        recon = _reconstruct(cli, tiny_model, digit_files, tmp_path / str(run) / "recon", *flags)
        decoded = _encode_then_decode(cli, tiny_model, digit_files, tmp_path / str(run), *flags)
        np.testing.assert_array_equal(recon, decoded)


def test_one_layer_interpolation_has_no_note_on_layers(cli, tiny_model, digit_files, tmp_path):
    result = cli("interpolate", *digit_files[:2], "-m", tiny_model, "-o", tmp_path / "strip.png")
    assert result.exit_code == 0, result.stderr
    assert "lower layers" not in result.stderr
