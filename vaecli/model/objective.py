"""The VAE objective: reconstruction likelihood, KL to the prior, and the negative ELBO."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vaecli.model import logistic
from vaecli.model.gaussian import log_density
from vaecli.model.interface import Draw, VAEModel


def reconstruction_nll(model: VAEModel, output: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """-log p(x|z) per image, summed over pixels, in nats: (B,), or (B, K) for (B, K, C, H, W) outputs."""
    if model.config.likelihood == "logistic":
        # Discrete: x is read on the 8-bit grid, and the sum is -log P(x) of the image's levels.
        nll = -logistic.log_prob(x, output, model.config.mixtures, model.config.rgb_coupling)
    elif model.config.likelihood == "gaussian":
        return -log_density(x, output, model.decoder_logvar.view(-1, 1, 1), event_dims=3)
    else:
        # Bernoulli with continuous targets in [0, 1], as in the original code.
        nll = F.binary_cross_entropy_with_logits(output, x, reduction="none")
    return nll.flatten(-3).sum(-1)


def loss_terms(model: VAEModel, draw: Draw, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The one-sample ELBO's terms from a model's draw: -log p(x|z) per image (B,) and each layer's KL (B, layers),
    in fp32 whatever the forward pass ran in. -ELBO = recon + KL summed over layers (eq. 3)."""
    return reconstruction_nll(model, draw.output.float(), x), draw.kl.float()


def with_free_bits(kls: torch.Tensor, free_bits: float) -> torch.Tensor:
    """The KL the loss pushes down, per image (B,): a layer whose batch-mean KL is under `free_bits` nats
    counts as `free_bits`, with no gradient, so no layer is pushed to collapse (Kingma et al. 2016, eq. 15)."""
    if free_bits <= 0:
        return kls.sum(1)
    return torch.where(kls.mean(0, keepdim=True) > free_bits, kls, torch.full_like(kls, free_bits)).sum(1)


def output_to_image(model: VAEModel, output: torch.Tensor) -> torch.Tensor:
    """The mean of p(x|z) as pixels in [0, 1]: sigmoid of logits, clamped Gaussian means, or the logistic's mean."""
    config = model.config
    if config.likelihood == "logistic":
        return logistic.mean_image(output, config.channels, config.mixtures, config.rgb_coupling)
    if config.likelihood == "gaussian":
        return output.clamp(0.0, 1.0)
    return torch.sigmoid(output)


def sample_output(model: VAEModel, output: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One draw x ~ p(x|z) per decoder output, as pixels in [0, 1] (drawn on the generator's device)."""
    config = model.config
    output = output.float().to(generator.device)
    if config.likelihood == "logistic":
        return logistic.sample_image(output, config.channels, config.mixtures, generator, config.rgb_coupling)
    if config.likelihood == "gaussian":
        std = torch.exp(0.5 * model.decoder_logvar.detach().float().to(generator.device)).view(-1, 1, 1)
        noise = torch.randn(output.shape, generator=generator, device=generator.device)
        return (output + std * noise).clamp(0.0, 1.0)
    return torch.bernoulli(torch.sigmoid(output), generator=generator)


def log_weights(
    model: VAEModel,
    x: torch.Tensor,
    samples: int,
    generator: torch.Generator | None = None,
    decoder: torch.nn.Module | None = None,
    labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """log p(x|z_k) + log p(z_k) - log q(z_k|x) for K joint draws z_k ~ q(z|x) of every layer: (B, K).

    `decoder` replaces the decoder by an equivalent (the model's fast_decoder). A conditional model takes the
    labels (B,): the weights are then those of p(x|y)."""
    batch = x.shape[0]
    noise = model.draw_noise(batch * samples, generator, x.device, x.dtype)
    draw = model(x, noise=noise, labels=labels, samples=samples, decoder=decoder)
    output = draw.output.reshape(batch, samples, *draw.output.shape[1:])  # (B, K, outputs per subpixel x C, H, W)
    # The target is broadcast, not copied K times: (B, 1, C, H, W) against (B, K, C, H, W).
    log_px_z = -reconstruction_nll(model, output, x.unsqueeze(1).expand(batch, samples, *x.shape[1:]))
    return log_px_z + draw.log_ratio.reshape(batch, samples)
