"""What the README's example recipes rest on: the photo crops script, and a Gaussian decoder that starts where
encoding pays (from a variance of 1 the colour photos' model stopped encoding, its KL at about 7 nats)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

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


