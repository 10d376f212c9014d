"""Lossless codecs' bits per dimension on the same images (PNG, WebP, JPEG 2000): the baseline of a model's.

Each image is encoded on its own as a complete file, headers included, since that is what a user stores:
bits/dim = 8 x (bytes of all the files) / (N C H W). Every file is decoded again and compared with its image,
so a codec that changes a single subpixel is reported as not lossless, never as a figure.
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, features

from vaecli.errors import SettingError

if TYPE_CHECKING:
    import torch

CHUNK = 256  # images per task of the thread pool: few tasks, so Python's share of the time stays small


@dataclass(frozen=True)
class Codec:
    """One lossless codec as Pillow writes it."""

    name: str  # the key of the results (and of `vae eval`'s JSON)
    title: str  # as a reader sees it (every codec here is used in its lossless mode)
    format: str  # Pillow's format name
    feature: str  # the PIL.features name of the library it needs
    # Pillow's save options, all lossless; with several, they are tried in order until one gives no smaller
    # file, and each image keeps its smallest
    settings: tuple[dict[str, Any], ...]
    bilevel: bool = False  # stores a black-and-white grey image at 1 bit per pixel
    rgb_settings: dict[str, Any] = field(default_factory=dict)  # added for 3-channel images


# Settings measured on MNIST and 32x32 photo crops (benchmarks/README.md, "Lossless codecs").
# PNG: Pillow's optimize (zlib level 9 and its filter choice), as the docs' earlier figures were measured;
# level 9 without it was 0.5% smaller on MNIST and 0.7% larger on the photo crops.
PNG = Codec("png", "PNG", "PNG", "zlib", ({"optimize": True},), bilevel=True)
# WebP lossless: quality is the effort (100 the most), method 4 Pillow's default. Method 6 at quality 100
# (cwebp -z 9), Pillow's documented maximum, took 13 to 22 times as long: 2% larger files on the photo
# crops (4.54 against 4.46 bits/dim), 0.7% smaller on MNIST and 11% smaller on binarized MNIST.
WEBP = Codec("webp", "WebP", "WEBP", "webp", ({"lossless": True, "quality": 100, "method": 4},))
# JPEG 2000 lossless: the reversible 5/3 wavelet, as a bare codestream (.j2k, which OpenJPEG and Pillow
# open; the .jp2 wrapper adds 85 bytes a file), with the reversible colour transform for RGB (mct). Its
# default 6 resolution levels are meant for large pictures: on 28x28 digits 1 level is smallest, on 32x32
# photos 1, 2 or 3, so each image tries 1 level, then more while its file shrinks (on both sets as small
# as the best of 1 to 5 levels, with 2 and 2.9 tries an image).
JPEG2000 = Codec(
    "jpeg2000", "JPEG 2000", "JPEG2000", "jpg_2000",
    tuple({"irreversible": False, "no_jp2": True, "num_resolutions": levels} for levels in range(1, 6)),
    rgb_settings={"mct": 1},
)
CODECS = (PNG, WEBP, JPEG2000)


@dataclass(frozen=True)
class CodecResult:
    """One codec's total over a set of images; bits_per_dim is None when it was not measured (see skipped)."""

    name: str
    title: str
    bits_per_dim: float | None
    bytes: int  # all the files together
    seconds: float  # encoding, and decoding to check
    skipped: str = ""  # why there is no figure


class NotLossless(Exception):
    """A file that decodes to other pixels than its image's."""


