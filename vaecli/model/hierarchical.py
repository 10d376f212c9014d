"""A hierarchical VAE with top-down inference: several stochastic layers, N(0, I) only at the top.

The bidirectional inference of Kingma et al. (2016, IAF paper, section 6) with NVAE's residual
posterior (Vahdat and Kautz 2020), cut to what pays on small images: a bottom-up pass computes
features once; the top-down pass draws each lower layer z_i (a latent map) from
q(z_i | x, z_<i) = N(mu_p + dmu, exp(logvar_p + dlogvar)), where N(mu_p, exp(logvar_p)) is the
prior p(z_i | z_<i) read from the same top-down state; dmu and dlogvar are bounded in the prior's units
(blocks.posterior_offset, posterior_logvar), so an image far from the data cannot send q, and every layer
below it, to extremes. The top layer is a vector, like a one-layer VAE's z: commands that encode,
decode, traverse or interpolate work on it, and `vae fit-prior` can replace its N(0, I) by a mixture
fitted to its codes.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from vaecli.config import ModelConfig, halved_sizes
from vaecli.model.blocks import (
    BoundedLogits,
    ResidualBlock,
    bounded_logvar,
    gaussian_decoder_logvar,
    posterior_logvar,
    posterior_offset,
    upsampler,
)
from vaecli.model.prior import MixturePrior, standard_normal_log_prob

LOG_2PI = math.log(2 * math.pi)


def gaussian_log_prob(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; mu, exp(logvar)) summed over every dimension but the first, in fp32 under autocast too: (B,)."""
    z, mu, logvar = z.float(), mu.float(), logvar.float()
    terms = (z - mu).square() * torch.exp(-logvar) + logvar + LOG_2PI
    return -0.5 * terms.flatten(1).sum(1)


def gaussian_kl(mu_q: torch.Tensor, logvar_q: torch.Tensor, mu_p: torch.Tensor, logvar_p: torch.Tensor) -> torch.Tensor:
    """KL(N(mu_q, exp(logvar_q)) || N(mu_p, exp(logvar_p))) summed over every dimension but the first: (B,).

    In fp32 whatever the forward pass ran in: the sum runs over hundreds of dimensions."""
    mu_q, logvar_q, mu_p, logvar_p = (t.float() for t in (mu_q, logvar_q, mu_p, logvar_p))
    terms = logvar_p - logvar_q + (torch.exp(logvar_q) + (mu_q - mu_p).square()) * torch.exp(-logvar_p) - 1
    return 0.5 * terms.flatten(1).sum(1)


