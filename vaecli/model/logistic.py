"""The discretized logistic (mixture) on the 256 levels of 8-bit subpixels. Imports torch only.

Kingma et al. 2016 (IAF), section 5.1 and Salimans et al. 2017 (PixelCNN++), section 2.1: level k of 255
has the logistic's mass on the bin [k - 1/2, k + 1/2] / 255 of pixel values in [0, 1], and the edge levels
0 and 255 take the tails below and above. By default each subpixel has its own mixture given z, the
channels uncoupled.

With `rgb_coupling` (PixelCNN++'s channel dependence) the mixture is over whole RGB pixels: component k draws
R ~ L(mu_R), then G ~ L(mu_G + a r), then B ~ L(mu_B + b g), r and g the pixel's levels in [0, 1] and
a = tanh, b = tanh of raw coefficients, so each is bounded in (-1, 1). The decoder's layout is the mixture's
(logits, means, log-scales) x K x (R, G, B): R's logit slot holds the component's logit, G's and B's hold the
raw a and b. PixelCNN++ also lets B move with R; only the chain R -> G -> B fits the three slots, so it is left out.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

LEVELS = 255  # the highest 8-bit level; pixel x in [0, 1] is level round(255 x)
HALF_BIN = 0.5 / LEVELS  # half a bin's width in [0, 1] pixel units
# log-scale bounds in [0, 1] units: the lower is PixelCNN++'s -7 in [-1, 1] units (a scale of half a level
# at most puts 0.99 of a bin's mass on one level); the upper is a scale far wider than [0, 1].
LOG_SCALE_MIN = -7.0 - math.log(2.0)
LOG_SCALE_MAX = 7.0
# A decoder output of 0 stands for mid grey with a scale of a quarter of the range: an untrained model
# then costs about 8 bits per subpixel, not the 10 of a scale as wide as the range.
MEAN_OFFSET = 0.5
LOG_SCALE_OFFSET = math.log(0.25)


def split_params(
    output: torch.Tensor, channels: int, mixtures: int
) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """Decoder output (..., P * C, H, W) as (logits or None, means, log-scales), each (..., K, C, H, W)."""
    if mixtures == 1:
        params = output.unflatten(-3, (2, 1, channels))  # mean, log-scale
        return None, params.select(-5, 0) + MEAN_OFFSET, _log_scales(params.select(-5, 1))
    params = output.unflatten(-3, (3, mixtures, channels))  # logits, means, log-scales
    return params.select(-5, 0), params.select(-5, 1) + MEAN_OFFSET, _log_scales(params.select(-5, 2))


def _log_scales(raw: torch.Tensor) -> torch.Tensor:
    return (raw + LOG_SCALE_OFFSET).clamp(LOG_SCALE_MIN, LOG_SCALE_MAX)


def log_one_minus_exp(d: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(-d)) for d > 0, accurate for small and large d (Maechler 2012)."""
    return torch.where(d > math.log(2.0), torch.log1p(-torch.exp(-d)), torch.log(-torch.expm1(-d)))


def component_log_probs(x: torch.Tensor, means: torch.Tensor, log_scales: torch.Tensor) -> torch.Tensor:
    """log P(level of x) under each logistic: x (..., 1, C, H, W) in [0, 1], parameters (..., K, C, H, W).

    sigmoid(a) - sigmoid(b) = sigmoid(a) sigmoid(-b) (1 - exp(b - a)) keeps the bin's mass in log space:
    nothing underflows, so PixelCNN++'s mid-bin density fallback is not needed."""
    inv_scale = torch.exp(-log_scales)
    centred = x - means
    upper = inv_scale * (centred + HALF_BIN)  # the bin's edges in standard-logistic units
    lower = inv_scale * (centred - HALF_BIN)
    below_upper = F.logsigmoid(upper)  # log P(Y < upper edge): level 0 takes this whole tail
    above_lower = F.logsigmoid(-lower)  # log P(Y > lower edge): level 255 takes this whole tail
    inside = below_upper + above_lower + log_one_minus_exp(inv_scale * (2 * HALF_BIN))
    return torch.where(x < HALF_BIN, below_upper, torch.where(x > 1 - HALF_BIN, above_lower, inside))


