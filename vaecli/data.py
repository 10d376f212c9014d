"""Datasets loaded once into uint8 tensors: torchvision's MNIST family, digits, image folders."""

from __future__ import annotations

import gzip
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from vaecli.errors import DataError, InputError, UsageError
from vaecli.images import IMAGE_SUFFIXES

if TYPE_CHECKING:
    import torch

# Name on the command line -> torchvision's folder (and class) name.
TORCHVISION_DATASETS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST", "kmnist": "KMNIST"}
DATASET_NAMES = (*TORCHVISION_DATASETS, "digits")
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


def native_shape(dataset: str) -> tuple[int, int, int] | None:
    """(C, H, W) of a built-in dataset; None for a folder, whose shape the user picks."""
    return (1, 28, 28) if dataset in DATASET_NAMES else None


def check_dataset_name(dataset: str) -> None:
    """Accept a built-in name or an existing folder; otherwise list what is valid."""
    if dataset in DATASET_NAMES:
        return
    path = Path(dataset).expanduser()
    if path.is_dir():
        return
    if path.exists():
        raise InputError(f"--dataset {dataset}: is a file; give a folder of images")
    raise UsageError(
        f"unknown dataset {dataset!r}: use one of {', '.join(DATASET_NAMES)}, "
        "or the path of a folder of images"
    )


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
        raise UsageError(f"unknown split {split!r}; use train or test")
    check_dataset_name(dataset)
    if dataset in TORCHVISION_DATASETS:
        images, labels = _load_torchvision(dataset, split, data_root or default_data_root(), limit)
        names = CLASS_NAMES[dataset]
    elif dataset == "digits":
        images, labels = _load_digits(split)
        names = CLASS_NAMES["digits"]
    else:
        return _cut(load_folder(Path(dataset).expanduser(), split, shape), limit)
    return _cut(ImageSet(conform(images, shape), labels, names), limit)


def _cut(data: ImageSet, limit: int | None) -> ImageSet:
    if limit is None or limit >= len(data):
        return data
    return ImageSet(data.images[:limit], data.labels[:limit], data.class_names)


def conform(images: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """Convert uint8 (N, C, H, W) to the given channels and size (bilinear, antialiased)."""
    import torch
    import torch.nn.functional as F

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
    return images.contiguous()


def _load_torchvision(
    dataset: str, split: str, root: Path, limit: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    folder = root / TORCHVISION_DATASETS[dataset] / "raw"
    image_stem, label_stem = IDX_FILES[split]
    if _find_idx(folder, image_stem) is None or _find_idx(folder, label_stem) is None:
        _download(dataset, root)
    images = read_idx(_find_idx(folder, image_stem), count=limit)
    labels = read_idx(_find_idx(folder, label_stem), count=limit)
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise DataError(f"{folder}: image and label files do not match; download them again")
    return images.unsqueeze(1), labels.long()


def _find_idx(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def read_idx(path: Path | None, count: int | None = None) -> torch.Tensor:
    """Parse an IDX file (optionally gzipped) into a uint8 tensor, reading `count` items at most."""
    import torch

    if path is None:
        raise DataError("dataset file missing after download; check --data-root")
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as handle:
            magic = handle.read(4)
            if len(magic) != 4 or magic[:2] != b"\0\0" or magic[2] != 0x08:
                raise DataError(f"{path}: not an IDX file of unsigned bytes; download it again")
            dims = struct.unpack(f">{magic[3]}I", handle.read(4 * magic[3]))
            n = dims[0] if count is None else min(dims[0], count)
            item = 1
            for d in dims[1:]:
                item *= d
            payload = handle.read(n * item)
    except (OSError, EOFError, struct.error) as exc:
        raise DataError(f"{path}: cannot read ({exc}); download it again") from None
    if len(payload) != n * item:
        raise DataError(f"{path}: the file is truncated; download it again")
    return torch.frombuffer(bytearray(payload), dtype=torch.uint8).view(n, *dims[1:])


def _download(dataset: str, root: Path) -> None:
    offline_hint = (
        f"{TORCHVISION_DATASETS[dataset]} is not in {root} and could not be downloaded: "
        f"pass --data-root DIR (or set VAE_DATA_ROOT) to a folder holding "
        f"{TORCHVISION_DATASETS[dataset]}/raw/*.gz, or train offline with --dataset digits"
    )
    if os.environ.get("VAE_OFFLINE", "") not in ("", "0"):
        raise DataError(offline_hint)
    try:
        import torchvision.datasets as tvd

        root.mkdir(parents=True, exist_ok=True)
        getattr(tvd, TORCHVISION_DATASETS[dataset])(str(root), train=True, download=True)
        getattr(tvd, TORCHVISION_DATASETS[dataset])(str(root), train=False, download=True)
    except Exception:  # noqa: BLE001 - any failure to fetch means the same thing to the user
        raise DataError(offline_hint) from None


def _load_digits(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    import torch
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.from_numpy(bunch.images).float().mul(255.0 / 16.0).round().to(torch.uint8)
    labels = torch.from_numpy(bunch.target).long()
    cut = int(len(labels) * 0.8)  # a fixed 80/20 split, the same on every machine
    part = slice(0, cut) if split == "train" else slice(cut, None)
    return images[part].unsqueeze(1).contiguous(), labels[part]


def list_image_files(root: Path) -> list[Path]:
    """Image files under root, searched recursively, in a stable order."""
    return sorted(
        p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )



def load_folder(root: Path, split: str, shape: tuple[int, int, int]) -> ImageSet:
    """Decode every image under root once; the first sub-folder's name is the label."""
    import torch

    from vaecli.images import image_to_tensor, open_image  # Pillow only when a folder is used

    files = list_image_files(root)
    if not files:
        raise InputError(f"{root}: no PNG or JPEG images found; check the folder")
    if len(files) >= 20:
        # Every tenth image is held out as the test split; small folders test on everything.
        files = [f for i, f in enumerate(files) if (i % 10 == 9) == (split == "test")]
    label_of = [_label_of(f.relative_to(root)) for f in files]
    class_names = sorted(set(label_of))
    index = {name: i for i, name in enumerate(class_names)}
    channels, height, width = shape
    images = torch.stack([image_to_tensor(open_image(f), channels, height, width) for f in files])
    labels = torch.tensor([index[name] for name in label_of], dtype=torch.long)
    return ImageSet(images, labels, [name or "(root)" for name in class_names])


def _label_of(relative: Path) -> str:
    return relative.parts[0] if len(relative.parts) > 1 else ""
