"""`rgb_coupling`: one logistic mixture over whole RGB pixels, G's location moving with R and B's with G."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vaecli.config import ModelConfig
from vaecli.model import logistic
from vaecli.model.networks import build_model
from vaecli.model.objective import output_to_image, reconstruction_nll, sample_output

LEVELS = torch.arange(256, dtype=torch.float64) / 255  # every 8-bit level as a pixel in [0, 1]


def coupled_output(logits, raw_a, raw_b, means, scales) -> torch.Tensor:
    """A one-pixel decoder output (1, 9 K, 1, 1) standing for these parameters (means and scales K x 3)."""
    means, scales = torch.tensor(means, dtype=torch.float64), torch.tensor(scales, dtype=torch.float64)
    slots = torch.zeros((3, len(logits), 3), dtype=torch.float64)
    slots[0] = torch.tensor([logits, raw_a, raw_b], dtype=torch.float64).T
    slots[1] = means - logistic.MEAN_OFFSET
    slots[2] = scales.log() - logistic.LOG_SCALE_OFFSET
    return slots.flatten().view(1, -1, 1, 1)


def random_output(mixtures: int, seed: int, side: int = 1) -> torch.Tensor:
    """Random coupled outputs (1, 9 K, side, side): means partly outside [0, 1], scales from tight to wide."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn((1, 9 * mixtures, side, side), generator=generator, dtype=torch.float64) * 2


def brute_force_table(output: torch.Tensor, mixtures: int) -> torch.Tensor:
    """exp of log_prob's pixel sums for all 256^3 level triples of a one-pixel output, (R, G, B) =
    (256, 256, 256): one R level at a time, the 256 x 256 (G, B) pairs laid out as an image."""
    green, blue = torch.meshgrid(LEVELS.float(), LEVELS.float(), indexing="ij")
    rows = output.float().expand(1, output.shape[1], 256, 256)
    table = torch.empty((256, 256, 256), dtype=torch.float64)
    for r in range(256):
        x = torch.stack([torch.full_like(green, r / 255), green, blue]).unsqueeze(0)
        table[r] = logistic.log_prob(x, rows, mixtures, coupled=True).sum(-3)[0].double().exp()
    return table


