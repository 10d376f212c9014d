"""Convolutional decoders double their maps by a resize and a convolution (no checkerboard lattice); checkpoints
written before the setting existed keep their transposed convolutions and load as before."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from vaecli.config import ModelConfig, TrainConfig, train_command_line
from vaecli.model.blocks import upsampler
from vaecli.model.networks import build_model
from vaecli.store.bundled import BUNDLED_MODELS, resolve_model
from vaecli.store.checkpoint import load_checkpoint
from vaecli.store.metadata import model_config_from_dict


def _interior_spread(how: str) -> float:
    """How far three doublings of a constant 8x8 map are from constant, away from the borders' reach."""
    torch.manual_seed(0)
    sizes = [(8, 8), (16, 16), (32, 32), (64, 64)]
    stack = nn.Sequential(*(upsampler(4, 4, a, b, how) for a, b in zip(sizes, sizes[1:], strict=False)))
    with torch.no_grad():
        for p in stack.parameters():  # positive weights, so taps add up and cannot cancel
            p.copy_(p.abs())
        out = stack(torch.ones(1, 4, 8, 8))
    inner = out[..., 16:-16, 16:-16]
    return float((inner - inner.mean(dim=(-2, -1), keepdim=True)).abs().max() / inner.abs().mean())


def test_a_constant_map_doubles_to_a_constant_picture_with_resize_not_with_transpose():
    # The lattice of the transposed convolution is built in: a 3x3 stride-2 kernel gives even and odd output
    # pixels different numbers of taps, so even a flat input comes out striped. A resize and a convolution do not.
    assert _interior_spread("resize") < 1e-5
    assert _interior_spread("transpose") > 0.1


@pytest.mark.parametrize("arch", ["cnn", "resnet", "hvae"])
def test_colour_models_resize_grey_ones_transpose_and_older_files_keep_the_transpose(arch):
    def has_transpose(config: ModelConfig) -> bool:
        return any(isinstance(m, nn.ConvTranspose2d) for m in build_model(config).modules())

    # Measured: the lattice shows on photographs; on grey digits the transpose trains faster and better.
    assert not has_transpose(ModelConfig(arch=arch, channels=3, height=32, width=32, latent_dim=4, hidden=8))
    assert has_transpose(ModelConfig(arch=arch, latent_dim=4, hidden=8))
    assert not has_transpose(ModelConfig(arch=arch, latent_dim=4, hidden=8, upsampling="resize"))
    stored = {"arch": arch, "latent_dim": 4, "hidden": 8, "channels": 3}  # written before `upsampling` existed
    older = model_config_from_dict(stored)
    assert older.upsampling == "transpose" and has_transpose(older)
    assert model_config_from_dict({**stored, "upsampling": "resize"}).upsampling == "resize"


def test_the_recorded_command_names_the_upsampling_it_used():
    assert "--upsampling transpose" in train_command_line(TrainConfig())
    colour = TrainConfig(model=ModelConfig(channels=3))
    assert "--upsampling resize" in train_command_line(colour)


@pytest.mark.parametrize("name", BUNDLED_MODELS)
def test_bundled_models_load_with_the_decoders_they_were_trained_with(name):
    """The grey ones predate the option (transposed convolutions); the colour one resizes, as RGB defaults to."""
    model = load_checkpoint(resolve_model(name)[0]).model
    expected = {1: "transpose", 3: "resize"}[model.config.channels]
    assert model.config.upsampling == expected
    transposed = any(isinstance(m, nn.ConvTranspose2d) for m in model.modules())
    assert model.config.arch == "mlp" or transposed == (expected == "transpose")


def test_train_takes_upsampling_and_refuses_an_unknown_one(cli, tmp_path, mnist_root):
    out = tmp_path / "t.safetensors"
    result = cli("train", "--data-root", str(mnist_root), "--limit", "64", "--epochs", "1", "--hidden", "4",
                 "--latent-dim", "2", "--upsampling", "resize", "--no-report", "-q", "-o", str(out))
    assert result.exit_code == 0, result.output
    info = json.loads(cli("info", str(out), "--json").stdout)
    assert info["config"]["model"]["upsampling"] == "resize"
    assert "--upsampling resize" in info["command"]
    bad = cli("train", "--upsampling", "bilinear", "-o", str(tmp_path / "u.safetensors"))
    assert bad.exit_code == 2
    assert not (tmp_path / "u.safetensors").exists()
