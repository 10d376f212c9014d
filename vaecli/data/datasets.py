"""Datasets loaded once into uint8 tensors: torchvision's MNIST family, digits, colour datasets, image folders."""

from __future__ import annotations

import errno
import gzip
import io
import math
import os
import shlex
import struct
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from vaecli.data import cache as dataset_cache
from vaecli.data import torchvision_sets as tv
from vaecli.data.images import IMAGE_SUFFIXES, load_image, open_image
from vaecli.data.torchvision_sets import NAMED as COLOUR_DATASETS
from vaecli.data.torchvision_sets import PREFIX, check_online, download, is_torchvision_name
from vaecli.errors import DataError, InputError, SettingError, first_line
from vaecli.runtime import memory
from vaecli.store.files import describe_os_error, describe_size

if TYPE_CHECKING:
    from vaecli.config import TrainConfig

# The dataset's name -> torchvision's folder (and class) name.
TORCHVISION_DATASETS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST", "kmnist": "KMNIST"}
DATASET_NAMES = (*TORCHVISION_DATASETS, "digits", *COLOUR_DATASETS)  # plus torchvision:NAME, see is_builtin
CLASS_NAMES = {
    "mnist": [str(d) for d in range(10)],
    "digits": [str(d) for d in range(10)],
    "fashion-mnist": [
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    ],
    "kmnist": ["o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"],
}
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
SPLITS = ("train", "test")

MAX_DATASET_BYTES = 8 << 30  # one split in memory as uint8; also at most half the memory available
MAX_FOLDER_IMAGES = 2_000_000  # far more than fits in memory at any useful size; stops a scan of `/`
MAX_IDX_ITEM = 4096 * 4096  # bytes per IDX item; the MNIST family has 784, anything near this is damage
IDX_CHUNK = 1 << 20  # IDX payloads are read this much at a time, so a lying header allocates nothing
GZIP_MAX_RATIO = 1100  # deflate inflates at most ~1,032-fold: a header declaring more than this lies
CONFORM_CHUNK = 4096  # images resized per pass at most ...
CONFORM_CHUNK_BYTES = 64 << 20  # ... and at most this much float32 scratch per pass
SHOWN_CHARS = 200  # a path from a file we did not write is shown this long at most


@dataclass
class ImageSet:
    """Images as uint8 (N, C, H, W) with integer labels (N,) and the labels' names."""

    images: torch.Tensor
    labels: torch.Tensor
    class_names: list[str]

    def __len__(self) -> int:
        return self.images.shape[0]


def default_data_root() -> Path:
    """`VAE_DATA_ROOT`, else a per-user cache folder."""
    env = os.environ.get("VAE_DATA_ROOT")
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "vaecli" / "data"


def is_builtin(dataset: str) -> bool:
    """True for a dataset named rather than a folder: a name in DATASET_NAMES or torchvision:NAME."""
    return dataset in DATASET_NAMES or dataset.startswith(PREFIX)


def native_shape(dataset: str, data_root: Path | None = None) -> tuple[int, int, int] | None:
    """(C, H, W) of a built-in dataset, or of a folder from its first image (folder_shape).

    torchvision:NAME is opened (downloaded if need be) to see its first image, once per download.
    """
    if is_torchvision_name(dataset):
        source, root = tv.resolve(dataset), data_root or default_data_root()
        if source.shape is not None:
            return source.shape
        noted = dataset_cache.read_note(source, root)
        if noted is None:
            noted = tv.first_image_shape(source, root)
            dataset_cache.write_note(source, root, noted)
        return noted
    if dataset in DATASET_NAMES:
        return (1, 28, 28)
    return folder_shape(Path(dataset).expanduser())


# Pillow modes that hold one channel: a folder of them trains grey, any other mode RGB.
GREY_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "F")
FOLDER_SIDES = (16, 64)  # a folder keeps its first image's side when square and in this range, else 28


def folder_shape(root: Path) -> tuple[int, int, int] | None:
    """(C, H, W) for a folder from its first image: grey or RGB as stored, and its side when it is a square of 16 to
    64 pixels (else 28); None for a folder without images, which load_folder refuses."""
    files = list_image_files(root)
    if not files:
        return None
    image = open_image(files[0])
    channels = 1 if image.mode in GREY_MODES else 3
    square = image.width == image.height and FOLDER_SIDES[0] <= image.width <= FOLDER_SIDES[1]
    side = image.width if square else 28
    return (channels, side, side)


