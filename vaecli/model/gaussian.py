"""Diagonal Gaussians, the one place their log-density and KL are written (every layer of every model uses them)."""

from __future__ import annotations

import math

import torch

LOG_2PI = math.log(2 * math.pi)


def _wide(t: torch.Tensor) -> torch.Tensor:
    # Sums run over hundreds of dimensions: bf16 under autocast is widened, float64 is kept.
    return t if t.dtype in (torch.float32, torch.float64) else t.float()


def log_density(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, event_dims: int = 1) -> torch.Tensor:
    """log N(z; mu, diag(exp(logvar))), summed over the last `event_dims` dimensions."""
    z, mu, logvar = _wide(z), _wide(mu), _wide(logvar)
    terms = (z - mu).square() * torch.exp(-logvar) + logvar + LOG_2PI
    return -0.5 * terms.flatten(-event_dims).sum(-1)


def standard_log_density(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I) for codes (..., latent): (...)."""
    return -0.5 * (_wide(z).square() + LOG_2PI).sum(-1)


def kl_per_dimension(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, 1)) for each dimension (Kingma and Welling 2014, appendix B)."""
    mu, logvar = _wide(mu), _wide(logvar)
    return 0.5 * (mu.square() + logvar.exp() - 1.0 - logvar)


def kl_divergence(
    mu_q: torch.Tensor, logvar_q: torch.Tensor,
    mu_p: torch.Tensor | None = None, logvar_p: torch.Tensor | None = None, event_dims: int = 1,
) -> torch.Tensor:
    """KL(N(mu_q, exp(logvar_q)) || N(mu_p, exp(logvar_p))) summed over the last `event_dims` dimensions;
    p is N(0, I) when its parameters are not given."""
    if mu_p is None or logvar_p is None:
        return kl_per_dimension(mu_q, logvar_q).flatten(-event_dims).sum(-1)
    mu_q, logvar_q, mu_p, logvar_p = (_wide(t) for t in (mu_q, logvar_q, mu_p, logvar_p))
    terms = logvar_p - logvar_q + (torch.exp(logvar_q) + (mu_q - mu_p).square()) * torch.exp(-logvar_p) - 1
    return 0.5 * terms.flatten(-event_dims).sum(-1)
