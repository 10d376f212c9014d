"""Building blocks that several architectures share: the residual block, and the bounds that keep a model's
numbers finite off its data (on a posterior's mean and variance, and on a Bernoulli decoder's logits)."""

from __future__ import annotations

import math

import torch
from torch import nn

# Bounds a predicted log-variance smoothly so exp() can neither overflow nor underflow to 0.
LOGVAR_BOUND = 15.0

# How far a posterior q may stray from its prior p, in the prior's units. On the data the bundled models
# stay far inside (means within 6 prior standard deviations, log-variances at most 0.4 above the prior's),
# where these bounds are the identity; off the data (a blank image) an encoder can ask for a mean dozens
# of standard deviations out and a variance e^55 times the prior's, and every layer below then
# extrapolates (the default model scored a blank image at 3.8e12 nats).
MEAN_KNEE, MEAN_LIMIT = 10.0, 12.0  # |mean - prior mean| / prior standard deviation
LOGVAR_KNEE, LOGVAR_LIMIT = 1.0, 2.0  # log-variance minus the prior's
# A Bernoulli decoder's logits: no pixel is ever more certain than about 1 - 2e-9 (e^-20). Logits on the data
# reach -180 (an MNIST border), where the bound costs a black pixel under 3e-7 nats; off the data the default
# model's logits reached -3e6, and one white pixel in the corner of a blank image cost it 44,000 nats.
LOGIT_KNEE, LOGIT_LIMIT = 15.0, 20.0


def bounded_logvar(raw: torch.Tensor) -> torch.Tensor:
    """LOGVAR_BOUND * tanh(raw / LOGVAR_BOUND): about raw near 0, never past the bound."""
    return LOGVAR_BOUND * torch.tanh(raw / LOGVAR_BOUND)


def soft_ceiling(x: torch.Tensor, knee: float, limit: float) -> torch.Tensor:
    """x itself up to knee, then bending smoothly (slope 1 at the knee) toward limit, never past it."""
    room = limit - knee
    return torch.where(x <= knee, x, knee + room * torch.tanh((x - knee) / room))


def soft_clamp(x: torch.Tensor, knee: float, limit: float) -> torch.Tensor:
    """soft_ceiling on both sides: x itself within [-knee, knee], never beyond [-limit, limit]."""
    # where() rather than sign(x) * f(|x|): the gradient at exactly 0 (a zero-initialized layer) stays 1.
    return torch.where(x.abs() <= knee, x, torch.sign(x) * soft_ceiling(x.abs(), knee, limit))


def posterior_offset(offset: torch.Tensor, prior_logvar: torch.Tensor | None = None) -> torch.Tensor:
    """A posterior mean's offset from its prior's mean, kept within MEAN_LIMIT prior standard deviations
    (the prior N(0, 1) unless prior_logvar is given); unchanged within MEAN_KNEE of them."""
    if prior_logvar is None:
        return soft_clamp(offset, MEAN_KNEE, MEAN_LIMIT)
    sigma = torch.exp(0.5 * prior_logvar)
    bounded = sigma * soft_clamp(offset / sigma, MEAN_KNEE, MEAN_LIMIT)
    return torch.where(offset.abs() <= MEAN_KNEE * sigma, offset, bounded)


def posterior_logvar(raw: torch.Tensor, prior_logvar: torch.Tensor | None = None) -> torch.Tensor:
    """A posterior's bounded log-variance from raw, its excess over the prior's (0 unless given):
    at most LOGVAR_LIMIT above the prior's, unchanged up to LOGVAR_KNEE."""
    excess = soft_ceiling(raw, LOGVAR_KNEE, LOGVAR_LIMIT)
    return bounded_logvar(excess if prior_logvar is None else prior_logvar + excess)


def gaussian_decoder_logvar(channels: int) -> nn.Parameter:
    """A Gaussian p(x|z)'s learned log-variance per channel, starting at a standard deviation of 0.1.

    Not at 1, the whole pixel range: from there the first steps reward the KL, not encoding the image,
    and a colour model's code collapsed to about 7 nats."""
    return nn.Parameter(torch.full((channels,), 2 * math.log(0.1)))


class BoundedLogits(nn.Module):
    """A Bernoulli decoder's last step: its logits unchanged within LOGIT_KNEE, never beyond LOGIT_LIMIT."""

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        return soft_clamp(logits, LOGIT_KNEE, LOGIT_LIMIT)


def upsampler(c_in: int, c_out: int, size_in: tuple[int, int], size_out: tuple[int, int], how: str) -> nn.Module:
    """Double a feature map's size (to size_out) and change its channels: ModelConfig.upsampling's two ways."""
    if how == "resize":
        # Nearest-neighbour resize, then a 3x3 convolution: every output pixel sees the same number of
        # weights, so no checkerboard (Odena et al. 2016) is built into the decoder.
        return nn.Sequential(nn.Upsample(size=size_out, mode="nearest"), nn.Conv2d(c_in, c_out, 3, padding=1))
    # A 3x3 stride-2 transpose maps n to 2n - 1; output_padding adds the missing row/column. Its kernel
    # overlaps unevenly, which left a lattice on colour photographs; older checkpoints hold this layer.
    padding = (size_out[0] - (2 * size_in[0] - 1), size_out[1] - (2 * size_in[1] - 1))
    return nn.ConvTranspose2d(c_in, c_out, 3, stride=2, padding=1, output_padding=padding)


class ResidualBlock(nn.Module):
    """x + f(x) with two 3x3 convolutions (pre-activation, He et al. 2016)."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1),
            nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)
