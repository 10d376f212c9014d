"""The discretized logistic (mixture) on the 256 levels of 8-bit subpixels. Imports torch only.

Kingma et al. 2016 (IAF), section 5.1 and Salimans et al. 2017 (PixelCNN++), section 2.1: level k of 255
has the logistic's mass on the bin [k - 1/2, k + 1/2] / 255 of pixel values in [0, 1], and the edge levels
0 and 255 take the tails below and above. Each subpixel has its own mixture given z: the channels are not
coupled (PixelCNN++'s linear dependence between R, G and B is left out, as the decoder sees z only).
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


def log_prob(x: torch.Tensor, output: torch.Tensor, mixtures: int) -> torch.Tensor:
    """log p(x|z) per subpixel for pixels x (..., C, H, W) on the 8-bit grid: (..., C, H, W)."""
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


def mean_image(output: torch.Tensor, channels: int, mixtures: int) -> torch.Tensor:
    """The distribution's mean as pixels in [0, 1], (..., C, H, W): the mixture of the clipped means."""
    logits, means, log_scales = split_params(output, channels, mixtures)
    component_means = clipped_mean(means, log_scales)
    if logits is None:
        return component_means.squeeze(-4)
    return (torch.softmax(logits, dim=-4) * component_means).sum(-4)


def sample_image(output: torch.Tensor, channels: int, mixtures: int, generator: torch.Generator) -> torch.Tensor:
    """One draw of every subpixel's level, as pixels on the 8-bit grid in [0, 1]: (..., C, H, W)."""
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
