"""The one surface every model family shows, so nothing outside this package asks which kind it holds.

As in vdvae, every stochastic layer reports its own KL, and one pass gives both the ELBO's terms and the
importance weights: a model's forward is a joint draw of every layer from q(z|x) (a Draw).
"""

from __future__ import annotations

from typing import NamedTuple, overload

import torch
from torch import nn

from vaecli.config import ModelConfig
from vaecli.model.gaussian import kl_divergence, log_density, standard_log_density
from vaecli.model.prior import MixturePrior


class Draw(NamedTuple):
    """One joint draw of every stochastic layer from q(z|x) per row (rows = images x samples, image-major)."""

    output: torch.Tensor  # the decoder's output for the draw: (rows, ...)
    kl: torch.Tensor  # each layer's KL(q || p), the top's first: (rows, layers); exact where it has a closed form
    log_ratio: torch.Tensor  # log p(z) - log q(z|x) at the draw, every layer: (rows,)
    mu: torch.Tensor  # the top layer's posterior mean, once per image: (images, latent)
    logvar: torch.Tensor  # and its log-variance


class VAEModel(nn.Module):
    """What one-layer (networks.VAE) and hierarchical (hierarchical.HVAE) models share; the top layer is a vector
    z of config.latent_dim, the layer that encode, decode, the prior and the latent-space commands work on."""

    config: ModelConfig
    prior: MixturePrior | None
    decoder_logvar: nn.Parameter  # p(x|z)'s log-variance per channel; present only for a Gaussian likelihood

    @property
    def layers(self) -> int:
        """Stochastic layers, the top one included."""
        return 1

    @property
    def lower_dims(self) -> int:
        """Standard-normal draws the layers below the top take per image (0 with one layer)."""
        return 0

    @property
    def noise_dims(self) -> int:
        """Standard-normal draws one image's pass through q takes: the top vector and every lower layer."""
        return self.config.latent_dim + self.lower_dims

    def log_prior(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z) of top-layer codes (..., latent), N(0, I) or a fitted mixture: (...)."""
        return standard_log_density(z) if self.prior is None else self.prior.log_prob(z)

    def top_terms(self, z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The top layer's KL(q || p) and log p(z) - log q(z|x) at a draw z: (rows,) each. The KL is exact
        against N(0, I); against a fitted mixture (held fixed while the rest trains) it is the draw's."""
        log_ratio = self.log_prior(z) - log_density(z, mu, logvar)
        return (kl_divergence(mu, logvar) if self.prior is None else -log_ratio), log_ratio

    def draw_noise(self, rows: int, generator: torch.Generator | None, device: torch.device,
                   dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Noise for `rows` draws, drawn layer by layer from the top (as the importance weights take it)."""
        return torch.randn((rows, self.config.latent_dim), generator=generator, device=device, dtype=dtype)

    def fast_decoder(self) -> nn.Module | None:
        """An equivalent of the decoder that runs faster for inference, where one pays; else None."""
        return None

    def encode(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The top layer's posterior q(z|x): mean and log-variance, each (B, latent)."""
        raise NotImplementedError

    def decode(self, z: torch.Tensor, labels: torch.Tensor | None = None,
               lower_noise: torch.Tensor | None = None) -> torch.Tensor:
        """Decoder output for top codes (B, latent): each lower layer at its prior mean given those above, or drawn
        from that prior with lower_noise (B, lower_dims)."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None, noise: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, samples: int = 1, decoder: nn.Module | None = None) -> Draw:
        """`samples` joint draws from q(z|x) per image, made with noise (rows, noise_dims) or from the generator;
        `decoder` replaces the decoder by an equivalent (fast_decoder's)."""
        raise NotImplementedError

    def posterior_mean_layers(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Every layer at its posterior mean given x, top-down: the top vector (B, latent), then each lower one."""
        raise NotImplementedError

    def decode_layers(self, layers: list[torch.Tensor], labels: torch.Tensor | None = None) -> torch.Tensor:
        """Decoder output for a value of every layer, in posterior_mean_layers' order."""
        raise NotImplementedError


@overload
def repeat_rows(t: torch.Tensor, samples: int) -> torch.Tensor: ...
@overload
def repeat_rows(t: None, samples: int) -> None: ...
@overload
def repeat_rows(t: torch.Tensor | None, samples: int) -> torch.Tensor | None: ...
def repeat_rows(t: torch.Tensor | None, samples: int) -> torch.Tensor | None:
    """Each row `samples` times, consecutively: one image's draws stay together."""
    return t if t is None or samples == 1 else t.repeat_interleave(samples, dim=0)