def codec_bits(
    images: np.ndarray | torch.Tensor, codecs: tuple[Codec, ...] = CODECS, workers: int | None = None
) -> list[CodecResult]:
    """Each codec's bits per dimension on uint8 images (N, C, H, W), C 1 (grey) or 3 (RGB), one file each."""
    array = _checked(images)
    pool_size = workers or min(len(array) // CHUNK + 1, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=pool_size) as pool:
        return [_measure(array, codec, pool) for codec in codecs]


def _checked(images: np.ndarray | torch.Tensor) -> np.ndarray:
    array = np.asarray(images)  # a CPU tensor shares its memory; one on a GPU must come to the CPU first
    if array.dtype != np.uint8 or array.ndim != 4 or array.shape[1] not in (1, 3) or not array.size:
        raise SettingError(f"the codecs take uint8 images (N, C, H, W) with 1 or 3 channels, not {array.dtype} "
                           f"{tuple(array.shape)} (`images`)")
    return array


def _measure(array: np.ndarray, codec: Codec, pool: ThreadPoolExecutor) -> CodecResult:
    missing = _unavailable(codec)
    if missing:
        return CodecResult(codec.name, codec.title, None, 0, 0.0, missing)
    settings = _settings(codec, array.shape)
    start = time.perf_counter()
    try:
        total = sum(pool.map(lambda chunk: _chunk_bytes(chunk, codec, settings), _chunks(array)))
    except (NotLossless, OSError) as exc:
        why = str(exc) if isinstance(exc, NotLossless) else f"Pillow could not write it ({exc})"
        return CodecResult(codec.name, codec.title, None, 0, time.perf_counter() - start, why)
    return CodecResult(codec.name, codec.title, 8 * total / array.size, total, time.perf_counter() - start)


def _unavailable(codec: Codec) -> str:
    """Why Pillow cannot write this codec here, or "" when it can."""
    if features.check(codec.feature):
        return ""
    library = {"jpg_2000": "OpenJPEG", "webp": "libwebp", "zlib": "zlib"}.get(codec.feature, codec.feature)
    return f"this Pillow was built without {library} ({codec.feature})"


def _settings(codec: Codec, shape: tuple[int, ...]) -> list[dict[str, Any]]:
    channels, height, width = shape[1:]
    extra = codec.rgb_settings if channels == 3 else {}
    # A wavelet level halves the image: JPEG 2000 refuses more levels than the image has pixels to halve
    # (one level, none halved, always fits).
    return [{**options, **extra} for options in codec.settings
            if 2 ** (options.get("num_resolutions", 1) - 1) <= min(height, width)]


def _chunks(array: np.ndarray) -> Iterator[np.ndarray]:
    for start in range(0, len(array), CHUNK):
        yield array[start:start + CHUNK]


def _chunk_bytes(chunk: np.ndarray, codec: Codec, settings: list[dict[str, Any]]) -> int:
    return sum(len(_encode(image, codec, settings)) for image in chunk)


def _encode(image: np.ndarray, codec: Codec, settings: list[dict[str, Any]]) -> bytes:
    """One image (C, H, W) as the codec's smallest file over its settings, checked to decode to the same pixels."""
    picture = _picture(image, codec)
    best = b""
    for options in settings:
        buffer = io.BytesIO()
        picture.save(buffer, format=codec.format, **options)
        if best and buffer.tell() >= len(best):
            break
        best = buffer.getvalue()
    if not _decodes_to(best, picture, codec):
        raise NotLossless(f"a {codec.title} file decoded to other pixels than its image's: not lossless here")
    return best


def _picture(image: np.ndarray, codec: Codec) -> Image.Image:
    if image.shape[0] == 3:
        return Image.fromarray(np.ascontiguousarray(image.transpose(1, 2, 0)))
    picture = Image.fromarray(np.ascontiguousarray(image[0]))
    if codec.bilevel and np.count_nonzero((image != 0) & (image != 255)) == 0:
        return picture.convert("1", dither=Image.Dither.NONE)
    return picture


def _decodes_to(data: bytes, picture: Image.Image, codec: Codec) -> bool:
    """Whether the file decodes to exactly the picture's pixels (a grey one stored as RGB: three equal channels)."""
    with Image.open(io.BytesIO(data), formats=[codec.format]) as decoded:
        if decoded.size != picture.size:
            return False
        if decoded.mode == picture.mode:
            return decoded.tobytes() == picture.tobytes()
        return decoded.convert("RGB").tobytes() == picture.convert("RGB").tobytes()