class TopDownCell(nn.Module):
    """One lower stochastic layer: its prior and posterior from the top-down state, and how z joins it."""

    def __init__(self, width: int, channels: int):
        super().__init__()
        self.prior = nn.Sequential(nn.SiLU(), nn.Conv2d(width, 2 * channels, 3, padding=1))
        self.posterior = nn.Sequential(nn.SiLU(), nn.Conv2d(2 * width, 2 * channels, 3, padding=1))
        self.merge = nn.Conv2d(channels, width, 1)
        self.block = ResidualBlock(width)
        # The posterior starts equal to the prior: every layer's KL starts at 0 (NVAE's residual form).
        nn.init.zeros_(self.posterior[1].weight)
        nn.init.zeros_(self.posterior[1].bias)

    def prior_params(self, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, raw = self.prior(state).chunk(2, dim=1)
        return mu, bounded_logvar(raw)

    def posterior_params(
        self, state: torch.Tensor, features: torch.Tensor, prior: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        shift, raw = self.posterior(torch.cat([state, features], dim=1)).chunk(2, dim=1)
        return prior[0] + posterior_offset(shift, prior[1]), posterior_logvar(raw, prior[1])

    def absorb(self, state: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.block(state + self.merge(z))


class HVAE(nn.Module):
    """config.groups stochastic layers: a top vector of latent_dim, below it maps of group_channels."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        width, lower = config.hidden, config.groups - 1
        sizes = halved_sizes(config.height, config.width, 2)  # the lower layers live at the last (map_shape)
        self.map_shape = config.map_shape
        flat = width * sizes[2][0] * sizes[2][1]
        self.stem = nn.Sequential(
            nn.Conv2d(config.channels, width, 3, stride=2, padding=1), ResidualBlock(width),
            nn.SiLU(), nn.Conv2d(width, width, 3, stride=2, padding=1),
        )
        self.bottom_up = nn.ModuleList(ResidualBlock(width) for _ in range(lower))
        self.top_encoder = nn.Sequential(nn.SiLU(), nn.Flatten(), nn.Linear(flat, 2 * config.latent_dim))
        self.top_decoder = nn.Sequential(nn.Linear(config.latent_dim, flat), nn.Unflatten(1, (width, *sizes[2])))
        self.cells = nn.ModuleList(TopDownCell(width, config.group_channels) for _ in range(lower))
        self.head = _head(config, width, sizes)
        if config.likelihood == "gaussian":
            self.decoder_logvar = gaussian_decoder_logvar(config.channels)
        # p(z_1): N(0, I), or the mixture `vae fit-prior` fits to the top layer's codes.
        self.prior = MixturePrior(config.prior_components, config.latent_dim) if config.prior_components else None

    @property
    def noise_dims(self) -> int:
        """Standard-normal draws one image's pass through q takes: the top vector and every lower map."""
        return self.config.latent_dim + len(self.cells) * math.prod(self.map_shape)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The bottom-up pass: one feature map per lower layer, the bottom layer's first, then the top's."""
        out, state = [], self.stem(x)
        for block in self.bottom_up:
            state = block(state)
            out.append(state)
        return out

    def encode(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The top layer's posterior q(z_1|x): mean and log-variance, each (B, latent)."""
        return self.encode_features(self.features(x)[-1])

    def log_prior(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z_1) of the top layer, N(0, I) or a fitted mixture: (...)."""
        return standard_normal_log_prob(z) if self.prior is None else self.prior.log_prob(z)

    @property
    def lower_dims(self) -> int:
        """Standard-normal draws the lower layers take per image when sampled (decode's lower_noise)."""
        return self.noise_dims - self.config.latent_dim

    def decode(
        self, z: torch.Tensor, labels: torch.Tensor | None = None, lower_noise: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Decoder output for top codes (B, latent): each lower layer at its prior mean given those above,
        or with lower_noise (B, lower_dims) drawn from that prior, z_i = mu_p + sigma_p * noise."""
        state = self.top_decoder(z)
        draws = None if lower_noise is None else self._split(torch.cat([z, lower_noise.to(z)], dim=1))
        if draws is not None:
            next(draws)  # the top layer's part: z itself
        for cell in self.cells:
            mu, logvar = cell.prior_params(state)
            state = cell.absorb(state, mu if draws is None else mu + next(draws) * torch.exp(0.5 * logvar))
        return self.head(state)

    def forward(
        self, x: torch.Tensor, generator: torch.Generator | None = None, noise: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoder output for one draw of every layer from q, and each layer's KL, the top's first: (B, groups)."""
        batch = x.shape[0]
        if noise is None:
            noise = torch.randn((batch, self.noise_dims), generator=generator, device=x.device, dtype=x.dtype)
        draws = self._split(noise)
        feats = self.features(x)
        mu, logvar = self.encode_features(feats[-1])
        z = mu + next(draws) * torch.exp(0.5 * logvar)
        kls = [self._top_kl(z, mu, logvar)]
        state = self.top_decoder(z)
        for cell, feature in zip(self.cells, reversed(feats), strict=True):
            prior = cell.prior_params(state)
            mu_q, logvar_q = cell.posterior_params(state, feature, prior)
            kls.append(gaussian_kl(mu_q, logvar_q, *prior))
            state = cell.absorb(state, mu_q + next(draws) * torch.exp(0.5 * logvar_q))
        return self.head(state), torch.stack(kls, dim=1)

    def _top_kl(self, z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """KL(q(z_1|x) || p(z_1)): exact against N(0, I); at the drawn z_1 for a fitted mixture, which stays fixed."""
        if self.prior is None:
            return gaussian_kl(mu, logvar, torch.zeros_like(mu), torch.zeros_like(logvar))
        return gaussian_log_prob(z, mu, logvar) - self.prior.log_prob(z.float())

    def encode_features(self, top_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, raw = self.top_encoder(top_features).chunk(2, dim=1)
        return posterior_offset(mu), posterior_logvar(raw)

    def _split(self, noise: torch.Tensor):
        """The noise (B, noise_dims) as the top vector's draws, then each lower map's."""
        top = self.config.latent_dim
        yield noise[:, :top]
        size = math.prod(self.map_shape)
        for i in range(len(self.cells)):
            yield noise[:, top + i * size : top + (i + 1) * size].reshape(-1, *self.map_shape)

    def log_joint_terms(self, x: torch.Tensor, samples: int, generator: torch.Generator | None = None):
        """For K draws of every layer from q per image: decoder outputs (B*K, ...), and log p(z) - log q(z|x) (B*K,)."""
        feats = [f.repeat_interleave(samples, dim=0) for f in self.features(x)]
        mu, logvar = self.encode_features(feats[-1])
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        z = mu + eps * torch.exp(0.5 * logvar)
        log_ratio = self.log_prior(z.float()) - gaussian_log_prob(z, mu, logvar)
        state = self.top_decoder(z)
        for cell, feature in zip(self.cells, reversed(feats), strict=True):
            prior = cell.prior_params(state)
            mu_q, logvar_q = cell.posterior_params(state, feature, prior)
            eps = torch.randn(mu_q.shape, generator=generator, device=mu_q.device, dtype=mu_q.dtype)
            z = mu_q + eps * torch.exp(0.5 * logvar_q)
            log_ratio = log_ratio + gaussian_log_prob(z, *prior) - gaussian_log_prob(z, mu_q, logvar_q)
            state = cell.absorb(state, z)
        return self.head(state), log_ratio

    def posterior_mean_layers(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Every layer at its posterior mean given x, top-down: the top vector (B, latent), then each lower map."""
        feats = self.features(x)
        layers = [self.encode_features(feats[-1])[0]]
        state = self.top_decoder(layers[0])
        for cell, feature in zip(self.cells, reversed(feats), strict=True):
            # Each lower layer's posterior depends on the layers above it, so the walk absorbs as it goes.
            layers.append(cell.posterior_params(state, feature, cell.prior_params(state))[0])
            state = cell.absorb(state, layers[-1])
        return layers

    def decode_layers(self, layers: list[torch.Tensor]) -> torch.Tensor:
        """Decoder output for a value of every layer, in posterior_mean_layers' order (the deterministic
        reconstruction for its result)."""
        state = self.top_decoder(layers[0])
        for cell, z in zip(self.cells, layers[1:], strict=True):
            state = cell.absorb(state, z)
        return self.head(state)


def _head(config: ModelConfig, width: int, sizes: list[tuple[int, int]]) -> nn.Sequential:
    """From the top-down state at a quarter of the image back to the decoder's outputs at full size."""
    layers: list[nn.Module] = [ResidualBlock(width)]
    for size_in, size_out in ((sizes[2], sizes[1]), (sizes[1], sizes[0])):
        layers += [nn.SiLU(), upsampler(width, width, size_in, size_out, config.upsampling)]
        if size_out == sizes[1]:
            layers.append(ResidualBlock(width))
    outputs = config.channels * config.output_params
    layers += [nn.SiLU(), nn.Conv2d(width, outputs, 3, padding=1)]
    if config.likelihood == "bernoulli":
        layers.append(BoundedLogits())  # no weights: every checkpoint loads as before
    return nn.Sequential(*layers)
