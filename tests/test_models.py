"""Model rewrites that must compute exactly what the trained model computes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vaecli.config import ARCHITECTURES, DEFAULT_HIDDEN, HIERARCHICAL, ModelConfig
from vaecli.model.networks import BUILDERS, MODELS, SubPixelConvTranspose, build_model, inference_decoder


def test_the_registry_builds_every_architecture_the_config_names():
    """config.ARCHITECTURES (read without torch) and the builders in models.py name the same ones."""
    assert tuple(MODELS) == ARCHITECTURES == tuple(DEFAULT_HIDDEN)
    assert set(BUILDERS) | set(HIERARCHICAL) == set(ARCHITECTURES)
    for name, builder in BUILDERS.items():
        assert callable(builder), name


@pytest.mark.parametrize("output_padding", [(0, 0), (1, 1), (0, 1)])
@pytest.mark.parametrize("bias", [True, False])
def test_subpixel_rewrite_matches_the_transposed_convolution(output_padding, bias):
    torch.manual_seed(0)
    layer = nn.ConvTranspose2d(5, 3, 3, stride=2, padding=1, output_padding=output_padding, bias=bias)
    x = torch.randn(4, 5, 6, 7)
    expected = layer(x)
    got = SubPixelConvTranspose(layer)(x)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch", ["cnn", "resnet", "mlp"])
def test_inference_decoder_decodes_like_the_model(arch):
    # Older checkpoints' transposed convolutions are the ones inference_decoder rewrites.
    torch.manual_seed(1)
    config = ModelConfig(arch=arch, latent_dim=4, hidden=8, height=28, width=28, upsampling="transpose")
    model = build_model(config).eval()
    fast = inference_decoder(model)
    rewritten = [m for m in fast.modules() if isinstance(m, SubPixelConvTranspose)]
    assert (len(rewritten) > 0) == (arch != "mlp")
    assert not any(isinstance(m, nn.ConvTranspose2d) for m in fast.modules())
    assert any(isinstance(m, nn.ConvTranspose2d) for m in model.decoder.modules()) == (arch != "mlp")
    z = torch.randn(16, 4)
    with torch.inference_mode():
        torch.testing.assert_close(fast(z), model.decode(z), rtol=1e-4, atol=1e-4)