def log_prob(x: torch.Tensor, output: torch.Tensor, mixtures: int, coupled: bool = False) -> torch.Tensor:
    """log p(x|z) per subpixel for pixels x (..., C, H, W) on the 8-bit grid: (..., C, H, W).

    Coupled, a subpixel's value is a third of its pixel's joint log-probability: only sums over a pixel's
    three subpixels are log-probabilities."""
    if coupled:
        return _coupled_log_prob(x, output, mixtures)
    logits, means, log_scales = split_params(output, x.shape[-3], mixtures)
    x = (x * LEVELS).round() / LEVELS  # the level each pixel holds, exactly on the grid
    per_component = component_log_probs(x.unsqueeze(-4), means, log_scales)
    if logits is None:
        return per_component.squeeze(-4)
    return torch.logsumexp(F.log_softmax(logits, dim=-4) + per_component, dim=-4)


def clipped_mean(means: torch.Tensor, log_scales: torch.Tensor) -> torch.Tensor:
    """E[clip(Y, 0, 1)] for Y ~ Logistic(mean, scale): the discretized mean to within half a level."""
    scale = torch.exp(log_scales)
    # The integral of P(Y > t) over t in [0, 1].
    mean = 1 - scale * (F.softplus((1 - means) / scale) - F.softplus(-means / scale))
    return mean.clamp(0.0, 1.0)


def mean_image(output: torch.Tensor, channels: int, mixtures: int, coupled: bool = False) -> torch.Tensor:
    """The distribution's mean as pixels in [0, 1], (..., C, H, W): the mixture of the clipped means."""
    if coupled:
        return _coupled_mean_image(output, mixtures)
    logits, means, log_scales = split_params(output, channels, mixtures)
    component_means = clipped_mean(means, log_scales)
    if logits is None:
        return component_means.squeeze(-4)
    return (torch.softmax(logits, dim=-4) * component_means).sum(-4)


def sample_image(
    output: torch.Tensor, channels: int, mixtures: int, generator: torch.Generator, coupled: bool = False
) -> torch.Tensor:
    """One draw of every subpixel's level, as pixels on the 8-bit grid in [0, 1]: (..., C, H, W)."""
    if coupled:
        return _coupled_sample_image(output, mixtures, generator)
    logits, means, log_scales = split_params(output, channels, mixtures)
    if logits is not None:
        # Gumbel-max picks each subpixel's component with probability softmax(logits).
        gumbel = -torch.log(-torch.log(_uniform(logits, generator)))
        pick = (logits + gumbel).argmax(-4, keepdim=True)
        means, log_scales = means.gather(-4, pick), log_scales.gather(-4, pick)
    u = _uniform(means, generator)
    y = means + torch.exp(log_scales) * (torch.log(u) - torch.log1p(-u))  # inverse logistic CDF
    return ((y * LEVELS).round().clamp(0, LEVELS) / LEVELS).squeeze(-4)


