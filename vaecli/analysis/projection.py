"""Posterior means of labelled images, reduced to two coordinates for a scatter, and as CSV."""

from __future__ import annotations

import csv
import io
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from vaecli.analysis.latent import posterior_means
from vaecli.errors import DataError, SettingError
from vaecli.figures.plots import latent_scatter_png

if TYPE_CHECKING:
    from vaecli.data.datasets import ImageSet
    from vaecli.model.interface import VAEModel


@dataclass
class Projection:
    """Two coordinates per image and what they mean."""

    coords: np.ndarray  # float64 (N, 2)
    xlabel: str
    ylabel: str
    explained: tuple[float, float]  # share of the means' total variance along x and y
    class_rows: bool = False  # y is the class index (a 1-D latent), not a latent direction


def project_2d(means: np.ndarray, labels: np.ndarray) -> Projection:
    """PCA to 2-D when the latent has more than two dimensions; the latent itself otherwise.

    A 1-D latent is drawn against the class index, one row per class.
    """
    means = np.asarray(means, dtype=np.float64)
    count, latent = means.shape
    if latent == 1:
        return Projection(
            np.column_stack([means[:, 0], np.asarray(labels, dtype=np.float64)]),
            "z1 (posterior mean; the latent is 1-D)", "class", (1.0, 0.0), class_rows=True,
        )
    if latent == 2:
        shares = _shares(means.var(axis=0), means)
        return Projection(means.copy(), _axis("z1", shares[0]), _axis("z2", shares[1]), shares)
    if count < 2:
        raise SettingError(f"PCA needs at least 2 images, got {count}; raise `limit`")
    # scikit-learn loads here, not at the top: `vae eval`, `vae traverse` and `vae manifold` need only own_labels.
    from sklearn.decomposition import PCA

    pca = PCA(n_components=2, svd_solver="full")
    with warnings.catch_warnings():
        # All-equal means (a collapsed posterior) make sklearn divide 0 by 0; _shares copes.
        warnings.simplefilter("ignore", RuntimeWarning)
        coords = pca.fit_transform(means)
    shares = _shares(pca.explained_variance_ * (count - 1) / count, means)
    return Projection(coords, _axis("PC1", shares[0]), _axis("PC2", shares[1]), shares)


def own_labels(model: VAEModel, data: ImageSet) -> torch.Tensor | None:
    """The split's own labels (int64) as a conditional model reads them; None for an unconditional model."""
    classes = model.config.classes
    if not classes:
        return None
    if len(data) and int(data.labels.max()) >= classes:
        raise DataError(f"these images have labels up to {int(data.labels.max())}, but the model is conditional "
                        f"on {classes} classes (0 to {classes - 1}); give the `dataset` it was trained on")
    return data.labels.to(torch.int64)


def draw_projection(model: VAEModel, data: ImageSet, what: str, seed: int) -> tuple[bytes, Projection, np.ndarray]:
    """Encode every image (with its own label, for a conditional model), project the means to 2-D and draw
    the scatter: (PNG bytes, projection, means)."""
    means = posterior_means(model, data.images, own_labels(model, data)).numpy()
    projection = project_2d(means, data.labels.numpy())
    # A seeded drawing order, so no class sits on top of all the others.
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed)).numpy()
    title = f"Posterior means of {len(data):,} {what} images (latent {means.shape[1]})"
    png = latent_scatter_png(
        projection.coords, data.labels.numpy(), data.class_names, projection.xlabel,
        projection.ylabel, title, order=order, class_rows=projection.class_rows,
    )
    return png, projection, means


def describe_projection(projection: Projection, count: int, what: str) -> str:
    """One line on what the scatter shows: `what` names the images (dataset and split)."""
    kept = sum(projection.explained)
    how = (
        "the latent is 1-D: drawn one row per class" if projection.class_rows
        else f"the two axes hold {100 * kept:.1f}% of the variance"
    )
    return f"encoded {count} {what} images; {how}"


def _shares(variances: np.ndarray, means: np.ndarray) -> tuple[float, float]:
    total = float(means.var(axis=0).sum())
    if not total > 0:
        return (0.0, 0.0)
    return (float(variances[0]) / total, float(variances[1]) / total)


def _axis(name: str, share: float) -> str:
    return f"{name} ({100 * share:.1f}% of variance)"


def class_name(class_names: list[str], label: int) -> str:
    return class_names[label] if 0 <= label < len(class_names) else str(label)


def points_csv(projection: Projection, means: np.ndarray, labels: np.ndarray | torch.Tensor,
               class_names: list[str]) -> bytes:
    """One row per image: index, label, class, x, y, mu_1..mu_d, under a header row."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    latent = means.shape[1]
    writer.writerow(["index", "label", "class", "x", "y", *(f"mu_{i}" for i in range(1, latent + 1))])
    for index, (label, (x, y), mu) in enumerate(zip(labels.tolist(), projection.coords, means, strict=True)):
        # 9 significant digits round-trip a float32 exactly.
        writer.writerow(
            [index, label, class_name(class_names, label), f"{x:.9g}", f"{y:.9g}",
             *(f"{float(v):.9g}" for v in mu)]
        )
    return buffer.getvalue().encode("utf-8")
