"""What the README's example recipes rest on: the photo crops script, and a Gaussian decoder that starts where
encoding pays (from a variance of 1 the colour photos' model stopped encoding, its KL at about 7 nats)."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from vaecli.config import ModelConfig
from vaecli.model.networks import build_model

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("arch", ["mlp", "cnn", "hvae"])
def test_a_gaussian_decoder_starts_at_a_tenth_of_the_pixel_range(arch):
    model = build_model(ModelConfig(arch=arch, channels=3, height=32, width=32, hidden=8, likelihood="gaussian"))
    torch.testing.assert_close(model.decoder_logvar.detach(), torch.full((3,), 2 * math.log(0.1)))


def test_a_stored_gaussian_variance_is_kept(cli, tmp_path, mnist_root):
    out = tmp_path / "g.safetensors"
    result = cli("train", "--data-root", str(mnist_root), "--likelihood", "gaussian", "--limit", "64", "--epochs", "1",
                 "--hidden", "4", "--latent-dim", "2", "--no-report", "-q", "-o", str(out))
    assert result.exit_code == 0, result.output
    from vaecli.store.checkpoint import load_checkpoint

    learned = load_checkpoint(out).model.decoder_logvar.detach()
    assert not torch.allclose(learned, torch.full_like(learned, 2 * math.log(0.1)))  # trained, then read back


def test_photo_crops_writes_a_folder_vae_train_reads(tmp_path):
    pytest.importorskip("skimage")
    folder = tmp_path / "photos"
    run = subprocess.run([sys.executable, str(REPO / "scripts" / "photo_crops.py"), str(folder), "--per-photo", "3"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    files = sorted(folder.rglob("*.png"))
    assert len(files) == 24 and "24 crops" in run.stderr
    assert {f.parent.name for f in files} == {"astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field",
                                              "immunohistochemistry", "retina", "stereo_motorcycle"}
    for file in files[:5]:
        with Image.open(file) as image:
            assert image.size == (32, 32) and image.mode == "RGB"
    # The same seed gives the same crops: the recipe is repeatable.
    again = tmp_path / "again"
    subprocess.run([sys.executable, str(REPO / "scripts" / "photo_crops.py"), str(again), "--per-photo", "3"],
                   check=True, capture_output=True, timeout=120)
    assert all(f.read_bytes() == (again / f.relative_to(folder)).read_bytes() for f in files)
