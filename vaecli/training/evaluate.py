"""Likelihood estimates: the one-sample ELBO, the importance-weighted bound on -log p(x), bits per dimension."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import torch

from vaecli.config import ModelConfig
from vaecli.model.gaussian import kl_per_dimension
from vaecli.model.interface import VAEModel
from vaecli.model.objective import log_weights, loss_terms
from vaecli.store.metadata import Losses

EVAL_SEED = 2024  # test-loss noise is drawn from its own fixed stream, apart from training's
EVAL_BATCH = 1000
ACTIVE_UNIT_NATS = 0.01  # a latent dimension whose average KL is above this is "active"

# Images x samples decoded per forward pass; bounds memory for any K. On the CPU, 256 keeps the
# default CNN's activations in a core's L2 cache: 1.9x faster than 8192 rows on this machine.
# A GPU wants large batches instead.
DECODER_ROWS = {"cpu": 256, "other": 8192}


def default_rows(device: torch.device) -> int:
    return DECODER_ROWS["cpu" if device.type == "cpu" else "other"]


@dataclass
class Evaluation:
    """Per-image averages over a split, in nats (bits for bits_per_dim)."""

    images: int
    iw_samples: int
    recon: float  # one-sample -log p(x|z), the ELBO's first term
    kl: float
    elbo_loss: float  # recon + kl: the negative ELBO
    nll: float  # importance-weighted estimate of -log p(x)
    bits_per_dim: float
    seconds: float


@torch.no_grad()
def elbo_summary(
    model: VAEModel, pixels: torch.Tensor, seed: int = EVAL_SEED, labels: torch.Tensor | None = None
) -> Losses:
    """One-sample negative ELBO averaged over images, with its parts and the active units.

    A conditional model takes each image's label (N,): the bound is then on log p(x|y)."""
    was_training = model.training
    model.eval()
    generator = torch.Generator(device=pixels.device).manual_seed(seed)
    sums = torch.zeros(1 + model.layers, dtype=torch.float64, device=pixels.device)  # recon, then each layer's KL
    kl_dims = torch.zeros(model.config.latent_dim, dtype=torch.float64, device=pixels.device)
    for start in range(0, pixels.shape[0], EVAL_BATCH):
        x, y = pixels[start : start + EVAL_BATCH], batch_of(labels, start, EVAL_BATCH)
        noise = torch.randn((x.shape[0], model.noise_dims), generator=generator, device=x.device, dtype=x.dtype)
        draw = model(x, noise=noise, labels=y)
        recon, kls = loss_terms(model, draw, x)
        # Per dimension (of the top layer), the KL to N(0, 1) picks the active units whatever the prior;
        # the total is the KL to the model's own prior (one-sample, like recon, for a mixture).
        sums += torch.cat([recon.sum().view(1), kls.sum(0)]).double()
        kl_dims += kl_per_dimension(draw.mu, draw.logvar).sum(0).double()
    model.train(was_training)
    n = max(pixels.shape[0], 1)
    mean_recon, *per_layer = (float(v) / n for v in sums)
    per_dim: list[float] = (kl_dims / n).tolist()
    return Losses(recon=mean_recon, kl=sum(per_layer), loss=mean_recon + sum(per_layer), kl_per_dim=per_dim,
                  active_units=sum(k > ACTIVE_UNIT_NATS for k in per_dim),
                  kl_per_layer=per_layer if model.layers > 1 else None)


def iw_nll(
    model: VAEModel,
    pixels: torch.Tensor,
    samples: int,
    generator: torch.Generator,
    on_progress: Callable[[int], None] | None = None,
    rows: int | None = None,
    labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """-(logsumexp_k w_k - log K) per image, w_k = log p(x|z_k) + log p(z_k) - log q(z_k|x).

    The importance-weighted bound of Burda et al. (2016, eq. 8); it rises toward log p(x) as K grows.
    At most `rows` (images x samples) are decoded per forward pass.
    """
    rows = rows or default_rows(pixels.device)
    chunk = min(samples, rows)
    images_per_pass = max(1, rows // chunk)
    out = torch.empty(pixels.shape[0], dtype=torch.float64)
    was_training = model.training
    model.eval()
    decoder = model.fast_decoder()
    with torch.inference_mode():
        for start in range(0, pixels.shape[0], images_per_pass):
            x, y = pixels[start : start + images_per_pass], batch_of(labels, start, images_per_pass)
            total = torch.full((x.shape[0],), -math.inf, dtype=torch.float64, device=x.device)
            for done in range(0, samples, chunk):
                k = min(chunk, samples - done)
                weights = log_weights(model, x, k, generator, decoder, y).double()
                # A running logsumexp over chunks of samples keeps memory flat whatever K is.
                total = torch.logaddexp(total, torch.logsumexp(weights, dim=1))
            out[start : start + x.shape[0]] = (math.log(samples) - total).cpu()
            if on_progress is not None:
                on_progress(x.shape[0])
    model.train(was_training)
    return out


def batch_of(labels: torch.Tensor | None, start: int, size: int) -> torch.Tensor | None:
    """The labels of images start to start + size, or None for an unconditional model."""
    return None if labels is None else labels[start : start + size]


Nats = TypeVar("Nats", float, torch.Tensor)


def bits_per_dim(nats: Nats, dims: int) -> Nats:
    """Nats per image (a float or a tensor) to bits per dimension of an image with `dims` subpixels."""
    return nats / (dims * math.log(2))


def reported_bits_per_dim(nats: float, model: ModelConfig) -> float | None:
    """A test -ELBO in bits per dimension, as training reports it: for the logistic likelihood only, since the
    others are not discrete on the 256 levels of 8-bit subpixels."""
    if model.likelihood != "logistic":
        return None
    return bits_per_dim(nats, math.prod(model.image_shape))


def iw_nll_seeded(
    model: VAEModel,
    pixels: torch.Tensor,
    samples: int,
    seed: int,
    on_progress: Callable[[int], None] | None = None,
    rows: int | None = None,
    labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """iw_nll per image with its noise drawn from `seed`: `vae eval` reports the mean, `vae score` each value."""
    generator = torch.Generator(device=pixels.device).manual_seed(seed)
    return iw_nll(model, pixels, samples, generator, on_progress, rows, labels)


def evaluate_split(
    model: VAEModel,
    pixels: torch.Tensor,
    samples: int,
    seed: int,
    on_progress: Callable[[int], None] | None = None,
    rows: int | None = None,
    labels: torch.Tensor | None = None,
) -> Evaluation:
    """The negative ELBO and the K-sample importance-weighted NLL, averaged over `pixels` (N, C, H, W)."""
    started = time.perf_counter()
    elbo = elbo_summary(model, pixels, labels=labels)
    nll = float(iw_nll_seeded(model, pixels, samples, seed, on_progress, rows, labels).mean())
    dims = math.prod(pixels.shape[1:])
    return Evaluation(
        images=pixels.shape[0],
        iw_samples=samples,
        recon=elbo.recon,
        kl=elbo.kl,
        elbo_loss=elbo.loss,
        nll=nll,
        bits_per_dim=bits_per_dim(nll, dims),
        seconds=time.perf_counter() - started,
    )
