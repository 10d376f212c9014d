"""The hvae with latent maps at several scales (map_scales), and the defaults a colour run gets."""

from __future__ import annotations

import json
import shlex

import pytest
import torch

from vaecli.config import ModelConfig, colour_map_scales, run_defaults
from vaecli.errors import SettingError
from vaecli.model.hierarchical import HVAE, MultiScaleHVAE
from vaecli.model.networks import build_model
from vaecli.store.summary import _layers_line
from vaecli.training.settings import train_config

from tests.helpers.cli_checks import one_error_line
from tests.helpers.runner import run_cli
from tests.test_colour import write_rgb_folder


def colour_config(**changes) -> ModelConfig:
    settings = dict(arch="hvae", channels=3, height=32, width=32, likelihood="logistic", hidden=16,
                    map_scales="8,4,2,1", group_channels=2, mixtures=2)
    return ModelConfig(**{**settings, **changes})


@pytest.mark.parametrize(("scales", "side", "sides"), [
    ("8,4,2,1", 32, [4, 8, 16, 32]), ("4,2", 32, [8, 16]), ("4,4,1", 32, [8, 8, 32]),
    ("4,2,1", 28, [7, 14, 28]), ("8,2", 30, [4, 15]), ("8,4,2,1", 64, [8, 16, 32, 64]),
])
def test_each_map_lives_at_its_scale_and_the_noise_covers_them(scales, side, sides):
    config = colour_config(map_scales=scales, height=side, width=side)
    model = build_model(config).eval()
    assert isinstance(model, MultiScaleHVAE) and config.groups == scales.count(",") + 2
    assert [shape[1:] for shape in config.map_shapes] == [(s, s) for s in sides]
    assert model.lower_dims == sum(2 * s * s for s in sides)
    x = torch.rand(3, 3, side, side)
    draw = model(x, generator=torch.Generator().manual_seed(0))
    assert draw.output.shape == (3, 3 * config.output_params, side, side)
    assert draw.kl.shape == (3, config.groups) and torch.isfinite(draw.log_ratio).all()
    layers = model.posterior_mean_layers(x)
    assert [tuple(layer.shape[1:]) for layer in layers[1:]] == config.map_shapes
    # q at its means everywhere is the reconstruction the deterministic path decodes.
    means = model(x, noise=torch.zeros(3, model.noise_dims)).output
    torch.testing.assert_close(means, model.decode_layers(layers))
    # Zero noise from each prior is the prior-mean decode.
    z = torch.randn(2, config.latent_dim)
    torch.testing.assert_close(model.decode(z), model.decode(z, lower_noise=torch.zeros(2, model.lower_dims)))


def test_the_noise_reaches_each_layer_in_order():
    """A change to the 16x16 map's noise moves the 32x32 layer's KL (its prior and posterior read that draw) and
    leaves the KL of every layer above alone."""
    torch.manual_seed(0)
    model = build_model(colour_config()).eval()
    for cell in model.top_down:  # a trained posterior differs from the prior; a fresh one starts equal to it
        torch.nn.init.normal_(cell.posterior[1].weight, std=0.1)
    x = torch.rand(1, 3, 32, 32)
    noise = torch.randn(1, model.noise_dims, generator=torch.Generator().manual_seed(1))
    start = model.config.latent_dim + 2 * 4 * 4 + 2 * 8 * 8  # the 16x16 map's noise
    moved = noise.clone()
    moved[:, start:start + 2 * 16 * 16] += 1.0
    a, b = model(x, noise=noise), model(x, noise=moved)
    assert torch.equal(a.kl[:, :4], b.kl[:, :4]) and not torch.allclose(a.kl[:, 4], b.kl[:, 4])


def test_the_empty_layout_is_todays_hvae_with_its_weights_names():
    config = ModelConfig(arch="hvae", hidden=8)
    model = build_model(config)
    assert type(model) is HVAE and config.map_divisors == [4, 4]
    assert {name.split(".")[0] for name in model.state_dict()} == {"stem", "bottom_up", "top_encoder",
                                                                  "top_decoder", "cells", "head"}
    assert _layers_line(config) == "3 stochastic: the top a 10-d vector, then 2 maps of 8 x 7 x 7"
    assert _layers_line(colour_config(map_scales="4,2")) == (
        "3 stochastic: the top a 10-d vector, then maps of 2 x 8 x 8, 2 x 16 x 16")


def test_training_steps_lower_the_loss():
    from vaecli.model.objective import loss_terms

    torch.manual_seed(0)
    model = build_model(colour_config(rgb_coupling=True))
    ramp = torch.linspace(0, 1, 32)
    x = torch.stack([ramp.expand(32, 32), ramp.expand(32, 32).T, torch.full((32, 32), 0.5)]).expand(8, -1, -1, -1)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        recon, kls = loss_terms(model, model(x), x)
        loss = (recon + kls.sum(1)).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]


@pytest.mark.parametrize(("scales", "groups", "words"), [
    ("8,4,x", 0, "a list of divisors"), ("3,1", 0, "power of two"), ("128", 0, "power of two"),
    ("1,2", 0, "coarse to fine"), ("8,4", 4, "give 3 groups"), ("64,1", 0, "leaves no pixel"),
    ("", 0, None),
])
def test_a_bad_layout_is_refused_by_name(scales, groups, words):
    config = colour_config(map_scales=scales, groups=groups)
    if words is None:
        config.validate()
        return
    with pytest.raises(SettingError, match=words):
        config.validate()


