"""Latent traversals and manifold grids: which dimensions carry information, and codes laid out to decode.

A traversal holds every coordinate of a base code fixed but one, which is swept over a range; the
dimensions are ordered by their average KL on test images, so the informative ones come first.
A manifold grid lays codes over a plane: the latent itself when it is 2-D (at evenly spaced
quantiles of the prior, Kingma and Welling 2014, Fig. 4), else the plane of the test codes' first
two principal axes through their mean.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from vaecli.analysis.latent import decode_to_pixels, label_tensor
from vaecli.analysis.projection import own_labels
from vaecli.data.datasets import eval_pixels
from vaecli.data.images import GRID_PAD_VALUE, make_grid, there_and_back
from vaecli.errors import SettingError
from vaecli.figures.plots import manifold_png, traversal_png
from vaecli.training.evaluate import ACTIVE_UNIT_NATS, elbo_summary

if TYPE_CHECKING:
    from vaecli.data.datasets import ImageSet
    from vaecli.model.interface import VAEModel
    from vaecli.model.prior import MixturePrior
    from vaecli.store.checkpoint import Checkpoint

PLANE_SPREAD = 2.0  # the PCA plane spans this many standard deviations of the codes each way
QUANTILE_BISECTIONS = 60  # halvings of the bracket when inverting a mixture's marginal CDF


def split_kl_per_dim(checkpoint: Checkpoint, data: ImageSet) -> list[float]:
    """Average KL(q(z_d|x) || N(0, 1)) of each latent dimension over `data`, as the model is tested on it
    (a conditional model encodes each image with its own label)."""
    model = checkpoint.model
    device = next(model.parameters()).device
    labels = own_labels(model, data)
    pixels = eval_pixels(checkpoint.config, data, device)
    kl_per_dim = elbo_summary(model, pixels, labels=None if labels is None else labels.to(device)).kl_per_dim
    assert kl_per_dim is not None  # elbo_summary always measures it
    return list(kl_per_dim)


def kl_order(kl_per_dim: list[float], active_only: bool = False) -> list[int]:
    """Dimensions (0-based) by average KL, largest first, so inactive ones come last or, if asked, not at all."""
    order = sorted(range(len(kl_per_dim)), key=lambda d: (-kl_per_dim[d], d))
    if active_only:
        order = [d for d in order if kl_per_dim[d] > ACTIVE_UNIT_NATS]
    return order


def sweep_values(low: float, high: float, steps: int) -> torch.Tensor:
    """`steps` values evenly spaced from low to high, both ends included."""
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise SettingError(f"`range={low:g} {high:g}`: give two finite numbers, the lower first")
    if steps < 2:
        raise SettingError(f"`steps` must be 2 or more, not {steps}")
    return torch.linspace(low, high, steps)


def sweep_codes(bases: torch.Tensor, dims: list[int], values: torch.Tensor) -> torch.Tensor:
    """Codes (dims, bases, steps, latent): each base with coordinate d set to each value in turn."""
    codes = bases.float().reshape(1, len(bases), 1, -1).repeat(len(dims), 1, len(values), 1)
    for row, d in enumerate(dims):
        codes[row, :, :, d] = values
    return codes


def traversal_cells(decoded: torch.Tensor) -> torch.Tensor:
    """Decoded (dims, bases, steps, C, H, W) as grid cells, a row per dimension: each base's sweep side by
    side, a blank (padding-grey) cell between two bases."""
    dims, bases, steps = decoded.shape[:3]
    blank = torch.full((dims, 1, *decoded.shape[3:]), GRID_PAD_VALUE, dtype=decoded.dtype)
    rows = []
    for b in range(bases):
        rows += [decoded[:, b]] + ([blank] if b < bases - 1 else [])
    return torch.cat(rows, dim=1).reshape(-1, *decoded.shape[3:])


def traversal_frames(decoded: torch.Tensor) -> torch.Tensor:
    """Decoded (dims, bases, steps, C, H, W) as GIF frames: frame s tiles every (base, dimension) at step s,
    a row per base, then back again so the loop has no jump."""
    dims, bases, steps = decoded.shape[:3]
    frames = [
        torch.from_numpy(make_grid(decoded[:, :, s].transpose(0, 1).reshape(-1, *decoded.shape[3:]), nrow=dims))
        for s in range(steps)
    ]
    return torch.stack(there_and_back(frames))


def traversal_captions(values: torch.Tensor) -> list[str]:
    """Each of traversal_frames' frames' caption: the value every swept coordinate has in it."""
    return there_and_back([f"swept coordinate = {value:g}" for value in values.tolist()])


@dataclass
class Plane:
    """Codes on a size x size grid over a plane of the latent space, and what its axes mean."""

    codes: torch.Tensor  # (size * size, latent), row by row from the top left; y grows upward
    x: list[float]  # each column's coordinate along the horizontal axis
    y: list[float]  # each row's coordinate along the vertical axis, top row first
    xlabel: str
    ylabel: str
    origin: torch.Tensor  # (latent,) the plane's centre
    axes: torch.Tensor  # (2, latent) unit directions of x and y

    def coordinates(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes (N, latent) projected onto the plane: (N, 2) in the units of x and y."""
        return (codes.double() - self.origin.double()) @ self.axes.double().T