def check_dataset_name(dataset: str) -> None:
    """Accept a built-in name or an existing folder; otherwise list what is valid."""
    if dataset.startswith(PREFIX):
        tv.resolve(dataset)  # one line for an unknown or unsuitable class
        return
    if dataset in DATASET_NAMES:
        return
    try:
        is_folder = Path(dataset).expanduser().is_dir()
        exists = is_folder or Path(dataset).expanduser().exists()
    except (OSError, RuntimeError) as exc:  # too long a path, an unknown ~user, a locked parent
        reason = describe_os_error(exc) if isinstance(exc, OSError) else str(exc)
        raise InputError(f"`dataset={_shown(dataset)}`: cannot read ({reason}); check the path") from None
    if is_folder:
        return
    if exists:
        raise InputError(f"`dataset={dataset}`: is a file; give a folder of images")
    raise SettingError(
        f"unknown dataset {_shown(dataset)}: use one of {', '.join(DATASET_NAMES)}, "
        f"{PREFIX}NAME, or the path of a folder of images"
    )


def dataset_for_model(stored: str, given: str | None) -> tuple[str, str | None]:
    """The dataset a command on a model reads, and a note for stderr (or None).

    A checkpoint's dataset comes from a file we did not write, so a folder it names is read
    only when it lies inside the working folder; anywhere else the user must name it.
    """
    if given is not None:
        return given, None
    if is_builtin(stored):
        return stored, None
    shown = _shown(stored)
    inside = _inside_working_folder(stored)
    if inside is not None and os.path.isdir(inside):
        return stored, f"using the model's training folder {shown} (inside the working folder); `dataset` picks another"
    if inside is not None or not os.path.isdir(os.path.expanduser(stored)):
        raise SettingError(
            f"the model was trained on {shown} (so its metadata says), which is neither a built-in dataset "
            f"nor a folder here; pass `dataset` with that folder, or with images like it"
        )
    named = shlex.quote(stored) if len(stored) <= SHOWN_CHARS else "FOLDER"
    raise SettingError(
        f"the model was trained on the folder {shown}, outside the working folder; "
        f"name it with `dataset={named}` to read it, or pass another `dataset`"
    )


def same_dataset(named: str, stored: str) -> bool:
    """True when two dataset values name one dataset: the same built-in name, or the same folder."""
    if named == stored:
        return True
    if is_builtin(named) or is_builtin(stored):
        return False
    # Paths are compared, not folders opened: `pets`, `./pets/` and a link to it are one folder.
    try:
        return Path(named).expanduser().resolve() == Path(stored).expanduser().resolve()
    except (OSError, RuntimeError, ValueError):
        return False


def _inside_working_folder(stored: str) -> Path | None:
    # Resolving follows symlinks and `..`, so a link inside the working folder to /etc is outside.
    try:
        cwd = Path.cwd().resolve()
        path = (cwd / Path(stored).expanduser()).resolve()
    except (OSError, RuntimeError, ValueError):  # a vanished cwd, a link loop, a NUL byte, ~nobody
        return None
    return path if path.is_relative_to(cwd) else None


def _shown(text: str) -> str:
    """repr of a string from outside, cut to SHOWN_CHARS so one line stays readable."""
    return repr(text[:SHOWN_CHARS]) + ("..." if len(text) > SHOWN_CHARS else "")


def load_dataset(
    dataset: str,
    split: str,
    *,
    data_root: Path | None = None,
    shape: tuple[int, int, int] = (1, 28, 28),
    limit: int | None = None,
) -> ImageSet:
    """Load one split of a dataset, conformed to `shape` (C, H, W) and cut to `limit` images."""
    if split not in SPLITS:
        raise SettingError(f"unknown split {split!r}; use train or test")
    if limit is not None and limit < 1:
        raise SettingError(f"`limit` must be 1 or more, not {limit}")
    check_dataset_name(dataset)
    if dataset in TORCHVISION_DATASETS:
        root = data_root or default_data_root()
        images, labels = _load_torchvision(dataset, split, root, limit, shape)
    elif is_torchvision_name(dataset):
        return _load_colour(dataset, split, data_root or default_data_root(), shape, limit)
    elif dataset == "digits":
        images, labels = _load_digits(split)
        images, labels = images[:limit], labels[:limit]
        check_dataset_size(len(labels), shape, f"digits {split}")
    else:
        return load_folder(Path(dataset).expanduser(), split, shape, limit)
    return ImageSet(conform(images, shape), labels, CLASS_NAMES[dataset])


