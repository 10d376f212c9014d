"""Per-image scores of how well a model explains each image: likelihoods and OOD-corrected variants.

Every score is in nats per image and "higher = more unusual": a larger value means the model finds
the image less typical of its training data.
"""

from __future__ import annotations

import io
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from vaecli.analysis.latent import to_uint8
from vaecli.config import ModelConfig
from vaecli.model.interface import VAEModel
from vaecli.model.objective import loss_terms, reconstruction_nll
from vaecli.runtime.memory import check_fits, model_bytes
from vaecli.training.evaluate import default_rows, iw_nll_seeded

ELBO_PARTS = ("elbo", "recon", "kl")
PNG_LEVEL = 9
ELBO_BATCH = 1000  # images per pass for the one-sample -ELBO, as `vae eval` uses
REGRET_BATCH = 256  # images refitted together; each has its own (mu, logvar), so batching changes nothing
REGRET_EVAL_SAMPLES = 16  # common noise draws for the -ELBO before and after the refit


@dataclass
class ScoreSettings:
    """How the scores are estimated; each score draws its noise from its own generator seeded by `seed`."""

    iw_samples: int = 100  # K for nll (and complexity, which starts from it)
    seed: int = 0
    rows: int | None = None  # images x samples decoded per pass for nll; None: evaluate's default
    regret_steps: int = 50  # Adam steps on each image's (mu, logvar)
    regret_lr: float = 0.05  # Adam's step size for the refit


def png_code_nats(images: torch.Tensor) -> torch.Tensor:
    """Length of each uint8 (N, C, H, W) image as a PNG file (Pillow, compress_level 9), in nats: (N,)."""
    lengths = []
    for pixels in images.cpu().numpy():
        array = np.ascontiguousarray(pixels[0] if pixels.shape[0] == 1 else pixels.transpose(1, 2, 0))
        buffer = io.BytesIO()
        Image.fromarray(array, mode="L" if pixels.shape[0] == 1 else "RGB").save(
            buffer, format="PNG", compress_level=PNG_LEVEL)
        lengths.append(len(buffer.getvalue()) * 8 * math.log(2))
    return torch.tensor(lengths, dtype=torch.float64)


def _generator(device: torch.device, seed: int) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


@torch.no_grad()
def elbo_parts(model: VAEModel, pixels: torch.Tensor, seed: int) -> dict[str, torch.Tensor]:
    """One-sample -log p(x|z) and KL(q(z|x) || p(z)) per image (every layer's, summed), and their sum -ELBO
    (eq. 3): (N,) each. The KL is exact for N(0, I) and a one-sample estimate for a fitted mixture, as in `vae eval`."""
    generator = _generator(pixels.device, seed)
    recon, kl = [], []
    for x in pixels.split(ELBO_BATCH):
        noise = torch.randn((x.shape[0], model.noise_dims), generator=generator, device=x.device, dtype=x.dtype)
        image_recon, kls = loss_terms(model, model(x, noise=noise), x)
        recon.append(image_recon.double().cpu())
        kl.append(kls.sum(1).double().cpu())
    recon_t, kl_t = torch.cat(recon), torch.cat(kl)
    return {"recon": recon_t, "kl": kl_t, "elbo": recon_t + kl_t}


def neg_elbo_at(model: VAEModel, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor,
                eps: torch.Tensor) -> torch.Tensor:
    """-ELBO of images x (B, C, H, W) under q = N(mu, exp(logvar)) of a one-layer model's z, averaged over noise
    eps (B, M, L): (B,)."""
    batch, draws, latent = eps.shape
    z = mu.unsqueeze(1) + eps * torch.exp(0.5 * logvar).unsqueeze(1)  # (B, M, L)
    output = model.decode(z.reshape(batch * draws, latent))
    # A logistic decoder gives several outputs per subpixel: keep its channel count, not the image's.
    output = output.reshape(batch, draws, *output.shape[1:])
    recon = reconstruction_nll(model, output, x.unsqueeze(1).expand(batch, draws, *x.shape[1:])).mean(1)
    kl, _ = model.top_terms(z, mu.unsqueeze(1), logvar.unsqueeze(1))  # (B, 1) exact, or (B, M) at the draws
    return recon + kl.mean(1)


