"""Image files in and out: decoding with Pillow, conversions, PNG encoding, grids."""

from __future__ import annotations

import io
import math
import re
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vaecli.errors import InputError, UsageError

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


# --- Input preparation: the model's channels and size, light-on-dark polarity ---

INVERT_MODES = ("yes", "no", "auto")


@dataclass
class InputImages:
    """Input files as the model sees them, with what was done to them on the way."""

    pixels: torch.Tensor  # uint8 (N, C, H, W) at the model's size
    names: list[str]  # file stems, "stdin" for `-`
    resized: int  # how many had another size
    inverted: int  # how many were inverted

    def notes(self, invert: str) -> list[str]:
        """What was done to the inputs, one line each, for stderr."""
        height, width = self.pixels.shape[2:]
        lines = []
        if self.resized:
            lines.append(f"resized {self.resized} of {len(self.names)} input(s) to {width}x{height}, the model's size")
        if self.inverted and invert == "auto":
            lines.append(
                f"inverted {self.inverted} of {len(self.names)} input(s) with a light border, since the "
                "model expects light strokes on a dark background (--invert no keeps them)"
            )
        return lines


def border_is_light(pixels: torch.Tensor) -> bool:
    """True when the outermost ring of pixels of a uint8 (C, H, W) image is mostly light."""
    ring = [pixels[:, 0, :], pixels[:, -1, :], pixels[:, :, 0], pixels[:, :, -1]]
    mean = sum(float(side.float().sum()) for side in ring) / sum(side.numel() for side in ring)
    return mean > 127.5


def should_invert(pixels: torch.Tensor, mode: str) -> bool:
    """The --invert decision: auto inverts a black-on-white drawing for light-on-dark models."""
    if mode not in INVERT_MODES:
        raise UsageError(f"--invert {mode}: choose one of {', '.join(INVERT_MODES)}")
    if mode == "auto":
        return border_is_light(pixels)
    return mode == "yes"


def read_images(sources: list[str], shape: tuple[int, int, int], invert: str) -> InputImages:
    """Open every file (`-` is stdin, at most once) and conform it to shape (C, H, W)."""
    import torch

    if sum(1 for source in sources if source == "-") > 1:
        raise UsageError("`-` (stdin) can be given only once; it holds one image")
    channels, height, width = shape
    tensors, names, resized, inverted = [], [], 0, 0
    for source in sources:
        image = open_image(source)
        resized += image.size != (width, height)
        pixels = image_to_tensor(image, channels, height, width)
        if should_invert(pixels, invert):
            pixels = 255 - pixels
            inverted += 1
        tensors.append(pixels)
        names.append("stdin" if source == "-" else Path(source).stem)
    return InputImages(torch.stack(tensors), names, resized, inverted)


# --- Output: PNG and GIF files, grids, nearest-neighbour enlargement ---

GRID_PADDING = 2  # pixels between grid cells, before --scale
GRID_PAD_VALUE = 128  # mid grey separates both light and dark cells
MAX_OUTPUT_PIXELS = 100_000_000  # refuse a grid or scale that would make an absurd image


def to_pil(pixels: Any, scale: int = 1) -> Image.Image:
    """A uint8 (C, H, W) array or tensor as an 8-bit grey or RGB image, enlarged `scale` times."""
    import numpy as np
    from PIL import Image

    array = np.asarray(pixels, dtype=np.uint8)
    channels, height, width = array.shape
    if height * width * scale * scale > MAX_OUTPUT_PIXELS:
        raise UsageError(
            f"a {width * scale}x{height * scale} image is too large to write; lower --scale or --nrow"
        )
    if scale > 1:
        array = array.repeat(scale, axis=1).repeat(scale, axis=2)
    if channels == 1:
        return Image.fromarray(np.ascontiguousarray(array[0]), mode="L")
    return Image.fromarray(np.ascontiguousarray(array.transpose(1, 2, 0)), mode="RGB")


