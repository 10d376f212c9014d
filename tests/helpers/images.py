"""Small test images: a light bar on black (MNIST's polarity) in any Pillow mode."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def stroke(mode: str = "L", size: tuple[int, int] = (28, 28), value: int = 255) -> Image.Image:
    """A light vertical bar on black, (width, height) `size`; deep modes keep it at full scale."""
    width, height = size
    array = np.zeros((height, width), dtype=np.uint8)
    array[height * 3 // 14 : height * 11 // 14, width // 2 - 2 : width // 2 + 2] = value
    if mode == "I;16":
        return Image.fromarray(array.astype(np.uint16) * 257)  # uint16 gives mode I;16
    if mode == "I":
        return Image.fromarray(array.astype(np.int32) * 257)
    if mode == "F":
        return Image.fromarray(array.astype(np.float32))
    return Image.fromarray(array).convert(mode)


def digit(path: Path, mode: str = "L", fmt: str | None = None, value: int = 255) -> Path:
    """Save a 28x28 stroke at `path` (format from the name unless `fmt` is given)."""
    stroke(mode, value=value).save(path, format=fmt)
    return path