def _load_colour(
    dataset: str, split: str, root: Path, shape: tuple[int, int, int], limit: int | None
) -> ImageSet:
    """A torchvision class's split: from the cache when its files are unchanged, else decoded and cached."""
    source = tv.resolve(dataset)
    hit = dataset_cache.read_split(source, split, root, shape, limit, lambda count: _fits(count, shape),
                                   MAX_DATASET_BYTES)
    if hit is not None:
        return ImageSet(*hit)
    what = f"{dataset} {split}"
    known = source.counts.get(split)
    if known:  # before the class reads its files: CIFAR and SVHN hold the whole split as one array
        check_dataset_size(min(known, limit or known), shape, what, raw_item=tv.raw_item_bytes(source))
    opened = tv.open_split(source, split, root)
    count = len(opened) if limit is None else min(len(opened), limit)
    if count == 0:
        raise DataError(f"{what}: holds no images under {root}; delete its files and download it again")
    check_dataset_size(count, shape, what, raw_item=tv.raw_item_bytes(source))
    decoded = tv.decode(opened, source, shape, count)
    decoded = decoded._replace(images=conform(decoded.images, shape))
    dataset_cache.write_split(source, split, root, shape, decoded, complete=count == len(opened))
    return ImageSet(*decoded)


# --- Pixels: uint8 images as the model sees them ------------------------------------------------------


def to_pixels(batch: torch.Tensor) -> torch.Tensor:
    """uint8 images as float pixels in [0, 1]."""
    return batch.float().div_(255.0)


