"""Training in motion (under `snapshots`): the same latent points and test images, decoded as
training goes on, one captioned frame each time, as an animated GIF."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image, ImageDraw

from vaecli.analysis.latent import decode_to_pixels, reconstruct_pixels
from vaecli.data.images import gif_bytes, make_grid
from vaecli.model.interface import VAEModel

SAMPLES = 16  # fixed draws from N(0, I): two rows of the frame
RECONSTRUCTIONS = 8  # fixed test images: a row of originals above a row of their reconstructions
COLUMNS = 8
# Fractions of the first epoch with a frame of their own: most of the change happens there.
FIRST_EPOCH_POINTS = (0.0, 0.1, 0.25, 0.5)
FRAME_MS, LAST_FRAME_MS = 500, 2000
CAPTION_PX = 12  # the bitmap font's line


@dataclass
class Evolution:
    """What every frame shows (fixed codes and test images) and the frames taken so far."""

    codes: torch.Tensor  # (SAMPLES, latent) from N(0, I)
    originals: torch.Tensor  # uint8 (RECONSTRUCTIONS, C, H, W)
    # A conditional model's: the samples' labels cycle through the classes; the test images keep theirs.
    code_labels: torch.Tensor | None = None
    original_labels: torch.Tensor | None = None
    frames: list[np.ndarray] = field(default_factory=list)  # uint8 (C, H, W) arrays, caption included
    epochs: list[float] = field(default_factory=list)

    @classmethod
    def start(cls, latent_dim: int, test_images: torch.Tensor, seed: int, test_labels: torch.Tensor | None = None,
              classes: int = 0) -> Evolution:
        """The codes come from their own generator: the training run's random stream is untouched."""
        generator = torch.Generator().manual_seed(seed)
        codes = torch.randn((SAMPLES, latent_dim), generator=generator)
        if not classes:
            return cls(codes, test_images[:RECONSTRUCTIONS].cpu())
        if test_labels is None:
            raise ValueError("a conditional model's snapshots need the test images' labels")
        return cls(codes, test_images[:RECONSTRUCTIONS].cpu(), torch.arange(SAMPLES) % classes,
                   test_labels[:RECONSTRUCTIONS].cpu().long())

    @torch.no_grad()
    def take(self, model: VAEModel, epoch: float) -> None:
        """A frame of the model as it is now (decoded in eval mode, its training mode restored)."""
        was_training = model.training
        model.eval()
        samples = decode_to_pixels(model, self.codes, labels=self.code_labels)
        reconstructions = reconstruct_pixels(model, self.originals, labels=self.original_labels)
        model.train(was_training)
        tiles = torch.cat([samples, self.originals, reconstructions])
        self.frames.append(_captioned(tiles, f"epoch {epoch:.2f}".rstrip("0").rstrip(".")))
        self.epochs.append(epoch)

    def gif(self, scale: int = 2) -> bytes:
        """The frames so far, looping, the last one held longer."""
        durations = [FRAME_MS] * (len(self.frames) - 1) + [LAST_FRAME_MS]
        return gif_bytes(np.stack(self.frames), durations, scale)


def _captioned(tiles: torch.Tensor, caption: str) -> np.ndarray:
    """The tiles in a grid of COLUMNS, under a white strip with the caption."""
    grid = make_grid(tiles, nrow=COLUMNS)
    channels, height, width = grid.shape
    strip = Image.new("L", (width, CAPTION_PX), 255)
    ImageDraw.Draw(strip).text((2, 0), caption, fill=0)
    top = np.repeat(np.asarray(strip, dtype=np.uint8)[None], channels, axis=0)
    return np.concatenate([top, grid], axis=1)

