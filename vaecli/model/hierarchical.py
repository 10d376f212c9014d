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
from collections.abc import Iterable, Iterator
from typing import cast

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
from vaecli.model.gaussian import kl_divergence, log_density
from vaecli.model.interface import Draw, VAEModel, repeat_rows
from vaecli.model.prior import MixturePrior


class TopDownCell(nn.Module):
    """One lower stochastic layer: its prior and posterior from the top-down state, and how z joins it."""

    def __init__(self, width: int, channels: int):
        super().__init__()
        self.prior = nn.Sequential(nn.SiLU(), nn.Conv2d(width, 2 * channels, 3, padding=1))
        self.posterior = nn.Sequential(nn.SiLU(), nn.Conv2d(2 * width, 2 * channels, 3, padding=1))
        self.merge = nn.Conv2d(channels, width, 1)
        self.block = ResidualBlock(width)
        # The posterior starts equal to the prior: every layer's KL starts at 0 (NVAE's residual form).
        posterior_out = self.posterior[1]
        assert isinstance(posterior_out, nn.Conv2d) and posterior_out.bias is not None
        nn.init.zeros_(posterior_out.weight)
        nn.init.zeros_(posterior_out.bias)

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


class HVAE(VAEModel):
    """config.groups stochastic layers: a top vector of latent_dim, below it maps of group_channels, every one at
    a quarter of the image (the layout before map_scales; MultiScaleHVAE places each map at its own scale)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        width, lower = config.hidden, config.groups - 1
        sizes = halved_sizes(config.height, config.width, 2)  # the lower layers live at the last (map_shapes)
        self.map_shapes = config.map_shapes
        flat = width * sizes[2][0] * sizes[2][1]
        self.stem: nn.Module = nn.Sequential(
            nn.Conv2d(config.channels, width, 3, stride=2, padding=1), ResidualBlock(width),
            nn.SiLU(), nn.Conv2d(width, width, 3, stride=2, padding=1),
        )
        self.bottom_up = nn.ModuleList(ResidualBlock(width) for _ in range(lower))
        self.top_encoder = nn.Sequential(nn.SiLU(), nn.Flatten(), nn.Linear(flat, 2 * config.latent_dim))
        self.top_decoder = nn.Sequential(nn.Linear(config.latent_dim, flat), nn.Unflatten(1, (width, *sizes[2])))
        self.cells = nn.ModuleList(TopDownCell(width, config.group_channels) for _ in range(lower))
        self.head = _head(config, width, sizes)
        self._likelihood_and_prior(config)

    def _likelihood_and_prior(self, config: ModelConfig) -> None:
        if config.likelihood == "gaussian":
            self.decoder_logvar = gaussian_decoder_logvar(config.channels)
        # p(z_1): N(0, I), or the mixture `vae fit-prior` fits to the top layer's codes.
        self.prior = MixturePrior(config.prior_components, config.latent_dim) if config.prior_components else None

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The bottom-up pass: one feature map per lower layer, the bottom layer's first; the top layer reads the
        last (the top cell's)."""
        out, state = [], self.stem(x)
        for block in self.bottom_up:
            state = block(state)
            out.append(state)
        return out

    def rise(self, state: torch.Tensor, cell: int) -> torch.Tensor:
        """The top-down state brought to lower layer `cell`'s resolution (here every layer shares one)."""
        return state

    def finish(self, state: torch.Tensor) -> torch.Tensor:
        """Decoder output from the top-down state after the last layer."""
        return self.head(state)

    def encode(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The top layer's posterior q(z_1|x): mean and log-variance, each (B, latent)."""
        return self.encode_features(self.features(x)[-1])

    @property
    def top_down(self) -> Iterable[TopDownCell]:
        """The lower layers' cells, the top's first (self.cells, as a type checker cannot see in a ModuleList)."""
        return cast("Iterable[TopDownCell]", self.cells)

    @property
    def layers(self) -> int:
        """Stochastic layers: the top vector and one per lower map (config.groups)."""
        return 1 + len(self.cells)

    @property
    def lower_dims(self) -> int:
        """Standard-normal draws the lower layers take per image: one per element of each lower map."""
        return sum(math.prod(shape) for shape in self.map_shapes)

    def draw_noise(self, rows: int, generator: torch.Generator | None, device: torch.device,
                   dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Noise for `rows` draws, layer by layer from the top: the order `vae eval`'s numbers were drawn in."""
        layers = [(self.config.latent_dim,), *self.map_shapes]
        return torch.cat([torch.randn((rows, *shape), generator=generator, device=device, dtype=dtype).flatten(1)
                          for shape in layers], dim=1)

    def decode(
        self, z: torch.Tensor, labels: torch.Tensor | None = None, lower_noise: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Decoder output for top codes (B, latent): each lower layer at its prior mean given those above,
        or with lower_noise (B, lower_dims) drawn from that prior, z_i = mu_p + sigma_p * noise."""
        state = self.top_decoder(z)
        draws = None if lower_noise is None else self._split(torch.cat([z, lower_noise.to(z)], dim=1))
        if draws is not None:
            next(draws)  # the top layer's part: z itself
        for i, cell in enumerate(self.top_down):
            state = self.rise(state, i)
            mu, logvar = cell.prior_params(state)
            state = cell.absorb(state, mu if draws is None else mu + next(draws) * torch.exp(0.5 * logvar))
        return self.finish(state)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None, noise: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, samples: int = 1, decoder: nn.Module | None = None) -> Draw:
        """`samples` joint draws of every layer from q per image (one bottom-up pass), each layer's KL, the top's
        first, and log p(z) - log q(z|x) over all layers. The decoder is the model's own: `decoder` is ignored
        (fast_decoder gives none: the one-layer decoders' sub-pixel rewrite made an hvae's pass 10% slower)."""
        feats = [repeat_rows(f, samples) for f in self.features(x)]
        if noise is None:
            noise = torch.randn((feats[0].shape[0], self.noise_dims), generator=generator, device=x.device,
                                dtype=x.dtype)
        draws = self._split(noise)
        mu, logvar = self.encode_features(feats[-1])
        z = mu + next(draws) * torch.exp(0.5 * logvar)
        top_kl, log_ratio = self.top_terms(z, mu, logvar)
        kls = [top_kl]
        state = self.top_decoder(z)
        for i, (cell, feature) in enumerate(zip(self.top_down, reversed(feats), strict=True)):
            state = self.rise(state, i)
            prior = cell.prior_params(state)
            mu_q, logvar_q = cell.posterior_params(state, feature, prior)
            z = mu_q + next(draws) * torch.exp(0.5 * logvar_q)
            kls.append(kl_divergence(mu_q, logvar_q, *prior, event_dims=3))
            log_ratio = log_ratio + log_density(z, *prior, event_dims=3) - log_density(z, mu_q, logvar_q, event_dims=3)
            state = cell.absorb(state, z)
        return Draw(self.finish(state), torch.stack(kls, dim=1), log_ratio, mu[::samples], logvar[::samples])

    def encode_features(self, top_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, raw = self.top_encoder(top_features).chunk(2, dim=1)
        return posterior_offset(mu), posterior_logvar(raw)

    def _split(self, noise: torch.Tensor) -> Iterator[torch.Tensor]:
        """The noise (B, noise_dims) as the top vector's draws, then each lower map's."""
        start = self.config.latent_dim
        yield noise[:, :start]
        for shape in self.map_shapes:
            size = math.prod(shape)
            yield noise[:, start : start + size].reshape(-1, *shape)
            start += size

    def posterior_mean_layers(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Every layer at its posterior mean given x, top-down: the top vector (B, latent), then each lower map."""
        feats = self.features(x)
        layers = [self.encode_features(feats[-1])[0]]
        state = self.top_decoder(layers[0])
        for i, (cell, feature) in enumerate(zip(self.top_down, reversed(feats), strict=True)):
            # Each lower layer's posterior depends on the layers above it, so the walk absorbs as it goes.
            state = self.rise(state, i)
            layers.append(cell.posterior_params(state, feature, cell.prior_params(state))[0])
            state = cell.absorb(state, layers[-1])
        return layers

    def decode_layers(self, layers: list[torch.Tensor], labels: torch.Tensor | None = None) -> torch.Tensor:
        """Decoder output for a value of every layer, in posterior_mean_layers' order (the deterministic
        reconstruction for its result)."""
        state = self.top_decoder(layers[0])
        for i, (cell, z) in enumerate(zip(self.top_down, layers[1:], strict=True)):
            state = cell.absorb(self.rise(state, i), z)
        return self.finish(state)


class MultiScaleHVAE(HVAE):
    """An hvae whose lower maps each live at their own scale (config.map_scales), as NVAE's and VDVAE's do.

    The bottom-up pass starts at full resolution and halves the side level by level, handing each layer the
    features at its map's size; the top-down pass doubles its state (upsampler) on the way down. Widths halve
    as the side doubles above a quarter of the image, which keeps the fine levels cheap."""

    def __init__(self, config: ModelConfig):
        VAEModel.__init__(self)
        self.config = config
        self.map_shapes = config.map_shapes
        self.divisors = config.map_divisors
        depth = self.divisors[0].bit_length()  # levels from full size (divisor 1) to the top map's
        sizes = halved_sizes(config.height, config.width, depth - 1)
        widths = [level_width(config.hidden, 2**level) for level in range(depth)]
        self.stem: nn.Module = nn.Conv2d(config.channels, widths[0], 3, padding=1)
        self.bottom_up = nn.ModuleList(ResidualBlock(width) for width in widths)
        self.downs = nn.ModuleList(
            nn.Sequential(nn.SiLU(), nn.Conv2d(widths[i], widths[i + 1], 3, stride=2, padding=1))
            for i in range(depth - 1))
        flat = widths[-1] * sizes[-1][0] * sizes[-1][1]
        self.top_encoder = nn.Sequential(nn.SiLU(), nn.Flatten(), nn.Linear(flat, 2 * config.latent_dim))
        self.top_decoder = nn.Sequential(nn.Linear(config.latent_dim, flat), nn.Unflatten(1, (widths[-1], *sizes[-1])))
        self.cells = nn.ModuleList(TopDownCell(widths[d.bit_length() - 1], config.group_channels)
                                   for d in self.divisors)
        # ups[i] doubles the state from level i + 1 to level i.
        self.ups = nn.ModuleList(
            nn.Sequential(nn.SiLU(), upsampler(widths[i + 1], widths[i], sizes[i + 1], sizes[i], config.upsampling))
            for i in range(depth - 1))
        head: list[nn.Module] = [nn.SiLU(), nn.Conv2d(widths[0], config.channels * config.output_params, 3, padding=1)]
        if config.likelihood == "bernoulli":
            head.append(BoundedLogits())
        self.head = nn.Sequential(*head)
        self._likelihood_and_prior(config)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The bottom-up pass: each lower layer's features at its map's size, the bottom layer's first; the last
        is the top map's, which the top layer reads too."""
        levels, state = [], self.stem(x)
        for i, block in enumerate(self.bottom_up):
            state = block(state)
            levels.append(state)
            if i < len(self.downs):
                state = self.downs[i](state)
        return [levels[d.bit_length() - 1] for d in reversed(self.divisors)]

    def rise(self, state: torch.Tensor, cell: int) -> torch.Tensor:
        """Double the state until it is the size of lower layer `cell`'s map."""
        above = self.divisors[cell - 1] if cell else self.divisors[0]
        return self._double(state, above, self.divisors[cell])

    def finish(self, state: torch.Tensor) -> torch.Tensor:
        return self.head(self._double(state, self.divisors[-1], 1))

    def _double(self, state: torch.Tensor, divisor: int, target: int) -> torch.Tensor:
        while divisor > target:
            divisor //= 2
            state = self.ups[divisor.bit_length() - 1](state)
        return state


def level_width(hidden: int, divisor: int) -> int:
    """Channels at a level whose side is the image's / divisor: hidden down to a quarter of the image, halving as
    the side doubles above it (at least 4)."""
    return max(4, hidden * min(divisor, 4) // 4)


def hierarchical_model(config: ModelConfig) -> HVAE:
    """The hvae for a config: one scale for every lower map (files before map_scales), or each at its own."""
    return MultiScaleHVAE(config) if config.map_scales else HVAE(config)


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