def png_bytes(pixels: Any, scale: int = 1) -> bytes:
    """PNG file bytes of a uint8 (C, H, W) image; the same pixels always give the same bytes."""
    buffer = io.BytesIO()
    to_pil(pixels, scale).save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def make_grid(images: Any, nrow: int | None = None, padding: int = GRID_PADDING) -> Any:
    """Tile uint8 (N, C, H, W) images row by row, `nrow` per row (default: a square), into (C, H', W')."""
    import numpy as np

    array = np.asarray(images, dtype=np.uint8)
    count, channels, height, width = array.shape
    if count == 0:
        raise UsageError("no images to put in a grid")
    columns = min(nrow or math.ceil(math.sqrt(count)), count)
    rows = math.ceil(count / columns)
    grid_h, grid_w = rows * height + (rows - 1) * padding, columns * width + (columns - 1) * padding
    if grid_h * grid_w > MAX_OUTPUT_PIXELS:
        raise UsageError(f"a {grid_w}x{grid_h} grid is too large to write; lower -n or change --nrow")
    grid = np.full((channels, grid_h, grid_w), GRID_PAD_VALUE, dtype=np.uint8)
    for index in range(count):
        top, left = (index // columns) * (height + padding), (index % columns) * (width + padding)
        grid[:, top:top + height, left:left + width] = array[index]
    return grid


def ensure_folder(folder: Path, option: str = "") -> Path:
    """Create an output folder if missing, with one-line errors (naming `option`) when that cannot work."""
    folder = Path(folder)
    name = f"{option} {folder}" if option else str(folder)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{name}: exists and is not a folder; choose another output folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{name}: cannot create this folder ({exc.strerror}); choose another") from None
    return folder


def write_bytes(path: Path, data: bytes) -> Path:
    """Write a whole output file, creating its folder, with one-line errors."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a folder; give a file name for the output")
    ensure_folder(path.parent if str(path.parent) else Path("."))
    try:
        path.write_bytes(data)
    except OSError as exc:
        raise InputError(f"{path}: cannot write ({exc.strerror}); choose another path") from None
    return path


def numbered_names(folder: Path, prefix: str, count: int, force: bool) -> list[Path]:
    """`prefix-0001.png`... for count files; without force, numbering goes on after existing ones.

    Numbers have at least 4 digits, more when needed, and never fewer than files already there,
    so a glob lists old and new files in order.
    """
    existing = _numbers(folder, prefix)
    start = 1 if force else 1 + max((int(digits) for digits in existing), default=0)
    width = max(4, len(str(start + count - 1)), *(len(digits) for digits in existing))
    return [folder / f"{prefix}-{number:0{width}d}.png" for number in range(start, start + count)]


def highest_number(folder: Path, prefix: str) -> int:
    """The largest N of the `prefix-N.png` files in folder, 0 when there are none."""
    return max((int(digits) for digits in _numbers(folder, prefix)), default=0)


def _numbers(folder: Path, prefix: str) -> list[str]:
    pattern = re.compile(rf"{re.escape(prefix)}-(\d+)\.png")
    return [match.group(1) for entry in _list(folder) if (match := pattern.fullmatch(entry))]


def _list(folder: Path) -> list[str]:
    try:
        return [entry.name for entry in folder.iterdir()]
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise InputError(f"{folder}: cannot list this folder ({exc.strerror})") from None


def write_numbered(
    images: Any, folder: Path, prefix: str, force: bool = False, scale: int = 1
) -> Iterator[Path]:
    """Write each uint8 (C, H, W) image as its own PNG, yielding each path once it is complete."""
    folder = ensure_folder(folder)
    for path, pixels in zip(numbered_names(folder, prefix, len(images), force), images, strict=True):
        yield write_bytes(path, png_bytes(pixels, scale))


def gif_bytes(frames: Any, durations_ms: list[int], scale: int = 1) -> bytes:
    """An endlessly looping GIF of uint8 (N, C, H, W) frames, each shown for its duration."""
    pictures = [to_pil(frame, scale) for frame in frames]
    buffer = io.BytesIO()
    pictures[0].save(
        buffer, format="GIF", save_all=True, append_images=pictures[1:], duration=durations_ms,
        loop=0, optimize=False,
    )
    return buffer.getvalue()
