"""The discretized logistic likelihood: a distribution over 256 levels, bits/dim by hand, old configs."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from vaecli.config import ModelConfig
from vaecli.errors import CheckpointError, SettingError
from vaecli.model import logistic
from vaecli.model.objective import reconstruction_nll
from vaecli.store.metadata import model_config_from_dict

LEVELS = torch.arange(256, dtype=torch.float32) / 255  # every 8-bit level as a pixel in [0, 1]


def random_output(mixtures: int, channels: int = 3, side: int = 4, seed: int = 0) -> torch.Tensor:
    """Decoder outputs (1, P * C, side, side) with ordinary and extreme means and scales."""
    params = 2 if mixtures == 1 else 3 * mixtures
    generator = torch.Generator().manual_seed(seed)
    output = torch.randn((1, params * channels, side, side), generator=generator) * 3
    output[..., 0, :] = 40.0  # means far above 1, scales at the upper bound, one dominant component
    output[..., 1, :] = -40.0  # means far below 0, scales at the lower bound
    output[..., 2, :] = 0.0
    return output


def level_probabilities(output: torch.Tensor, mixtures: int) -> torch.Tensor:
    """P(level k) for every k and subpixel: (256, 1, C, H, W)."""
    channels = output.shape[1] // (2 if mixtures == 1 else 3 * mixtures)
    x = LEVELS.view(256, 1, 1, 1, 1).expand(256, 1, channels, *output.shape[-2:])
    return logistic.log_prob(x, output.expand(256, *output.shape[1:]).unsqueeze(1), mixtures).exp()


@pytest.mark.parametrize("mixtures", [1, 2, 5])
def test_the_256_probabilities_sum_to_one_for_every_subpixel(mixtures):
    for seed in range(3):
        probabilities = level_probabilities(random_output(mixtures, seed=seed), mixtures)
        assert torch.isfinite(probabilities).all()
        assert (probabilities >= 0).all()
        assert (probabilities.sum(0) - 1).abs().max() < 1e-5


def sigmoid(t: float) -> float:
    """The standard logistic CDF, written out."""
    return 1 / (1 + math.exp(-t))


def level_probability(level: int, mean: float, scale: float) -> float:
    """P(level) by hand: the CDF difference over the bin [k - 1/2, k + 1/2] / 255, tails at the edges."""
    upper = 1.0 if level == 255 else sigmoid(((level + 0.5) / 255 - mean) / scale)
    lower = 0.0 if level == 0 else sigmoid(((level - 0.5) / 255 - mean) / scale)
    return upper - lower


def raw_params(mean: float, scale: float) -> tuple[float, float]:
    """The decoder outputs that stand for this mean and scale (logistic.py offsets them)."""
    return mean - logistic.MEAN_OFFSET, math.log(scale) - logistic.LOG_SCALE_OFFSET


def test_bits_per_dim_match_a_hand_computed_image():
    levels = [0, 128, 255, 37]  # one grey 2x2 image, both edge levels included
    mean, scale = 0.4, 0.1
    by_hand = -sum(math.log(level_probability(k, mean, scale)) for k in levels) / (4 * math.log(2))
    raw_mean, raw_log_scale = raw_params(mean, scale)
    output = torch.tensor([raw_mean, raw_log_scale], dtype=torch.float64).view(1, 2, 1, 1).expand(1, 2, 2, 2)
    x = torch.tensor(levels, dtype=torch.float64).view(1, 1, 2, 2) / 255
    model = SimpleNamespace(config=ModelConfig(likelihood="logistic", channels=1, height=2, width=2))
    nats = float(reconstruction_nll(model, output, x)[0])
    assert nats / (4 * math.log(2)) == pytest.approx(by_hand, rel=1e-9)


def test_a_mixture_by_hand():
    level, weights, components = 200, (0.25, 0.75), ((0.3, 0.05), (0.8, 0.2))
    by_hand = -math.log(sum(w * level_probability(level, m, s) for w, (m, s) in zip(weights, components, strict=True)))
    logits = [math.log(w) for w in weights]
    raws = [raw_params(m, s) for m, s in components]
    output = torch.tensor([*logits, raws[0][0], raws[1][0], raws[0][1], raws[1][1]], dtype=torch.float64)
    x = torch.full((1, 1, 1, 1), level / 255, dtype=torch.float64)
    model = SimpleNamespace(config=ModelConfig(likelihood="logistic", channels=1, height=1, width=1, mixtures=2))
    assert float(reconstruction_nll(model, output.view(1, 6, 1, 1), x)[0]) == pytest.approx(by_hand, rel=1e-9)


def test_the_shown_mean_is_within_half_a_level_of_the_distributions_mean():
    for mixtures in (1, 3):
        output = random_output(mixtures, channels=1)
        exact = (level_probabilities(output, mixtures) * LEVELS.view(256, 1, 1, 1, 1)).sum(0)[0]
        shown = logistic.mean_image(output, 1, mixtures)[0]
        assert (shown - exact).abs().max() <= 0.5 / 255 + 1e-5


def test_pixel_draws_follow_the_level_probabilities():
    output = torch.tensor([0.1, -1.5, 1.0, -0.3, -0.2, 0.3]).view(1, 6, 1, 1)  # K = 2: logits, means, scales
    draws = logistic.sample_image(output.expand(20000, 6, 1, 1), 1, 2, torch.Generator().manual_seed(3))
    assert torch.equal(draws, (draws * 255).round() / 255)  # on the 8-bit grid
    frequencies = torch.bincount((draws * 255).round().long().flatten(), minlength=256).double() / 20000
    assert (frequencies - level_probabilities(output, 2).flatten().double()).abs().max() < 0.01


def test_gradients_stay_finite_at_the_extremes():
    output = random_output(3).requires_grad_()
    x = torch.randint(0, 256, (1, 3, 4, 4)).float() / 255
    logistic.log_prob(x, output, 3).sum().backward()
    assert torch.isfinite(output.grad).all()


def test_configs_without_mixtures_load_with_one():
    stored = {"arch": "cnn", "latent_dim": 10, "channels": 1, "height": 28, "width": 28, "hidden": 16,
              "likelihood": "bernoulli", "prior_components": 0}
    assert model_config_from_dict(stored).mixtures == 1
    assert model_config_from_dict(stored).output_params == 1


def test_mixtures_are_checked():
    with pytest.raises(SettingError, match="`mixtures` applies only to `likelihood=logistic`"):
        ModelConfig(likelihood="bernoulli", mixtures=2).validate()
    with pytest.raises(SettingError, match="`mixtures`"):
        ModelConfig(likelihood="logistic", mixtures=0).validate()
    with pytest.raises(CheckpointError):
        model_config_from_dict({"likelihood": "logistic", "mixtures": 10**6})
    assert ModelConfig(likelihood="logistic", mixtures=4).output_params == 12
