"""Image files in and out: decoding with Pillow, conversions, PNG encoding, grids."""

from __future__ import annotations

import io
import math
import re
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias

import numpy as np
import torch
from PIL import Image, ImageDraw

from vaecli.errors import InputError, SettingError, first_line
from vaecli.store.files import ensure_folder, numbered_names, read_input, write_atomic

# Pixels as the writers take them: uint8 arrays or tensors, (C, H, W) for one image, (N, C, H, W) for several.
Pixels: TypeAlias = np.ndarray | torch.Tensor

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


MAX_IMAGE_BYTES = 64 << 20  # a PNG or JPEG this tool reads is far smaller; /dev/zero is not an image


def open_image(source: str | Path) -> Image.Image:
    """Decode a PNG/JPEG file, `-` (stdin), FIFO or device fully, with one-line errors for bad input."""
    data, name = read_input(source, MAX_IMAGE_BYTES, "a PNG or JPEG file")
    if not data:
        hint = "pipe an image into `-`, e.g. `< digit.png`" if name == "stdin" else "give a PNG or JPEG image"
        raise InputError(f"{name}: {'is empty' if name == 'stdin' else 'the file is empty'}; {hint}")
    return decode_image(data, name)


def decode_image(data: bytes, name: str) -> Image.Image:
    """An image file's bytes decoded by Pillow, with one-line errors naming `name` for bad or huge images."""
    try:
        with warnings.catch_warnings():
            # Treat Pillow's decompression-bomb warning as the error it warns of.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InputError(
            f"{name}: the image is larger than Pillow's safety limit; shrink it first"
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as exc:
        # Pillow names what it read, here an in-memory buffer: name the user's file instead.
        reason = re.sub(r"<_io\.BytesIO object at 0x[0-9a-f]+>", repr(name), first_line(exc))
        raise InputError(f"{name}: not a readable image ({reason}); give a PNG or JPEG file") from None
    return image


def load_image(source: str | Path, shape: tuple[int, int, int]) -> torch.Tensor:
    """A file (or `-`) as a uint8 (C, H, W) tensor of the given shape; one-line errors naming it."""
    return conform_image(open_image(source), source, shape)


def conform_image(image: Image.Image, source: str | Path, shape: tuple[int, int, int]) -> torch.Tensor:
    """A decoded image as uint8 (C, H, W) in the given shape, or one line naming the file."""
    try:
        return image_to_tensor(image, *shape)
    except (OSError, ValueError, TypeError, KeyError) as exc:
        name = "stdin" if str(source) == "-" else str(source)
        raise InputError(
            f"{name}: its pixels (mode {image.mode}) cannot be converted to grey or RGB "
            f"({first_line(exc)}); save it as an 8-bit PNG"
        ) from None