def binarize_fixed(pixels: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """One fixed Bernoulli draw of every pixel: the same binarized set on every run."""
    generator = torch.Generator().manual_seed(seed)
    return torch.bernoulli(pixels.cpu(), generator=generator).to(pixels.device)


def eval_pixels(config: TrainConfig, test_set: ImageSet, device: torch.device) -> torch.Tensor:
    """A split as the model is tested on it: pixels in [0, 1], binarized once if it trained binarized."""
    return fixed_pixels(test_set.images, device, config.binarize)


def fixed_pixels(images: torch.Tensor, device: torch.device, binarize: bool) -> torch.Tensor:
    """uint8 images as pixels on `device`, binarized once with the fixed seed when asked (eval, score)."""
    pixels = to_pixels(images.to(device))
    return binarize_fixed(pixels) if binarize else pixels


# --- Memory: a split's size is checked before it is read ------------------------------------------


def _fits(count: int, shape: tuple[int, int, int]) -> bool:
    """Whether `count` images of shape fit the budget now (a cached split that does not is a miss)."""
    try:
        check_dataset_size(count, shape, "the cached split")
    except SettingError:
        return False
    return True


def dataset_budget() -> int:
    """Bytes one split may take: MAX_DATASET_BYTES, or half the memory available now if less."""
    return min(MAX_DATASET_BYTES, memory.available_bytes() // 2)


def check_dataset_size(count: int, shape: tuple[int, int, int], what: str, raw_item: int = 0) -> None:
    """Refuse `count` images of shape (C, H, W) past dataset_budget(), naming what would fit.

    raw_item: bytes per image as stored, when they are read whole before being resized.
    """
    channels, height, width = shape
    per_image = max(channels * height * width, raw_item)
    budget = dataset_budget()
    if count * per_image <= budget:
        return
    fits = budget // per_image
    side = math.isqrt(budget // (count * channels))
    hints = [f"`limit={fits}`"] if fits >= 1 else []
    if side >= 1 and count * raw_item <= budget:
        hints.append(f"train at `image_size={side}`")
    raise SettingError(
        f"{what}: {count:,} images of {channels}x{height}x{width} need {describe_size(count * per_image)}, "
        f"more than the {describe_size(budget)} this machine can spare (half its free memory, at most "
        f"{describe_size(MAX_DATASET_BYTES)}); {' or '.join(hints) or 'free some memory'}"
    )


def conform(images: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """Convert uint8 (N, C, H, W) to the given channels and size (bilinear, antialiased)."""
    if tuple(images.shape[1:]) == tuple(shape):
        return images.contiguous()
    count, channels_in, height_in, width_in = images.shape
    channels, height, width = shape
    # Pass by pass, so the float32 scratch stays small; each image is computed as in one pass.
    scratch = 4 * max(channels, channels_in) * max(height * width, height_in * width_in)
    step = max(1, min(CONFORM_CHUNK, CONFORM_CHUNK_BYTES // scratch))
    out = torch.empty((count, channels, height, width), dtype=torch.uint8)
    for start in range(0, count, step):
        out[start:start + step] = _conform_chunk(images[start:start + step], shape)
    return out


def _conform_chunk(images: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    channels, height, width = shape
    if images.shape[1] != channels:
        if channels == 3:
            images = images.expand(-1, 3, -1, -1)
        else:
            weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
            images = (images.float() * weights).sum(1, keepdim=True).round().to(torch.uint8)
    if images.shape[2:] != (height, width):
        resized = F.interpolate(
            images.float(), size=(height, width), mode="bilinear", antialias=True
        )
        images = resized.round().clamp(0, 255).to(torch.uint8)
    return images


# --- The MNIST family: IDX files, checked before their payload is read -------------------------------


def _load_torchvision(
    dataset: str, split: str, root: Path, limit: int | None, shape: tuple[int, int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    folder = root / TORCHVISION_DATASETS[dataset] / "raw"
    image_stem, label_stem = IDX_FILES[split]
    if _find_idx(folder, image_stem) is None or _find_idx(folder, label_stem) is None:
        _download(dataset, root)
    image_path, label_path = _find_idx(folder, image_stem), _find_idx(folder, label_stem)
    if image_path is None or label_path is None:
        raise DataError(f"{folder}: dataset files missing after download; check `data_root`")
    image_dims = _check_idx_pair(image_path, label_path)
    count = image_dims[0] if limit is None else min(image_dims[0], limit)
    check_dataset_size(count, shape, f"{dataset} {split}", raw_item=math.prod(image_dims[1:]))
    images = read_idx(image_path, count)
    labels = read_idx(label_path, count).long()
    if int(labels.max()) >= len(CLASS_NAMES[dataset]):
        raise DataError(
            f"{label_path}: holds label {int(labels.max())}, but {dataset} has "
            f"{len(CLASS_NAMES[dataset])} classes; download it again"
        )
    return images.unsqueeze(1), labels


def _check_idx_pair(image_path: Path, label_path: Path) -> tuple[int, ...]:
    """The image file's dims, once both headers describe one non-empty split of 2-D images."""
    image_dims, label_dims = idx_dims(image_path), idx_dims(label_path)
    if len(image_dims) != 3:
        raise DataError(f"{image_path}: holds {len(image_dims)}-D data, not images (3-D); download it again")
    if len(label_dims) != 1:
        raise DataError(f"{label_path}: holds {len(label_dims)}-D data, not labels (1-D); download it again")
    if image_dims[0] == 0:
        raise DataError(f"{image_path}: holds no images; download it again")
    if image_dims[0] != label_dims[0]:
        raise DataError(
            f"{image_path}: holds {image_dims[0]:,} images but {label_path.name} holds "
            f"{label_dims[0]:,} labels; download them again"
        )
    return image_dims


def _find_idx(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


@contextmanager
def _open_idx(path: Path) -> Iterator[io.BufferedIOBase]:
    """The file (gunzipped when it ends in .gz), with read failures as one-line DataErrors."""
    try:
        with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as handle:
            yield handle
    # BadGzipFile is an OSError: it must be matched first to be named for what it is.
    except (gzip.BadGzipFile, zlib.error, EOFError) as exc:
        raise DataError(f"{path}: the gzip stream is damaged ({first_line(exc)}); download it again") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({describe_os_error(exc)}); download it again") from None


def idx_dims(path: Path) -> tuple[int, ...]:
    """The dimensions an IDX file's header declares, checked; the payload is not read."""
    with _open_idx(path) as handle:
        return _idx_header(handle, path)


def _idx_header(handle: io.BufferedIOBase, path: Path) -> tuple[int, ...]:
    magic = handle.read(4)
    if len(magic) != 4 or magic[:2] != b"\0\0" or magic[2] != 0x08:
        raise DataError(f"{path}: not an IDX file of unsigned bytes; download it again")
    if magic[3] == 0:
        raise DataError(f"{path}: the IDX header declares zero dimensions; download it again")
    raw = handle.read(4 * magic[3])
    if len(raw) != 4 * magic[3]:
        raise DataError(f"{path}: the IDX header is truncated; download it again")
    dims = struct.unpack(f">{magic[3]}I", raw)
    item = math.prod(dims[1:])
    if not 0 < item <= MAX_IDX_ITEM:
        shown = "x".join(str(d) for d in dims[1:])
        raise DataError(f"{path}: declares items of {shown} bytes, which no dataset here has; download it again")
    _check_declared_size(path, dims, 4 + len(raw))
    return dims


def _check_declared_size(path: Path, dims: tuple[int, ...], header: int) -> None:
    """Refuse a header that declares more bytes than the file holds (or, gzipped, could hold)."""
    declared = dims[0] * math.prod(dims[1:])
    size = os.stat(path).st_size
    if path.suffix != ".gz" and size - header < declared:
        raise DataError(
            f"{path}: the header declares {dims[0]:,} items ({declared:,} bytes), but the file holds "
            f"{max(size - header, 0):,} bytes of them; the file is truncated, download it again"
        )
    if path.suffix == ".gz" and declared > GZIP_MAX_RATIO * size:
        raise DataError(
            f"{path}: the header declares {dims[0]:,} items ({declared:,} bytes), more than a gzip file of "
            f"{size:,} bytes can hold; the file is damaged, download it again"
        )


def read_idx(path: Path | None, count: int | None = None) -> torch.Tensor:
    """Parse an IDX file (optionally gzipped) into a uint8 tensor, reading `count` items at most."""
    if path is None:
        raise DataError("dataset file missing after download; check `data_root`")
    with _open_idx(path) as handle:
        dims = _idx_header(handle, path)
        n = dims[0] if count is None else min(dims[0], count)
        wanted = n * math.prod(dims[1:])
        payload = _read_bounded(handle, wanted)
        if len(payload) == wanted and n == dims[0]:  # a cut read leaves the rest, and its CRC, unread
            _check_end(handle, path)
    if len(payload) != wanted:
        raise DataError(f"{path}: the file is truncated (its header declares {dims[0]:,} items); download it again")
    if not payload:
        return torch.empty((n, *dims[1:]), dtype=torch.uint8)
    return torch.frombuffer(payload, dtype=torch.uint8).view(n, *dims[1:])


def _check_end(handle: io.BufferedIOBase, path: Path) -> None:
    """Refuse data past what the header declares; reading to the end makes gzip check its CRC."""
    extra = 0
    while extra <= IDX_CHUNK * 64 and (chunk := handle.read(IDX_CHUNK)):
        extra += len(chunk)
    if extra:
        raise DataError(f"{path}: holds more data than its header declares; the file is damaged, download it again")


def _read_bounded(handle: io.BufferedIOBase, size: int) -> bytearray:
    # Grows with what is really there: a gzip header claiming terabytes allocates only its real bytes.
    # Not files.read_exactly: that one turns gzip's errors (OSErrors) into "cannot read", and its bytes
    # are read-only, which torch.frombuffer warns about.
    data = bytearray()
    while len(data) < size:
        chunk = handle.read(min(IDX_CHUNK, size - len(data)))
        if not chunk:
            break
        data += chunk
    return data


def _download(dataset: str, root: Path) -> None:
    folder = TORCHVISION_DATASETS[dataset]
    where = (f"pass `data_root=DIR` (or set VAE_DATA_ROOT) to a folder holding {folder}/raw/*.gz, "
             "or use `dataset=digits`, which needs no download")
    check_online(folder, root, where)

    def fetch() -> None:
        cls = tv.safe_class(getattr(tv.torchvision_datasets(), folder))  # never its legacy processed/*.pt files
        cls(str(root), train=True, download=True)
        cls(str(root), train=False, download=True)

    download(fetch, folder, root, [root / folder / "raw", root / folder, root], where)


def _load_digits(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits  # optional and heavy (seconds): only the digits dataset needs it

    bunch = load_digits()
    images = torch.from_numpy(bunch.images).float().mul(255.0 / 16.0).round().to(torch.uint8)
    labels = torch.from_numpy(bunch.target).long()
    cut = int(len(labels) * 0.8)  # a fixed 80/20 split, the same on every machine
    part = slice(0, cut) if split == "train" else slice(cut, None)
    return images[part].unsqueeze(1).contiguous(), labels[part]


# --- Image folders: an iterative scan, then only the images a split needs are decoded ----------------


def list_image_files(root: Path) -> list[Path]:
    """Image files under root, in a stable (sorted) order; symlinked folders are not followed."""
    found: list[str] = []
    # An explicit stack instead of recursion: a tree thousands of folders deep is just a long list.
    pending = [os.fspath(root)]
    while pending:
        _scan_folder(pending.pop(), root, pending, found)
    return sorted(Path(name) for name in found)


def _scan_folder(folder: str, root: Path, pending: list[str], found: list[str]) -> None:
    """Add folder's sub-folders to pending and its image files to found, or one line on failure."""
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    pending.append(entry.path)
                elif os.path.splitext(entry.name)[1].lower() in IMAGE_SUFFIXES and _is_file(entry):
                    found.append(entry.path)
                    if len(found) > MAX_FOLDER_IMAGES:
                        raise DataError(
                            f"{root}: more than {MAX_FOLDER_IMAGES:,} images; "
                            "pass `dataset` a smaller folder (a sub-folder, or a copy with fewer images)"
                        )
    except OSError as exc:
        where = folder[len(os.fspath(root)):].lstrip(os.sep)
        if len(where) > SHOWN_CHARS:
            where = "..." + where[-SHOWN_CHARS:]
        place = f"cannot read its sub-folder {where}" if where else "cannot read this folder"
        raise DataError(
            f"{root}: {place} ({describe_os_error(exc)}); fix it, or pass `dataset` another folder"
        ) from None


def _is_file(entry: os.DirEntry) -> bool:
    # A symlink that loops or points nowhere is not an image; skip it as rglob did.
    try:
        return entry.is_file()
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return False
        raise


def load_folder(
    root: Path, split: str, shape: tuple[int, int, int], limit: int | None = None
) -> ImageSet:
    """Decode the first `limit` images of a split under root; the first sub-folder's name is the label.

    A folder holding train/ and test/ gives its own splits (the class is then the first sub-folder below them);
    any other folder holds out every tenth image.
    """
    files = list_image_files(root)
    if not files:
        raise InputError(f"{root}: no PNG or JPEG images found; check the folder")
    relative = [f.relative_to(root) for f in files]
    if has_split_folders(root):
        _check_split_folders(root, relative)
        label_of = [_label_of(Path(*r.parts[1:])) for r in relative]
        kept = [i for i, r in enumerate(relative) if r.parts[0] == split]
    else:
        label_of = [_label_of(r) for r in relative]
        kept = _every_tenth(len(files), split)
    # Class names come from the whole folder, both splits: train and test then number the labels alike,
    # a class whose images all fall in one split still counts, and `limit` never renumbers them.
    class_names = sorted(set(label_of))
    index = {name: i for i, name in enumerate(class_names)}
    files, label_of = [files[i] for i in kept][:limit], [label_of[i] for i in kept][:limit]
    check_dataset_size(len(files), shape, f"{root} ({split} split)")
    images = torch.empty((len(files), *shape), dtype=torch.uint8)
    for i, path in enumerate(files):
        images[i] = load_image(path, shape)
    labels = torch.tensor([index[name] for name in label_of], dtype=torch.long)
    return ImageSet(images, labels, [name or "(root)" for name in class_names])


def has_split_folders(root: Path) -> bool:
    """Whether root holds sub-folders named train and test, which are then its splits."""
    return all((root / name).is_dir() for name in SPLITS)


def _every_tenth(count: int, split: str) -> list[int]:
    """The indices of a split when every tenth image is held out; small folders test on everything."""
    if count < 20:
        return list(range(count))
    return [i for i in range(count) if (i % 10 == 9) == (split == "test")]


def _check_split_folders(root: Path, relative: list[Path]) -> None:
    """Refuse images outside train/ and test/, or a split folder without images: the split would be a guess."""
    outside = sorted({r.parts[0] + ("/" if len(r.parts) > 1 else "") for r in relative if r.parts[0] not in SPLITS})
    if outside:
        shown = ", ".join(_shown(name) for name in outside[:3]) + (f" and {len(outside) - 3} more"
                                                                    if len(outside) > 3 else "")
        raise InputError(
            f"{root}: holds train/ and test/, so they are its splits, but also images outside them ({shown}); "
            "move those into train/ or test/, or out of the folder"
        )
    held = {r.parts[0] for r in relative}
    for name in SPLITS:
        if name not in held:
            raise InputError(
                f"{root}: holds train/ and test/, so they are its splits, but {name}/ holds no PNG or JPEG "
                f"images; put the {name} split's images in {name}/"
            )


def _label_of(relative: Path) -> str:
    return relative.parts[0] if len(relative.parts) > 1 else ""