def likelihood_regret(
    model: VAEModel,
    pixels: torch.Tensor,
    settings: ScoreSettings,
    on_progress: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """-ELBO with the encoder's (mu, logvar) minus the lowest -ELBO refitting them to each image alone reaches: (N,).

    Likelihood regret (Xiao et al. 2020) refits the whole encoder per image; this batched variant
    optimizes each image's own (mu, logvar) by Adam for `regret_steps` steps, with the model fixed,
    starting from the encoder's, and keeps the best fit seen, so the regret is never negative."""
    generator = _generator(pixels.device, settings.seed)
    out = []
    for x in pixels.split(REGRET_BATCH):
        out.append(_regret_batch(model, x, settings, generator).double().cpu())
        if on_progress is not None:
            on_progress(x.shape[0])
    return torch.cat(out) if out else torch.empty(0, dtype=torch.float64)


def _regret_batch(model: VAEModel, x: torch.Tensor, settings: ScoreSettings,
                  generator: torch.Generator) -> torch.Tensor:
    with torch.no_grad():
        mu0, logvar0 = model.encode(x)
        # The same draws score every fit, so the comparison is not swamped by Monte Carlo noise.
        eps = torch.randn((*mu0.shape[:1], REGRET_EVAL_SAMPLES, mu0.shape[1]), generator=generator,
                          device=mu0.device, dtype=mu0.dtype)
        before = neg_elbo_at(model, x, mu0, logvar0, eps)
    # Adam on one-draw gradients wanders around a fit that is already good for typical images; the best
    # fit seen (the encoder's included) is what the refit gained, never a loss.
    best = before.clone()
    mu, logvar = mu0.clone().requires_grad_(True), logvar0.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([mu, logvar], lr=settings.regret_lr)
    for _ in range(settings.regret_steps):
        noise = torch.randn((mu.shape[0], 1, mu.shape[1]), generator=generator, device=mu.device, dtype=mu.dtype)
        # Each image's loss depends only on its own row of (mu, logvar), and Adam is elementwise,
        # so one summed loss refits every image independently.
        loss = neg_elbo_at(model, x, mu, logvar, noise).sum()
        mu.grad, logvar.grad = torch.autograd.grad(loss, [mu, logvar])
        optimizer.step()
        with torch.no_grad():
            best = torch.minimum(best, neg_elbo_at(model, x, mu, logvar, eps))
    return before - best


def score_images(
    model: VAEModel,
    pixels: torch.Tensor,
    names: tuple[str, ...],
    settings: ScoreSettings,
    on_progress: Callable[[int], None] | None = None,
    seconds: dict[str, float] | None = None,
) -> dict[str, torch.Tensor]:
    """The requested scores (config.SCORE_NAMES) of images in [0, 1] (N, C, H, W), each (N,) float64 in nats.

    on_progress is called with images done, once per pass of each costly score; `seconds` receives
    each computation's wall time (complexity's is the PNG coding alone, on top of nll's)."""
    was_training = model.training
    model.eval()
    timer = _Timer(seconds if seconds is not None else {})
    try:
        scores: dict[str, torch.Tensor] = {}
        if "nll" in names or "complexity" in names:
            with timer("nll"):
                scores["nll"] = iw_nll_seeded(model, pixels, settings.iw_samples, settings.seed, on_progress,
                                              settings.rows)
        if "complexity" in names:
            with timer("complexity"):  # the code length of the exact 8-bit image the model was given
                scores["complexity"] = scores["nll"] - png_code_nats(to_uint8(pixels))
        if any(name in names for name in ELBO_PARTS):
            with timer("elbo"):
                scores.update(elbo_parts(model, pixels, settings.seed))
        if "regret" in names:
            with timer("regret"):
                scores["regret"] = likelihood_regret(model, pixels, settings, on_progress)
    finally:
        model.train(was_training)
    return {name: scores[name] for name in names}


class _Timer:
    """`with timer(name):` adds the block's wall time to seconds[name]."""

    def __init__(self, seconds: dict[str, float]):
        self.seconds = seconds

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        yield
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started


def progress_total(count: int, names: tuple[str, ...]) -> int:
    """Units of work score_images reports for `count` images and these scores."""
    passes = int("nll" in names or "complexity" in names) + int("regret" in names)
    return count * passes


# --- scores: images x importance samples decoded per pass -------------------------------------------------


def scoring_passes(config: ModelConfig, names: tuple[str, ...], rows: int, samples: int,
                   images: int | None) -> dict[str, tuple[int, int]]:
    """{pass: (rows, peak bytes)} of the passes that scoring `images` images (None: not known yet) makes.

    nll decodes images x samples rows per pass, at most `rows`; the -ELBO's parts and regret decode
    their own batches, regret's refit with gradients."""
    passes = {}
    if "nll" in names or "complexity" in names:
        nll_rows = rows if images is None else max(1, min(rows, samples * images))
        passes["nll"] = nll_rows, model_bytes(config, nll_rows, training=False)
    if any(name in ELBO_PARTS for name in names):
        batch = min(images or ELBO_BATCH, ELBO_BATCH)
        passes["elbo"] = batch, model_bytes(config, batch, training=False)
    if "regret" in names:
        batch = min(images or REGRET_BATCH, REGRET_BATCH)
        refit = max(model_bytes(config, batch * REGRET_EVAL_SAMPLES, training=False),
                    model_bytes(config, batch, training=True))
        passes["regret"] = batch, refit
    return passes


def check_scoring_fits(config: ModelConfig, device: torch.device, names: tuple[str, ...], samples: int,
                       rows: int | None, images: int | None) -> None:
    """Refuse, before any image is read, scores whose largest pass cannot fit, naming the setting to lower."""
    rows = rows or default_rows(device)
    passes = scoring_passes(config, names, rows, samples, images)
    if not passes:
        return
    name = max(passes, key=lambda key: passes[key][1])
    count, needed = passes[name]
    if name == "nll":
        what = f"decoding {count:,} rows (images x `iw_samples`) per pass"
        fix = "lower `decode_rows`" if count == rows else "lower `iw_samples` or `decode_rows`"
    elif name == "elbo":
        what, fix = f"the -ELBO of {count:,} images per pass", "lower `limit`, or leave out elbo, recon and kl"
    else:
        what, fix = f"refitting {count:,} images per pass for regret", "lower `limit`, or leave out regret"
    check_fits(needed, device, what, fix)
