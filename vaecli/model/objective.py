"""The VAE objective: reconstruction likelihood, KL to the prior, and the negative ELBO."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from vaecli.model import logistic
from vaecli.model.networks import VAE, is_hierarchical, run_decoder

LOG_2PI = math.log(2 * math.pi)


def reconstruction_nll(model: VAE, output: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """-log p(x|z) per image, summed over pixels, in nats: (B,), or (B, K) for (B, K, C, H, W) outputs."""
    if model.config.likelihood == "logistic":
        # Discrete: x is read on the 8-bit grid, and the sum is -log P(x) of the image's levels.
        nll = -logistic.log_prob(x, output, model.config.mixtures)
    elif model.config.likelihood == "gaussian":
        logvar = model.decoder_logvar.view(1, -1, 1, 1)
        nll = 0.5 * (LOG_2PI + logvar + (x - output).square() * torch.exp(-logvar))
    else:
        # Bernoulli with continuous targets in [0, 1], as in the original code.
        nll = F.binary_cross_entropy_with_logits(output, x, reduction="none")
    return nll.flatten(-3).sum(-1)


def kl_to_standard_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, I)) per image (Kingma and Welling 2014, appendix B): (B,)."""
    return 0.5 * (mu.square() + logvar.exp() - 1.0 - logvar).sum(1)


def kl_per_dimension(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """The same KL, kept per latent dimension: (B, latent)."""
    return 0.5 * (mu.square() + logvar.exp() - 1.0 - logvar)


def log_posterior(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log q(z|x) for codes z and the posterior's mean and log-variance, all (..., latent): (...)."""
    return -0.5 * ((z - mu).square() * torch.exp(-logvar) + logvar + LOG_2PI).sum(-1)


def kl_to_prior(model: VAE, mu: torch.Tensor, logvar: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """KL(q(z|x) || p(z)) per image: analytic for N(0, I); for a fitted mixture, at z = mu + sigma * noise.

    A fitted prior stays fixed while the encoder and decoder train under it."""
    if model.prior is None:
        return kl_to_standard_normal(mu, logvar)
    z = mu + noise * torch.exp(0.5 * logvar)
    return log_posterior(z, mu, logvar) - model.log_prior(z)


def loss_terms(
    model: VAE, result: tuple[torch.Tensor, ...], x: torch.Tensor, noise: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """From the network's forward output: -log p(x|z) per image (B,) and each stochastic layer's KL (B, layers).

    A one-layer VAE has one layer, KL(q(z|x) || p(z)) (kl_to_prior); a hierarchical one lists its layers'."""
    if is_hierarchical(model):
        output, kls = result
        return reconstruction_nll(model, output.float(), x), kls.float()
    output, mu, logvar = (part.float() for part in result)
    return reconstruction_nll(model, output, x), kl_to_prior(model, mu, logvar, noise).unsqueeze(1)


def with_free_bits(kls: torch.Tensor, free_bits: float) -> torch.Tensor:
    """The KL the loss pushes down, per image (B,): a layer whose batch-mean KL is under `free_bits` nats
    counts as `free_bits`, with no gradient, so no layer is pushed to collapse (Kingma et al. 2016, eq. 15)."""
    if free_bits <= 0:
        return kls.sum(1)
    return torch.where(kls.mean(0, keepdim=True) > free_bits, kls, torch.full_like(kls, free_bits)).sum(1)


def elbo_terms(
    model: VAE, x: torch.Tensor, generator: torch.Generator | None = None, labels: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """One-sample reconstruction NLL and analytic KL per image; -ELBO = recon + KL (eq. 3)."""
    output, mu, logvar = model(x, generator, labels=labels)
    return reconstruction_nll(model, output, x), kl_to_standard_normal(mu, logvar)


def output_to_image(model: VAE, output: torch.Tensor) -> torch.Tensor:
    """The mean of p(x|z) as pixels in [0, 1]: sigmoid of logits, clamped Gaussian means, or the logistic's mean."""
    config = model.config
    if config.likelihood == "logistic":
        return logistic.mean_image(output, config.channels, config.mixtures)
    if config.likelihood == "gaussian":
        return output.clamp(0.0, 1.0)
    return torch.sigmoid(output)


def sample_output(model: VAE, output: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One draw x ~ p(x|z) per decoder output, as pixels in [0, 1] (drawn on the generator's device)."""
    config = model.config
    output = output.float().to(generator.device)
    if config.likelihood == "logistic":
        return logistic.sample_image(output, config.channels, config.mixtures, generator)
    if config.likelihood == "gaussian":
        std = torch.exp(0.5 * model.decoder_logvar.detach().float().to(generator.device)).view(-1, 1, 1)
        noise = torch.randn(output.shape, generator=generator, device=generator.device)
        return (output + std * noise).clamp(0.0, 1.0)
    return torch.bernoulli(torch.sigmoid(output), generator=generator)


def log_weights(
    model: VAE,
    x: torch.Tensor,
    samples: int,
    generator: torch.Generator | None = None,
    decoder: torch.nn.Module | None = None,
    labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """log p(x|z_k) + log p(z_k) - log q(z_k|x) for K samples z_k ~ q(z|x): (B, K).

    `decoder` replaces model.decode by an equivalent module (models.inference_decoder). A conditional
    model takes the labels (B,): the weights are then those of p(x|y)."""
    if is_hierarchical(model):
        return _hierarchical_log_weights(model, x, samples, generator)
    mu, logvar = model.encode(x, labels)  # (B, L)
    batch, latent = mu.shape
    eps = torch.randn((batch, samples, latent), generator=generator, device=mu.device, dtype=mu.dtype)
    z = mu.unsqueeze(1) + eps * torch.exp(0.5 * logvar).unsqueeze(1)  # (B, K, L)
    repeated = None if labels is None else labels.repeat_interleave(samples)
    output = run_decoder(model, model.decoder if decoder is None else decoder, z.reshape(batch * samples, latent),
                         repeated)
    output = output.reshape(batch, samples, *output.shape[1:])  # (B, K, outputs per subpixel x C, H, W)
    # The target is broadcast, not copied K times: (B, 1, C, H, W) against (B, K, C, H, W).
    log_px_z = -reconstruction_nll(model, output, x.unsqueeze(1).expand(batch, samples, *x.shape[1:]))
    log_pz = model.log_prior(z)
    log_qz_x = -0.5 * (eps.square() + logvar.unsqueeze(1) + LOG_2PI).sum(-1)  # (z - mu) / sigma = eps
    return log_px_z + log_pz - log_qz_x


def _hierarchical_log_weights(model, x: torch.Tensor, samples: int, generator: torch.Generator | None) -> torch.Tensor:
    """log p(x, z_1..z_L) - log q(z_1..z_L | x) for K joint draws of every layer from q: (B, K)."""
    batch = x.shape[0]
    output, log_ratio = model.log_joint_terms(x, samples, generator)
    output = output.reshape(batch, samples, *output.shape[1:])
    log_px_z = -reconstruction_nll(model, output, x.unsqueeze(1).expand(batch, samples, *x.shape[1:]))
    return log_px_z + log_ratio.reshape(batch, samples)
