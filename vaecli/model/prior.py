"""The prior p(z): N(0, I), or a mixture of full-covariance Gaussians fitted to the codes of the data."""

from __future__ import annotations

import math

import torch
from torch import nn

from vaecli.model.gaussian import LOG_2PI


class MixturePrior(nn.Module):
    """p(z) = sum_c w_c N(z; m_c, S_c), each S_c given by its precision's Cholesky factor.

    The factor U_c (upper triangular, S_c^-1 = U_c U_c^T) whitens: ||(z - m_c) U_c||^2 is the
    Mahalanobis distance, so the density of many codes under every component is one matmul.
    """

    # Registered buffers: declared so a type checker sees tensors, not nn.Module.__getattr__'s union.
    log_weights: torch.Tensor  # (C,)
    means: torch.Tensor  # (C, latent)
    precision_cholesky: torch.Tensor  # (C, latent, latent)

    def __init__(self, components: int, latent_dim: int):
        super().__init__()
        self.register_buffer("log_weights", torch.full((components,), -math.log(components)))
        self.register_buffer("means", torch.zeros(components, latent_dim))
        identities = torch.zeros(components, latent_dim, latent_dim)
        # Not torch.eye: on the meta device (checkpoint loading) it imports sympy, a second of start-up.
        identities.diagonal(dim1=-2, dim2=-1).fill_(1.0)
        self.register_buffer("precision_cholesky", identities)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z) for codes (..., latent): (...)."""
        flat = z.reshape(-1, self.means.shape[1]).to(self.means.dtype)
        return torch.logsumexp(_component_log_probs(flat, self), dim=-1).reshape(z.shape[:-1])

    def sample(self, count: int, temperature: float, generator: torch.Generator) -> torch.Tensor:
        """`count` codes (on the CPU); each component's spread is scaled by the temperature.

        One normal row per code picks the component and the offset, so the first k codes do not
        depend on count.
        """
        components, latent = self.means.shape
        draws = prefix_stable_normal(count, latent + 1, generator).double()
        uniform = 0.5 * (1 + torch.erf(draws[:, 0] / math.sqrt(2)))  # the normal CDF
        cumulative = self.log_weights.double().cpu().softmax(0).cumsum(0)
        picked = torch.searchsorted(cumulative, uniform.unsqueeze(1)).squeeze(1).clamp(max=components - 1)
        factor = self.precision_cholesky.double().cpu()[picked]  # (N, L, L)
        # A row r with r U = y has covariance U^-T U^-1 = S when y ~ N(0, I).
        offsets = torch.linalg.solve_triangular(factor, draws[:, 1:].unsqueeze(1), upper=True, left=False)
        return (self.means.double().cpu()[picked] + temperature * offsets.squeeze(1)).float()


# How far the log weights' logsumexp may be from 0: float32 rounding of thousands of weights is ~1e-6.
WEIGHT_SUM_TOLERANCE = 1e-3
TRIANGLE_TOLERANCE = 1e-4  # entries below a factor's diagonal, relative to its largest: rounding only


def mixture_problem(prior: MixturePrior) -> str | None:
    """Why these buffers are not a mixture density (weights that sum to 1, factors with a positive diagonal), or None.

    A damaged factor would otherwise surface as black samples or an infinite KL, far from its cause.
    """
    total = float(torch.logsumexp(prior.log_weights.double(), 0))
    if not abs(total) <= WEIGHT_SUM_TOLERANCE:
        return f"its component weights do not sum to 1 (log of the sum: {total:.3g})"
    factors = prior.precision_cholesky.double()
    diagonal = factors.diagonal(dim1=-2, dim2=-1)
    if not bool(((diagonal > 0) & torch.isfinite(diagonal)).all()):
        return "a component's precision factor has a zero, negative or infinite diagonal entry"
    # log_prob multiplies by the whole factor and sample solves with its upper triangle: only a
    # triangular factor makes the two agree, and only then does its diagonal give the determinant.
    below = factors.tril(-1).abs().amax(dim=(-2, -1))
    if bool((below > TRIANGLE_TOLERANCE * diagonal.amax(dim=-1)).any()):
        return "a component's precision factor is not upper triangular"
    return None


def prefix_stable_normal(count: int, width: int, generator: torch.Generator) -> torch.Tensor:
    """N(0, 1) draws (count, width) on the CPU whose first k rows do not depend on count.

    torch fills normal tensors 16 values at a time, with another method for a tail: rows padded
    to a multiple of 16 keep every row's values the same whatever count is.
    """
    padded = -(-width // 16) * 16
    return torch.randn((count, padded), generator=generator)[:, :width]


def fit_mixture(
    codes: torch.Tensor, components: int, seed: int, tolerance: float = 1e-3, max_iterations: int = 300
) -> MixturePrior:
    """Maximum-likelihood mixture of `components` Gaussians for codes (N, latent), by EM from k-means++ seeds.

    Stops when an iteration raises the average log-likelihood by less than `tolerance` nats.
    """
    # Kept over sklearn.mixture.GaussianMixture (full covariances, the same EM), measured by
    # `python benchmarks/prior_fit_em.py` (bundled mnist, 20,000 codes of 10,000 training images,
    # 50 components, one thread each, seeds 0 and 1; sklearn 1.9.1, torch 2.14.1): sklearn took
    # 1.06x and 3.39x the CPU time (1.9x and 2.7x per iteration) for the same fit: training
    # log-likelihood +0.05 and +0.02 nats/code, test KL -0.07 and +0.02 nats, within the spread
    # between seeds of either fit (0.03 to 0.06 and up to 0.15). sklearn loops over the components
    # in Python, one (N, L) product each; here all components are one matmul per pass.
    x = codes.detach().double().cpu()
    generator = torch.Generator().manual_seed(seed)
    means = _kmeans(x, _kmeans_plus_plus(x, components, generator))
    responsibilities = torch.nn.functional.one_hot(torch.cdist(x, means).argmin(1), components).double()
    prior = MixturePrior(components, x.shape[1]).double()
    previous = -math.inf
    for _ in range(max_iterations):
        _maximize(prior, x, responsibilities)
        log_probs = torch.cat([_component_log_probs(rows, prior) for rows in x.split(FIT_ROWS)])
        totals = torch.logsumexp(log_probs, dim=1, keepdim=True)
        responsibilities = (log_probs - totals).exp()
        average = float(totals.mean())
        if average - previous < tolerance:
            break
        previous = average
    return prior.float()


# Codes per pass: bounds the (rows, C, latent) and (rows, latent^2) temporaries. Kept under glibc's
# 32 MB mmap ceiling for the usual sizes, they are reused instead of mapped and faulted in afresh:
# 8192 rows spent more time in the kernel than in EM (50 Gaussians, 120,000 codes: 90 s, 30 s now).
FIT_ROWS = 2048
COVARIANCE_FLOOR = 1e-5  # added to every variance, so no component collapses onto a few codes


def _kmeans_plus_plus(x: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    """Seeds spread over the data: each next one drawn with probability proportional to its squared distance."""
    chosen = [int(torch.randint(x.shape[0], (1,), generator=generator))]
    distances = (x - x[chosen[0]]).square().sum(1)
    for _ in range(count - 1):
        weights = distances if float(distances.sum()) > 0 else torch.ones_like(distances)
        chosen.append(int(torch.multinomial(weights, 1, generator=generator)))
        distances = torch.minimum(distances, (x - x[chosen[-1]]).square().sum(1))
    return x[chosen].clone()


def _kmeans(x: torch.Tensor, means: torch.Tensor, iterations: int = 10) -> torch.Tensor:
    """A few Lloyd steps; a centre left without codes stays where it was."""
    for _ in range(iterations):
        nearest = torch.cdist(x, means).argmin(1)
        sums = torch.zeros_like(means).index_add_(0, nearest, x)
        counts = torch.bincount(nearest, minlength=means.shape[0]).unsqueeze(1)
        means = torch.where(counts > 0, sums / counts.clamp(min=1), means)
    return means


def _maximize(prior: MixturePrior, x: torch.Tensor, responsibilities: torch.Tensor) -> None:
    """The M-step: weights, means and covariances from the codes' responsibilities."""
    n, latent = x.shape
    mass = responsibilities.sum(0) + 10 * torch.finfo(x.dtype).eps  # (C,)
    means = responsibilities.T @ x / mass.unsqueeze(1)
    second = torch.zeros(mass.shape[0], latent * latent, dtype=x.dtype)
    for rows, weights in zip(x.split(FIT_ROWS), responsibilities.split(FIT_ROWS), strict=True):
        second += weights.T @ (rows.unsqueeze(2) * rows.unsqueeze(1)).reshape(rows.shape[0], -1)
    covariances = second.view(-1, latent, latent) / mass.view(-1, 1, 1) - means.unsqueeze(2) * means.unsqueeze(1)
    covariances = covariances + COVARIANCE_FLOOR * torch.eye(latent, dtype=x.dtype)
    lower = torch.linalg.cholesky(covariances)
    identity = torch.eye(latent, dtype=x.dtype).expand_as(lower)
    prior.precision_cholesky.copy_(torch.linalg.solve_triangular(lower, identity, upper=False).mT)
    prior.means.copy_(means)
    prior.log_weights.copy_((mass / n).log())


def _component_log_probs(x: torch.Tensor, prior: MixturePrior) -> torch.Tensor:
    """log w_c + log N(x_i; m_c, S_c) for every code and component: (N, C)."""
    components, latent = prior.means.shape
    # (N, L) @ (L, C*L) -> (N, C, L); minus each mean pushed through its own factor.
    factors = prior.precision_cholesky.permute(1, 0, 2).reshape(latent, components * latent)
    shifts = torch.einsum("cl,clk->ck", prior.means, prior.precision_cholesky)
    whitened = (x @ factors).view(-1, components, latent) - shifts
    log_dets = prior.precision_cholesky.diagonal(dim1=-2, dim2=-1).log().sum(-1)
    return prior.log_weights + log_dets - 0.5 * (whitened.square().sum(-1) + latent * LOG_2PI)