def quantiles(size: int) -> torch.Tensor:
    """The (i + 0.5) / size quantiles of N(0, 1), i = 0..size-1 (Kingma and Welling 2014, Fig. 4)."""
    levels = (torch.arange(size, dtype=torch.float64) + 0.5) / size
    return torch.special.ndtri(levels)


def prior_plane(model: VAEModel, size: int) -> Plane:
    """A 2-D latent's grid at evenly spaced quantiles of each axis's prior marginal.

    For N(0, I) these are N(0, 1)'s quantiles; for a fitted mixture, its marginal CDF along each
    axis is inverted numerically, so each column and row again holds an equal share of the prior.
    """
    if model.config.latent_dim != 2:
        raise SettingError(f"the prior plane needs a 2-D latent, not {model.config.latent_dim}-D")
    levels = (torch.arange(size, dtype=torch.float64) + 0.5) / size
    if model.prior is None:
        x = y = quantiles(size)
        label = "z{} (N(0, 1) quantiles)"
    else:
        x, y = (_mixture_quantiles(model.prior, axis, levels) for axis in (0, 1))
        label = "z{} (quantiles of the fitted prior)"
    return _grid(x, y.flip(0), torch.zeros(2, dtype=torch.float64), torch.eye(2, dtype=torch.float64),
                 label.format(1), label.format(2))


def _mixture_quantiles(prior: MixturePrior, axis: int, levels: torch.Tensor) -> torch.Tensor:
    """The mixture's marginal quantiles along one axis, by bisection on its CDF sum_c w_c Phi((z - m_c) / s_c)."""
    weights = prior.log_weights.double().cpu().softmax(0)
    means = prior.means.double().cpu()[:, axis]
    factor = prior.precision_cholesky.double().cpu()
    covariance = torch.cholesky_inverse(factor, upper=True)  # (U U^T)^-1, U upper triangular
    spread = covariance[:, axis, axis].clamp_min(1e-30).sqrt()
    low = torch.full_like(levels, float((means - 40 * spread).min()))
    high = torch.full_like(levels, float((means + 40 * spread).max()))
    for _ in range(QUANTILE_BISECTIONS):
        middle = (low + high) / 2
        cdf = (weights * torch.special.ndtr((middle.unsqueeze(1) - means) / spread)).sum(1)
        below = cdf < levels
        low, high = torch.where(below, middle, low), torch.where(below, high, middle)
    return (low + high) / 2