def level_probabilities(locations: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """P(level) by hand for logistics at these locations (...): (..., 256), the CDF over each level's bin."""
    upper = torch.sigmoid(((LEVELS + 0.5 / 255) - locations.unsqueeze(-1)) / scales.unsqueeze(-1))
    upper[..., -1] = 1.0  # level 255 takes the upper tail, level 0 the lower
    lower = torch.nn.functional.pad(upper[..., :-1], (1, 0))
    return upper - lower


def reference_table(output: torch.Tensor) -> torch.Tensor:
    """The joint P(R, G, B) of a one-pixel output (1, 9 K, 1, 1) by the chain rule, written out: (256,) * 3."""
    slots = output.double().view(3, -1, 3)  # slot, component, channel
    weights, (a, b) = torch.softmax(slots[0, :, 0], 0), torch.tanh(slots[0, :, 1:]).T
    means = slots[1] + logistic.MEAN_OFFSET
    scales = (slots[2] + logistic.LOG_SCALE_OFFSET).clamp(logistic.LOG_SCALE_MIN, logistic.LOG_SCALE_MAX).exp()
    red = level_probabilities(means[:, 0], scales[:, 0])  # (K, r)
    shifted = (means[:, 1:, None] + torch.stack([a, b], 1)[..., None] * LEVELS)  # (K, 2, level before)
    green = level_probabilities(shifted[:, 0], scales[:, 1, None])  # (K, r, g)
    blue = level_probabilities(shifted[:, 1], scales[:, 2, None])  # (K, g, b)
    return torch.einsum("k,kr,krg,kgb->rgb", weights, red, green, blue)


def exact_means(table: torch.Tensor) -> torch.Tensor:
    """Each channel's mean level in [0, 1] under a joint table: (3,)."""
    marginals = [table.sum((1, 2)), table.sum((0, 2)), table.sum((0, 1))]
    return torch.stack([(marginal * LEVELS).sum() for marginal in marginals])


@pytest.mark.parametrize(("mixtures", "seed"), [(1, 0), (2, 1)])
def test_the_joint_sums_to_one_over_all_level_triples(mixtures, seed):
    output = random_output(mixtures, seed)
    table = brute_force_table(output, mixtures)
    assert torch.isfinite(table).all() and (table >= 0).all()
    assert abs(float(table.sum()) - 1) < 1e-4
    # and it is the chain rule's product, triple by triple (float32 log-probabilities: relative 1e-5)
    assert torch.allclose(table, reference_table(output), rtol=1e-4, atol=1e-9)


def test_the_written_out_joint_matches_log_prob_for_three_components():
    output = random_output(3, seed=2)
    triples = torch.randint(0, 256, (3, 5000), generator=torch.Generator().manual_seed(3))
    x = (triples.double() / 255).T.reshape(1, 5000, 3).permute(0, 2, 1).unsqueeze(-1)  # (1, 3, 5000, 1)
    ours = logistic.log_prob(x, output.expand(1, 27, 5000, 1), 3, coupled=True).sum(-3).flatten()
    theirs = reference_table(output)[triples[0], triples[1], triples[2]].log()
    assert torch.allclose(ours, theirs, rtol=1e-9, atol=1e-9)


def test_each_subpixel_carries_a_third_of_its_pixels_joint():
    output = random_output(3, seed=4, side=4)
    x = torch.randint(0, 256, (2, 3, 4, 4), generator=torch.Generator().manual_seed(5)).double() / 255
    values = logistic.log_prob(x, output, 3, coupled=True)
    assert values.shape == (2, 3, 4, 4)
    assert torch.equal(values[:, 0], values[:, 1]) and torch.equal(values[:, 0], values[:, 2])


def test_one_component_without_coefficients_is_the_independent_logistic():
    generator = torch.Generator().manual_seed(6)
    means_scales = torch.randn((1, 6, 4, 4), generator=generator, dtype=torch.float64) * 2  # means, then log-scales
    # Coupled layout (logit, a, b) x (mean) x (log-scale): R's logit is anything, the raw coefficients are 0.
    slots = torch.cat([torch.tensor([1.7, 0.0, 0.0], dtype=torch.float64).view(1, 3, 1, 1).expand(1, 3, 4, 4),
                       means_scales], dim=1)
    x = torch.randint(0, 256, (5, 3, 4, 4), generator=generator).double() / 255
    coupled = logistic.log_prob(x, slots, 1, coupled=True).sum(-3)
    independent = logistic.log_prob(x, means_scales, 1).sum(-3)
    assert torch.allclose(coupled, independent, rtol=1e-12, atol=1e-12)
    assert torch.equal(logistic.mean_image(slots, 3, 1, coupled=True), logistic.mean_image(means_scales, 3, 1))


def test_a_strong_coefficient_correlates_the_draws_with_its_sign():
    for raw_a, green, sign in ((3.0, 0.0, 1), (-3.0, 1.0, -1)):  # G's location a r + mean stays in [0, 1]
        output = coupled_output([0.0], [raw_a], [0.0], [[0.5, green, 0.5]], [[0.15, 0.02, 0.05]])
        draws = logistic.sample_image(output.float().expand(20000, 9, 1, 1), 3, 1,
                                      torch.Generator().manual_seed(7), coupled=True).flatten(1)
        correlation = torch.corrcoef(draws[:, :2].T)[0, 1]
        assert sign * correlation > 0.8


def test_pixel_draws_follow_the_joint_probabilities():
    output = coupled_output([0.3, -0.4], [1.2, -0.8], [-1.0, 0.6],
                            [[0.3, 0.2, 0.6], [0.7, 0.9, 0.1]], [[0.08, 0.05, 0.1], [0.05, 0.1, 0.04]])
    table = reference_table(output)
    count = 20000
    draws = logistic.sample_image(output.float().expand(count, 18, 1, 1), 3, 2,
                                  torch.Generator().manual_seed(8), coupled=True).flatten(1)
    assert torch.equal(draws, (draws * 255).round() / 255)  # on the 8-bit grid
    draws = draws.double()
    # Each channel's mean, within 4 standard errors of the exact one.
    errors = draws.std(0) / math.sqrt(count)
    assert ((draws.mean(0) - exact_means(table)).abs() < 4 * errors).all()
    # The (R, G) pair's frequencies on a 4 x 4 grid of 64-level bins: the dependence, not only the marginals.
    bins = (draws[:, :2] * 255).round().long() // 64
    frequencies = torch.bincount(bins[:, 0] * 4 + bins[:, 1], minlength=16).double() / count
    exact = table.sum(2).view(4, 64, 4, 64).sum((1, 3)).flatten()
    assert (frequencies - exact).abs().max() < 0.012


def test_the_mean_image_is_exact_without_coefficients_and_close_with_them():
    parameters = dict(logits=[0.0], raw_b=[0.0], means=[[0.5, 0.3, 0.7]], scales=[[0.05, 0.03, 0.04]])
    flat = coupled_output(raw_a=[0.0], **parameters)
    exact = exact_means(reference_table(flat))
    shown = logistic.mean_image(flat, 3, 1, coupled=True).flatten()
    assert (shown - exact).abs().max() < 0.5 / 255
    # a = tanh(0.5): G's location moves with R over [0.36, 0.54], where its clipped mean is linear.
    tilted = coupled_output(raw_a=[0.5], **{**parameters, "raw_b": [-0.4]})
    exact = exact_means(reference_table(tilted))
    shown = logistic.mean_image(tilted, 3, 1, coupled=True).flatten()
    assert (shown - exact).abs().max() < 0.1 / 255
    assert shown[1] > logistic.mean_image(flat, 3, 1, coupled=True).flatten()[1] + 0.1  # moved by a E[R]


def test_mean_images_stay_in_range():
    output = random_output(3, seed=9, side=4) * 5
    shown = logistic.mean_image(output, 3, 3, coupled=True)
    assert shown.shape == (1, 3, 4, 4) and (shown >= 0).all() and (shown <= 1).all()


def test_gradients_reach_the_coefficient_slots_and_stay_finite():
    x = torch.randint(0, 256, (4, 3, 3, 3), generator=torch.Generator().manual_seed(11)).double() / 255
    output = (random_output(3, seed=10, side=3) / 2).requires_grad_()
    logistic.log_prob(x, output, 3, coupled=True).sum().backward()
    assert (output.grad.view(3, 3, 3, 3, 3)[0, :, 1:] != 0).all()  # slot, component, channel: a and b
    extreme = random_output(3, seed=10, side=3).float()
    extreme[..., 0, :] = 40.0  # means far out, scales at their bounds, saturated coefficients
    extreme[..., 1, :] = -40.0
    extreme.requires_grad_()
    logistic.log_prob(x.float(), extreme, 3, coupled=True).sum().backward()
    assert torch.isfinite(extreme.grad).all()


def test_a_coupled_model_trains_shows_and_draws_through_the_objective():
    config = ModelConfig(arch="cnn", latent_dim=2, channels=3, height=8, width=8, hidden=4,
                         likelihood="logistic", mixtures=1, rgb_coupling=True)
    torch.manual_seed(12)
    model = build_model(config)
    x = torch.randint(0, 256, (2, 3, 8, 8)).float() / 255
    draw = model(x, generator=torch.Generator().manual_seed(13))
    assert draw.output.shape == (2, 9, 8, 8)
    nll = reconstruction_nll(model, draw.output, x)
    expected = -logistic.log_prob(x, draw.output, 1, coupled=True).sum((1, 2, 3))
    assert nll.shape == (2,) and torch.allclose(nll, expected)
    nll.sum().backward()
    assert output_to_image(model, draw.output).shape == (2, 3, 8, 8)
    drawn = sample_output(model, draw.output.detach(), torch.Generator().manual_seed(14))
    assert drawn.shape == (2, 3, 8, 8) and torch.equal(drawn, (drawn * 255).round() / 255)


# --- coupled=False is unchanged: today's formulas, written out again -------------------------------------------


def reference_split(output, channels, mixtures):
    if mixtures == 1:
        params = output.unflatten(-3, (2, 1, channels))
        logits, means, raw = None, params.select(-5, 0), params.select(-5, 1)
    else:
        params = output.unflatten(-3, (3, mixtures, channels))
        logits, means, raw = params.select(-5, 0), params.select(-5, 1), params.select(-5, 2)
    log_scales = (raw + math.log(0.25)).clamp(-7.0 - math.log(2.0), 7.0)
    return logits, means + 0.5, log_scales


def reference_log_prob(x, output, mixtures):
    logits, means, log_scales = reference_split(output, x.shape[-3], mixtures)
    x = ((x * 255).round() / 255).unsqueeze(-4)
    inv_scale, centred = torch.exp(-log_scales), x - means
    below_upper = F.logsigmoid(inv_scale * (centred + 0.5 / 255))
    above_lower = F.logsigmoid(-(inv_scale * (centred - 0.5 / 255)))
    d = inv_scale * (1 / 255)
    gap = torch.where(d > math.log(2.0), torch.log1p(-torch.exp(-d)), torch.log(-torch.expm1(-d)))
    per = torch.where(x < 0.5 / 255, below_upper, torch.where(x > 1 - 0.5 / 255, above_lower,
                                                                below_upper + above_lower + gap))
    if logits is None:
        return per.squeeze(-4)
    return torch.logsumexp(F.log_softmax(logits, dim=-4) + per, dim=-4)


def reference_mean(output, channels, mixtures):
    logits, means, log_scales = reference_split(output, channels, mixtures)
    scale = torch.exp(log_scales)
    component = (1 - scale * (F.softplus((1 - means) / scale) - F.softplus(-means / scale))).clamp(0.0, 1.0)
    return component.squeeze(-4) if logits is None else (torch.softmax(logits, dim=-4) * component).sum(-4)


def reference_sample(output, channels, mixtures, generator):
    def uniform(like):
        u = torch.rand(like.shape, generator=generator, device=generator.device, dtype=torch.float32)
        return u.clamp(1e-6, 1 - 1e-6).to(like.device, like.dtype)

    logits, means, log_scales = reference_split(output, channels, mixtures)
    if logits is not None:
        pick = (logits - torch.log(-torch.log(uniform(logits)))).argmax(-4, keepdim=True)
        means, log_scales = means.gather(-4, pick), log_scales.gather(-4, pick)
    u = uniform(means)
    y = means + torch.exp(log_scales) * (torch.log(u) - torch.log1p(-u))
    return ((y * 255).round().clamp(0, 255) / 255).squeeze(-4)


@pytest.mark.parametrize(("mixtures", "channels"), [(1, 1), (1, 3), (3, 3)])
def test_uncoupled_likelihood_means_and_draws_are_unchanged(mixtures, channels):
    params = 2 if mixtures == 1 else 3 * mixtures
    generator = torch.Generator().manual_seed(15)
    output = torch.randn((2, params * channels, 5, 5), generator=generator) * 3
    x = torch.randint(0, 256, (2, channels, 5, 5), generator=generator).float() / 255
    assert torch.equal(logistic.log_prob(x, output, mixtures), reference_log_prob(x, output, mixtures))
    assert torch.equal(logistic.log_prob(x, output, mixtures, coupled=False), reference_log_prob(x, output, mixtures))
    assert torch.equal(logistic.mean_image(output, channels, mixtures), reference_mean(output, channels, mixtures))
    ours = logistic.sample_image(output, channels, mixtures, torch.Generator().manual_seed(16))
    theirs = reference_sample(output, channels, mixtures, torch.Generator().manual_seed(16))
    assert torch.equal(ours, theirs)
