"""Fitting a trained model's prior to the codes of its training images (`vae fit-prior`)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from vaecli.config import MAX_SEED
from vaecli.model.interface import VAEModel
from vaecli.model.networks import reparameterize
from vaecli.model.prior import FIT_ROWS, fit_mixture

CODE_BATCH = 1000  # images encoded per pass


@dataclass
class PriorFit:
    """What a fit did, and what it bought on held-out images (nats per image)."""

    components: int
    codes: int
    elapsed_s: float
    test_images: int
    test_kl_standard: float  # mean KL(q(z|x) || N(0, I)) on the held-out images
    test_kl_mixture: float  # the same codes under the fitted mixture


def fit_bytes(codes: int, latent: int, components: int) -> int:
    """Estimated peak memory of the EM fit in float64: codes, responsibilities, covariances, per-pass temporaries."""
    per_code = 8 * (2 * latent + 4 * components)
    per_component = 8 * 6 * latent * latent
    per_pass = 8 * 2 * FIT_ROWS * (latent * latent + components * latent)
    return codes * per_code + components * per_component + per_pass


@torch.no_grad()
def posterior_samples(
    model: VAEModel, pixels: torch.Tensor, samples: int, binarize: bool, generator: torch.Generator
) -> torch.Tensor:
    """`samples` draws z ~ q(z|x) per image, each pass over freshly binarized images if asked: (N * samples, latent)."""
    device = pixels.device
    codes = []
    for _ in range(samples):
        for start in range(0, pixels.shape[0], CODE_BATCH):
            x = pixels[start : start + CODE_BATCH]
            if binarize:
                x = torch.bernoulli(x, generator=generator)
            mu, logvar = model.encode(x)
            noise = torch.randn(mu.shape, generator=generator, device=device)
            codes.append(reparameterize(mu, logvar, noise=noise).float().cpu())
    return torch.cat(codes)


@torch.no_grad()
def mean_kl(model: VAEModel, pixels: torch.Tensor, samples: int, generator: torch.Generator) -> float:
    """Monte Carlo KL(q(z|x) || p(z)) averaged over images, under the model's current prior."""
    # Against N(0, I) the KL is exact, so further passes would only repeat the first.
    passes = samples if model.prior is not None else 1
    total = 0.0
    for _ in range(passes):
        for start in range(0, pixels.shape[0], CODE_BATCH):
            mu, logvar = model.encode(pixels[start : start + CODE_BATCH])
            noise = torch.randn(mu.shape, generator=generator, device=pixels.device)
            total += float(model.top_terms(reparameterize(mu, logvar, noise=noise), mu, logvar)[0].double().sum())
    return total / (passes * max(pixels.shape[0], 1))


def fit_prior(
    model: VAEModel,
    train_pixels: torch.Tensor,
    test_pixels: torch.Tensor,
    components: int,
    samples: int,
    binarize: bool,
    seed: int,
) -> PriorFit:
    """Replace the model's prior by a mixture fitted to its training codes; report the KL on test images."""
    model.eval()
    generator = torch.Generator(device=train_pixels.device).manual_seed(seed)
    started = time.perf_counter()
    codes = posterior_samples(model, train_pixels, samples, binarize, generator)
    prior = fit_mixture(codes, components, seed).to(next(model.parameters()).device)
    seconds = time.perf_counter() - started
    # The KL difference between the two priors is the change in test -ELBO (the recon term stays).
    model.prior = None
    test_generator = torch.Generator(device=test_pixels.device).manual_seed(seed + 1 if seed < MAX_SEED else 0)
    before = mean_kl(model, test_pixels, samples, test_generator)
    model.prior = prior
    model.config.prior_components = components
    after = mean_kl(model, test_pixels, samples, test_generator)
    return PriorFit(components, codes.shape[0], seconds, test_pixels.shape[0], before, after)