def test_map_scales_and_coupling_belong_to_their_settings():
    with pytest.raises(SettingError, match="applies only to `arch=hvae`"):
        ModelConfig(arch="cnn", map_scales="4,2").validate()
    with pytest.raises(SettingError, match="`rgb_coupling` applies only"):
        ModelConfig(channels=1, likelihood="logistic", rgb_coupling=True).validate()
    with pytest.raises(SettingError, match="`rgb_coupling` applies only"):
        ModelConfig(channels=3, likelihood="bernoulli", rgb_coupling=True).validate()


def test_a_colour_run_without_model_settings_gets_the_colour_hvae(tmp_path):
    folder = write_rgb_folder(tmp_path / "shapes", 20)
    config = train_config(str(folder), image_size=32).model
    assert (config.arch, config.likelihood, config.map_scales, config.groups, config.group_channels,
            config.mixtures, config.rgb_coupling, config.hidden) == ("hvae", "logistic", "8,4,2,1", 5, 4, 5, True, 64)
    grey = train_config("mnist").model
    assert (grey.arch, grey.likelihood, grey.mixtures, grey.map_scales, grey.rgb_coupling) == (
        "cnn", "bernoulli", 1, "", False)
    assert train_config("mnist", arch="hvae").model.map_scales == ""  # the bundled grey recipes' layout
    assert train_config(str(folder), conditional=True).model.arch == "cnn"
    cnn = train_config(str(folder), arch="cnn").model
    assert (cnn.map_scales, cnn.mixtures, cnn.rgb_coupling) == ("", 5, True)
    bernoulli = train_config(str(folder), likelihood="bernoulli").model
    assert (bernoulli.mixtures, bernoulli.rgb_coupling) == (1, False)
    assert train_config(str(folder), groups=3).model.map_scales == "4,2"
    assert train_config(str(folder), map_scales="4,2").model.groups == 3


def test_colour_map_scales_for_any_number_of_maps():
    assert [colour_map_scales(n) for n in range(1, 7)] == ["4", "4,2", "4,2,1", "8,4,2,1", "8,4,2,2,1",
                                                           "8,4,2,2,2,1"]
    assert run_defaults(3, {"arch": "mlp"})["map_scales"] == ""


@pytest.mark.parametrize("flags", [
    [], ["--mixtures", "1"], ["--no-rgb-coupling"], ["--arch", "cnn"], ["--groups", "3"],
    ["--map-scales", "4,4"], ["--likelihood", "gaussian"], ["--arch", "hvae", "--map-scales", "4,2,1"],
])
def test_the_recorded_command_gives_back_the_colour_run(tmp_path, flags):
    folder = write_rgb_folder(tmp_path / "shapes", 20)
    first = tmp_path / "first.safetensors"
    common = ["--dataset", str(folder), "--image-size", "16", "--hidden", "8", "--epochs", "1", "--limit", "4",
              "--batch-size", "4", "--device", "cpu", "--no-report"]
    result = run_cli("train", *common, *flags, "-o", str(first))
    assert result.exit_code == 0, result.stderr
    info = json.loads(run_cli("info", str(first), "--json").stdout)
    command = shlex.split(info["command"])[2:]
    again = tmp_path / "again.safetensors"
    result = run_cli("train", *command, "--device", "cpu", "--no-report", "-o", str(again))
    assert result.exit_code == 0, result.stderr
    assert json.loads(run_cli("info", str(again), "--json").stdout)["config"] == info["config"]


def test_a_bad_layout_on_the_command_line_is_one_line_and_nothing_is_written(tmp_path):
    folder = write_rgb_folder(tmp_path / "shapes", 20)
    result = run_cli("train", "--dataset", str(folder), "--map-scales", "4,3", "-o", str(tmp_path / "m" / "x.st"))
    assert result.exit_code == 2
    assert "--map-scales" in one_error_line(result) and "power of two" in one_error_line(result)
    assert not (tmp_path / "m").exists()


def test_the_layout_round_trips_through_the_checkpoint(tmp_path):
    import vaecli

    folder = write_rgb_folder(tmp_path / "shapes", 20)
    model = vaecli.train(tmp_path / "m.safetensors", dataset=str(folder), image_size=16, hidden=8, epochs=1,
                         limit=8, batch_size=8, device="cpu", map_scales="4,2,1")
    again = vaecli.load(tmp_path / "m.safetensors", device="cpu")
    assert again.config.map_scales == "4,2,1" and again.config.rgb_coupling
    codes = torch.randn(2, again.config.latent_dim, generator=torch.Generator().manual_seed(0))
    assert torch.equal(torch.as_tensor(model.decode(codes)), torch.as_tensor(again.decode(codes)))


def test_a_folder_trains_in_the_colour_and_size_its_images_are_stored_in(tmp_path):
    from PIL import Image

    from vaecli.data.datasets import folder_shape

    for mode, size, expected in [("RGB", 32, (3, 32, 32)), ("L", 28, (1, 28, 28)), ("P", 64, (3, 64, 64)),
                                 ("LA", 16, (1, 16, 16)), ("RGB", 96, (3, 28, 28)), ("L", (40, 30), (1, 28, 28))]:
        folder = tmp_path / f"{mode}-{size}"
        (folder / "a").mkdir(parents=True)
        Image.new(mode, size if isinstance(size, tuple) else (size, size)).save(folder / "a" / "0.png")
        assert folder_shape(folder) == expected
        config = train_config(str(folder)).model
        assert (config.channels, config.height, config.width) == expected
    assert train_config(str(tmp_path / "RGB-32"), channels=1, image_size=20).model.image_shape == (1, 20, 20)
