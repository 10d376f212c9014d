"""The map: a bounded slice of the test set encoded to posterior means and projected to 2-D as `vae project`
does, with the way back from a point of the plane to a code, and each coordinate's KL as `vae traverse` ranks it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from vaecli.analysis.latent import posterior_means
from vaecli.analysis.projection import own_labels, project_2d
from vaecli.analysis.traversal import kl_order, pca_plane, split_kl_per_dim
from vaecli.data.datasets import ImageSet
from vaecli.data.images import png_bytes
from vaecli.figures.plots import class_style
from vaecli.store.checkpoint import Checkpoint
from vaecli.training.evaluate import ACTIVE_UNIT_NATS

MIN_SPREAD, MAX_SPREAD = 3.0, 10.0  # sliders reach 3 prior deviations each way, further when the test codes do


@dataclass
class Atlas:
    """The test images' points on the plane, the plane's axes in the latent space, and the KL per coordinate."""

    coords: np.ndarray  # float64 (N, 2): the x and y of `vae project`'s `points` CSV
    labels: list[int]
    class_names: list[str]
    xlabel: str
    ylabel: str
    images: torch.Tensor  # uint8 (N, C, H, W): what hovering a dot shows
    kl_per_dim: list[float]  # average KL(q(z_d|x) || N(0, 1)) on the first kl_images test images
    origin: np.ndarray  # float64 (latent,): the plane's centre (the means' mean for PCA, else 0)
    axes: np.ndarray  # float64 (2, latent): the plane's unit directions; a 1-D latent has only the first
    spread: float  # the sliders' half-range

    def code_at(self, point: tuple[float, float]) -> list[float]:
        """The code at a point of the plane: the PCA plane's inverse (the point itself for a 2-D latent; a 1-D
        latent's x alone, its y being the class)."""
        steps = np.array(point[: len(self.axes)], dtype=np.float64)
        return (self.origin + steps @ self.axes).astype(np.float32).tolist()

    def point_of(self, code: list[float], label: int | None) -> list[float]:
        """Where a code lies on the plane (a 1-D latent's y is its class, 0 without one)."""
        where = (np.asarray(code, dtype=np.float64) - self.origin) @ self.axes.T
        return [float(where[0]), float(label or 0)] if len(self.axes) == 1 else [float(v) for v in where]

    def png(self, index: int) -> bytes:
        return png_bytes(self.images[index])

    def as_json(self) -> dict:
        order = kl_order(self.kl_per_dim)
        return {
            "points": [[round(float(x), 5), round(float(y), 5), label]
                       for (x, y), label in zip(self.coords, self.labels, strict=True)],
            "class_names": self.class_names, "xlabel": self.xlabel, "ylabel": self.ylabel,
            "colours": [class_style(index)[0] for index in range(max([*self.labels, len(self.class_names) - 1]) + 1)],
            "kl": [round(value, 5) for value in self.kl_per_dim], "order": order,
            "active": [d for d in order if self.kl_per_dim[d] > ACTIVE_UNIT_NATS], "spread": self.spread,
        }


def build_atlas(checkpoint: Checkpoint, data: ImageSet, kl_images: int) -> Atlas:
    """Encode `data` (each image with its own label, for a conditional model) and project it as `vae project`
    does; rank the coordinates by KL on its first `kl_images` images as `vae traverse` does."""
    model = checkpoint.model
    means = posterior_means(model, data.images, own_labels(model, data)).numpy()
    projection = project_2d(means, data.labels.numpy())
    origin, axes = _plane(means, projection.class_rows)
    first = slice(0, kl_images)
    kl = split_kl_per_dim(checkpoint, ImageSet(data.images[first], data.labels[first], data.class_names))
    spread = min(MAX_SPREAD, max(MIN_SPREAD, math.ceil(float(np.abs(means).max(initial=0.0)))))
    return Atlas(projection.coords, [int(v) for v in data.labels.tolist()], list(data.class_names),
                 projection.xlabel, projection.ylabel, data.images, kl, origin, axes, spread)


def _plane(means: np.ndarray, class_rows: bool) -> tuple[np.ndarray, np.ndarray]:
    """(origin, axes) of the plane project_2d drew: the latent itself up to 2-D, else the same PCA's plane."""
    latent = means.shape[1]
    if latent <= 2:
        return np.zeros(latent), np.eye(latent)[: 1 if class_rows else 2]
    plane = pca_plane(torch.from_numpy(means), 2)  # sklearn's PCA as project_2d fits it: the same axes
    return plane.origin.numpy(), plane.axes.numpy()