def _uniform(like: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Uniform draws in (0, 1), never exactly 0 or 1, drawn on the generator's device."""
    u = torch.rand(like.shape, generator=generator, device=generator.device, dtype=torch.float32)
    return u.clamp(1e-6, 1 - 1e-6).to(like.device, like.dtype)


# --- rgb_coupling: one mixture over whole RGB pixels, G's location moving with R and B's with G ---------------


def split_coupled(
    output: torch.Tensor, mixtures: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Coupled decoder output (..., 9 K, H, W) as (logits (..., K, 1, H, W), coefficients a and b
    (..., K, 2, H, W), means and log-scales (..., K, 3, H, W)); the three slots even for K = 1."""
    params = output.unflatten(-3, (3, mixtures, 3))
    slots = params.select(-5, 0)
    means, log_scales = params.select(-5, 1) + MEAN_OFFSET, _log_scales(params.select(-5, 2))
    return slots.narrow(-3, 0, 1), torch.tanh(slots.narrow(-3, 1, 2)), means, log_scales


def coupled_means(means: torch.Tensor, coefficients: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """Each component's locations given the pixel's levels (..., 3, H, W): (mu_R, mu_G + a r, mu_B + b g)."""
    # Padding puts a zero shift in front, for R; broadcasting against the means keeps any leading shape.
    return means + F.pad(coefficients * levels.narrow(-3, 0, 2), (0, 0, 0, 0, 1, 0))


def _coupled_log_prob(x: torch.Tensor, output: torch.Tensor, mixtures: int) -> torch.Tensor:
    """A third of each pixel's joint log P(R, G, B) on each of its subpixels: (..., 3, H, W)."""
    logits, coefficients, means, log_scales = split_coupled(output, mixtures)
    x = ((x * LEVELS).round() / LEVELS).unsqueeze(-4)  # the levels, against every component
    locations = coupled_means(means, coefficients, x)
    del means, coefficients  # freed before the bins' arithmetic, the loss's peak of memory
    per_channel = component_log_probs(x, locations, log_scales)
    per_pixel = F.log_softmax(logits, dim=-4) + per_channel.sum(-3, keepdim=True)  # (..., K, 1, H, W)
    joint = torch.logsumexp(per_pixel, dim=-4)
    return (joint / 3).expand(*joint.shape[:-3], 3, *joint.shape[-2:])


def _coupled_mean_image(output: torch.Tensor, mixtures: int) -> torch.Tensor:
    """The mixture of each component's clipped means, (..., 3, H, W). G's (B's) location takes the component's
    mean of R (G) for R (G): a plug-in, exact when a (b) is 0 or the clipped mean is linear over R's spread."""
    logits, coefficients, means, log_scales = split_coupled(output, mixtures)
    channel_means: list[torch.Tensor] = []
    for c in range(3):
        location = means.narrow(-3, c, 1)
        if c:
            location = location + coefficients.narrow(-3, c - 1, 1) * channel_means[-1]
        channel_means.append(clipped_mean(location, log_scales.narrow(-3, c, 1)))
    return (torch.softmax(logits, dim=-4) * torch.cat(channel_means, dim=-3)).sum(-4)


def _coupled_sample_image(output: torch.Tensor, mixtures: int, generator: torch.Generator) -> torch.Tensor:
    """One draw of every pixel: one component per pixel, then R, G given R, B given G, on the 8-bit grid."""
    logits, coefficients, means, log_scales = split_coupled(output, mixtures)
    gumbel = -torch.log(-torch.log(_uniform(logits, generator)))
    pick = (logits + gumbel).argmax(-4, keepdim=True)  # (..., 1, 1, H, W): the whole pixel's component

    def picked(values: torch.Tensor) -> torch.Tensor:
        return values.gather(-4, pick.expand(*pick.shape[:-3], values.shape[-3], *pick.shape[-2:]))

    means, log_scales, coefficients = picked(means), picked(log_scales), picked(coefficients)
    u = _uniform(means, generator)
    uncoupled = means + torch.exp(log_scales) * (torch.log(u) - torch.log1p(-u))  # before the shifts
    levels: list[torch.Tensor] = []
    for c in range(3):
        y = uncoupled.narrow(-3, c, 1)
        if c:
            y = y + coefficients.narrow(-3, c - 1, 1) * levels[-1]  # the drawn level of the channel before
        levels.append((y * LEVELS).round().clamp(0, LEVELS) / LEVELS)
    return torch.cat(levels, dim=-3).squeeze(-4)
