"""Image files in and out: decoding with Pillow, conversions, PNG encoding, grids."""

from __future__ import annotations

import io
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from vaecli.errors import InputError

if TYPE_CHECKING:
    import torch
    from PIL import Image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def open_image(source: str | Path) -> Image.Image:
    """Decode a PNG/JPEG file (or `-` for stdin) fully, with one-line errors for bad files."""
    from PIL import Image

    name = "stdin" if str(source) == "-" else str(source)
    if str(source) == "-":
        data = sys.stdin.buffer.read()
        if not data:
            raise InputError("stdin is empty: pipe an image into `-`, e.g. `< digit.png`")
        handle: io.BytesIO | Path = io.BytesIO(data)
    else:
        path = Path(source)
        if not path.exists():
            raise InputError(f"{name}: no such file; check the path")
        if path.is_dir():
            raise InputError(f"{name}: is a folder; give an image file")
        if path.stat().st_size == 0:
            raise InputError(f"{name}: the file is empty; give a PNG or JPEG image")
        handle = path
    try:
        with warnings.catch_warnings():
            # Treat Pillow's decompression-bomb warning as the error it warns of.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(handle)
            image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InputError(
            f"{name}: the image is larger than Pillow's safety limit; shrink it first"
        ) from None
    except PermissionError:
        raise InputError(f"{name}: permission denied; check the file's permissions") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputError(
            f"{name}: not a readable image ({_first_line(exc)}); give a PNG or JPEG file"
        ) from None
    return image


def to_mode(image: Image.Image, channels: int) -> Image.Image:
    """Convert any Pillow mode (16-bit, palette, alpha, CMYK...) to 8-bit grey or RGB."""
    from PIL import Image

    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        import numpy as np

        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I") and array.max() > 255 else 255.0
        image = Image.fromarray((array.clip(0, top) * (255.0 / top)).round().astype("uint8"))
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        # Transparent pixels become white, like paper under a drawing.
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image.convert("RGBA"))
    return image.convert("L" if channels == 1 else "RGB")


def image_to_tensor(image: Image.Image, channels: int, height: int, width: int) -> torch.Tensor:
    """A uint8 tensor (C, H, W) in the given channels and size."""
    import numpy as np
    import torch
    from PIL import Image

    image = to_mode(image, channels)
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.BILINEAR)
    array = np.asarray(image, dtype=np.uint8)
    if array.ndim == 2:
        array = array[None]
    else:
        array = array.transpose(2, 0, 1)
    return torch.from_numpy(array.copy())


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:120] if text else type(exc).__name__