def pca_plane(codes: torch.Tensor, size: int) -> Plane:
    """The plane of the codes' first two principal axes through their mean, PLANE_SPREAD deviations each way."""
    # scikit-learn loads here, not at the top: `vae traverse` imports this module and never needs it.
    from sklearn.decomposition import PCA

    if len(codes) < 3:
        raise SettingError(f"the principal plane needs at least 3 test images, got {len(codes)}; raise `limit`")
    pca = PCA(n_components=2, svd_solver="full")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-equal codes: 0 / 0 in the variance shares
        pca.fit(np.asarray(codes, dtype=np.float64))
    deviations = np.sqrt(np.maximum(pca.explained_variance_, 0.0))
    shares = np.nan_to_num(pca.explained_variance_ratio_)
    x, y = (torch.linspace(-PLANE_SPREAD, PLANE_SPREAD, size, dtype=torch.float64) * float(s) for s in deviations)
    return _grid(x, y.flip(0), torch.from_numpy(pca.mean_), torch.from_numpy(pca.components_),
                 f"PC1 of the test codes ({100 * shares[0]:.1f}% of variance)",
                 f"PC2 ({100 * shares[1]:.1f}% of variance)")


def _grid(x: torch.Tensor, y: torch.Tensor, origin: torch.Tensor, axes: torch.Tensor, xlabel: str,
          ylabel: str) -> Plane:
    """origin + x_j a_1 + y_i a_2 for every row i (top first) and column j."""
    rows, columns = torch.meshgrid(y, x, indexing="ij")
    codes = origin + columns.reshape(-1, 1) * axes[0] + rows.reshape(-1, 1) * axes[1]
    return Plane(codes.float(), x.tolist(), y.tolist(), xlabel, ylabel, origin, axes)


def decode_traversal(model: VAEModel, bases: torch.Tensor, dims: list[int], values: torch.Tensor,
                     label: int | None = None) -> torch.Tensor:
    """The decoded sweeps: uint8 (dims, bases, steps, C, H, W); a conditional model decodes every code with `label`."""
    codes = sweep_codes(bases, dims, values).reshape(-1, bases.shape[-1])
    pixels = decode_to_pixels(model, codes, labels=label_tensor(label, len(codes)))
    return pixels.reshape(len(dims), len(bases), len(values), *pixels.shape[1:])


def traversal_figure(decoded: torch.Tensor, dims: list[int], kl_per_dim: list[float], values: torch.Tensor,
                     title: str) -> bytes:
    """The sweeps as one labelled PNG: a row per dimension (its number and KL), a column per value."""
    bases, steps = decoded.shape[1:3]
    columns = bases * steps + bases - 1
    tile = make_grid(traversal_cells(decoded), nrow=columns)
    row_labels = [f"z{d + 1}  KL {kl_per_dim[d]:.2f}" for d in dims]
    one = [f"{v:g}" for v in values.tolist()]
    column_labels = (one + [""]) * (bases - 1) + one
    return traversal_png(tile, row_labels, column_labels, title)


def manifold_figure(model: VAEModel, plane: Plane, title: str, data: ImageSet | None = None,
                    codes: torch.Tensor | None = None, label: int | None = None) -> bytes:
    """The plane's decoded grid as a PNG (every code decoded with `label` for a conditional model);
    with `data` and its `codes`, their scatter in the plane beside it."""
    pixels = decode_to_pixels(model, plane.codes, labels=label_tensor(label, len(plane.codes)))
    tile = make_grid(pixels, nrow=len(plane.x))
    if data is None or codes is None:
        return manifold_png(tile, plane, title)
    return manifold_png(tile, plane, title, plane.coordinates(codes).numpy(), data.labels.numpy(), data.class_names)


def plane_for(model: VAEModel, size: int, codes: torch.Tensor | None) -> Plane:
    """The prior's quantile grid for a 2-D latent, else the principal plane of `codes` (needed then)."""
    latent = model.config.latent_dim
    if latent == 1:
        raise SettingError("the latent is 1-D: there is no plane to lay a grid over; use `vae traverse`")
    if latent == 2:
        return prior_plane(model, size)
    if codes is None:
        raise SettingError(f"a {latent}-D latent's plane comes from test codes; none were given")
    return pca_plane(codes, size)