def to_mode(image: Image.Image, channels: int) -> Image.Image:
    """Convert any Pillow mode (16-bit, palette, alpha, CMYK...) to 8-bit grey or RGB."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
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
    image = to_mode(image, channels)
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.BILINEAR)
    array = np.asarray(image, dtype=np.uint8)
    array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
    return torch.from_numpy(array.copy())


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
        return input_notes(len(self.names), self.resized, self.inverted, tuple(self.pixels.shape[1:]), invert)


def input_notes(count: int, resized: int, inverted: int, shape: tuple[int, ...], invert: str) -> list[str]:
    """What was done to `count` inputs (resized, inverted), one line each, for stderr."""
    height, width = shape[1:]
    lines = []
    if resized:
        lines.append(f"resized {resized} of {count} input(s) to {width}x{height}, the model's size")
    if inverted and invert == "auto":
        lines.append(
            f"inverted {inverted} of {count} input(s) with a light border, since the "
            "model expects light strokes on a dark background (`invert=no` keeps them)"
        )
    return lines


def border_is_light(pixels: torch.Tensor) -> bool:
    """True when the outermost ring of pixels of a uint8 (C, H, W) image is mostly light."""
    ring = [pixels[:, 0, :], pixels[:, -1, :], pixels[:, :, 0], pixels[:, :, -1]]
    mean = sum(float(side.float().sum()) for side in ring) / sum(side.numel() for side in ring)
    return mean > 127.5


def should_invert(pixels: torch.Tensor, mode: str) -> bool:
    """The `invert` decision: auto inverts a black-on-white drawing for light-on-dark grey models.

    A colour image is a photo or a picture, not a pen drawing: auto leaves it (and its bright sky) alone."""
    if mode not in INVERT_MODES:
        raise SettingError(f"`invert={mode}`: choose one of {', '.join(INVERT_MODES)}")
    if mode == "auto":
        return pixels.shape[0] == 1 and border_is_light(pixels)
    return mode == "yes"


def read_images(sources: list[str], shape: tuple[int, int, int], invert: str) -> InputImages:
    """Open every file (`-` is stdin, at most once) and conform it to shape (C, H, W)."""
    check_stdin_once(sources)
    channels, height, width = shape
    tensors, names, resized, inverted = [], [], 0, 0
    for source in sources:
        image = open_image(source)
        resized += image.size != (width, height)
        pixels = conform_image(image, source, shape)
        if should_invert(pixels, invert):
            pixels = 255 - pixels
            inverted += 1
        tensors.append(pixels)
        names.append("stdin" if source == "-" else Path(source).stem)
    return InputImages(torch.stack(tensors), names, resized, inverted)


def read_image_batches(
    sources: list[str], shape: tuple[int, int, int], invert: str, batch: int
) -> Iterator[InputImages]:
    """read_images on `batch` files at a time: many inputs never sit in memory together."""
    check_stdin_once(sources)
    for start in range(0, len(sources), batch):
        yield read_images(sources[start:start + batch], shape, invert)


def check_stdin_once(sources: list[str]) -> None:
    if sum(1 for source in sources if source == "-") > 1:
        raise SettingError("`-` (stdin) can be given only once; it holds one image")


# --- Output: PNG and GIF files, grids, nearest-neighbour enlargement ---

GRID_PADDING = 2  # pixels between grid cells, before `scale`
GRID_PAD_VALUE = 128  # mid grey separates both light and dark cells
MAX_OUTPUT_PIXELS = 100_000_000  # refuse a grid or scale that would make an absurd image


def to_pil(pixels: Pixels, scale: int = 1) -> Image.Image:
    """A uint8 (C, H, W) array or tensor as an 8-bit grey or RGB image, enlarged `scale` times."""
    array = np.asarray(pixels, dtype=np.uint8)
    channels, height, width = array.shape
    if height * width * scale * scale > MAX_OUTPUT_PIXELS:
        raise SettingError(
            f"a {width * scale}x{height * scale} image is too large to write; lower `scale` or `nrow`"
        )
    if scale > 1:
        array = array.repeat(scale, axis=1).repeat(scale, axis=2)
    if channels == 1:
        return Image.fromarray(np.ascontiguousarray(array[0]), mode="L")
    return Image.fromarray(np.ascontiguousarray(array.transpose(1, 2, 0)), mode="RGB")


def png_bytes(pixels: Pixels, scale: int = 1) -> bytes:
    """PNG file bytes of a uint8 (C, H, W) image; the same pixels always give the same bytes."""
    buffer = io.BytesIO()
    to_pil(pixels, scale).save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def grid_size(count: int, nrow: int | None, height: int, width: int, padding: int = GRID_PADDING) -> tuple[int, int]:
    """(height, width) of a grid of `count` cells, `nrow` per row (default: a square)."""
    columns = min(nrow or math.ceil(math.sqrt(count)), count)
    rows = math.ceil(count / columns)
    return rows * height + (rows - 1) * padding, columns * width + (columns - 1) * padding


def check_grid(count: int, shape: tuple[int, int, int], nrow: int | None, scale: int, what: str) -> None:
    """Refuse, before any work, a grid of `count` images larger than MAX_OUTPUT_PIXELS after `scale`."""
    _, height, width = shape
    grid_h, grid_w = grid_size(count, nrow, height, width)
    if grid_h * grid_w * scale * scale <= MAX_OUTPUT_PIXELS:
        return
    fits = 1
    while fits < count and math.prod(grid_size(fits * 2, nrow, height, width)) * scale * scale <= MAX_OUTPUT_PIXELS:
        fits *= 2
    raise SettingError(
        f"{what}: a grid of {grid_w * scale}x{grid_h * scale} pixels is too large to write "
        f"(at most {MAX_OUTPUT_PIXELS:,}); {fits} images fit, or write one PNG per image with `out=DIR`"
    )


def make_grid(images: Pixels, nrow: int | None = None, padding: int = GRID_PADDING) -> np.ndarray:
    """Tile uint8 (N, C, H, W) images row by row, `nrow` per row (default: a square), into (C, H', W')."""
    array = np.asarray(images, dtype=np.uint8)
    count, channels, height, width = array.shape
    if count == 0:
        raise SettingError("no images to put in a grid")
    columns = min(nrow or math.ceil(math.sqrt(count)), count)
    grid_h, grid_w = grid_size(count, nrow, height, width, padding)
    if grid_h * grid_w > MAX_OUTPUT_PIXELS:
        raise SettingError(f"a {grid_w}x{grid_h} grid is too large to write; lower `n` or change `nrow`")
    grid = np.full((channels, grid_h, grid_w), GRID_PAD_VALUE, dtype=np.uint8)
    for index in range(count):
        top, left = (index // columns) * (height + padding), (index % columns) * (width + padding)
        grid[:, top:top + height, left:left + width] = array[index]
    return grid


def write_numbered(
    batches: Iterable[Pixels], count: int, folder: Path, prefix: str, force: bool = False, scale: int = 1
) -> Iterator[Path]:
    """Write `count` uint8 (C, H, W) images, given in batches, as numbered PNGs; yields each path once written.

    Images are written as they come, so a long run holds one batch in memory, not every image.
    """
    names = numbered_names(ensure_folder(folder), prefix, count, force)
    for batch in batches:
        for pixels in batch:
            yield write_atomic(next(names), png_bytes(pixels, scale))


CAPTION_PX = 12  # a caption strip's height: one line of Pillow's default font
CAPTION_MARGIN = 2  # pixels of white left and right of a caption's text


def gif_bytes(frames: Pixels, durations_ms: list[int], scale: int = 1, captions: list[str] | None = None) -> bytes:
    """An endlessly looping GIF of uint8 (N, C, H, W) frames, each shown for its duration.

    With `captions`, each frame (after `scale`) sits under a white strip with its line of text."""
    pictures = [to_pil(frame, scale) for frame in frames]
    if captions is not None:
        pictures = captioned(pictures, captions)
    buffer = io.BytesIO()
    pictures[0].save(
        buffer, format="GIF", save_all=True, append_images=pictures[1:], duration=durations_ms,
        loop=0, optimize=False,
    )
    return buffer.getvalue()


def captioned(pictures: list[Image.Image], captions: list[str]) -> list[Image.Image]:
    """Each picture under a white strip with its caption; all widened alike (centred on white) to fit the
    longest caption, since a GIF's frames share one size and a 28-pixel image is narrower than most text."""
    draw = ImageDraw.Draw(Image.new("L", (1, 1)))
    text_width = max(math.ceil(draw.textlength(caption)) for caption in captions) + 2 * CAPTION_MARGIN
    width = max(text_width, max(picture.width for picture in pictures))
    white = 255 if pictures[0].mode == "L" else (255, 255, 255)
    framed = []
    for picture, caption in zip(pictures, captions, strict=True):
        frame = Image.new(picture.mode, (width, picture.height + CAPTION_PX), white)
        ImageDraw.Draw(frame).text((CAPTION_MARGIN, 0), caption, fill=0 if picture.mode == "L" else (0, 0, 0))
        frame.paste(picture, ((width - picture.width) // 2, CAPTION_PX))
        framed.append(frame)
    return framed


def path_captions(points: int) -> list[str]:
    """Captions of `points` evenly spaced decoded points from recon(A), t = 0, to recon(B), t = 1."""
    last = points - 1
    return ["t = 0 (A)", *(f"t = {i}/{last}" for i in range(1, last)), "t = 1 (B)"]


def there_and_back(items: list) -> list:
    """The items, then back again without repeating either end: a loop with no jump (as the GIFs play)."""
    return items + items[-2:0:-1]
