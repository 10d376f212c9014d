"""Colour datasets through torchvision's own classes, decoded once and cached beside the data.

data.load_dataset drives this module: resolve a name, try the cache, else open the split (downloading
as torchvision does), decode it and write the cache. torchvision is imported only inside functions.
"""

from __future__ import annotations

import hashlib
import inspect
import itertools
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, NamedTuple, TypeVar

from vaecli.errors import DataError, InputError, UsageError, VaeError, first_line

T = TypeVar("T")

if TYPE_CHECKING:
    import torch

PREFIX = "torchvision:"  # --dataset torchvision:NAME names any class in torchvision.datasets
CACHE_FOLDER = "vaecli-cache"  # beside the data, under --data-root
CACHE_FORMAT = "vaecli-dataset-cache/1"  # bump when the cached tensors would change meaning
MAX_LISTED = 10_000  # a folder with more entries is fingerprinted by its own mtime (CelebA's 202,599 JPEGs)
DIGITS = tuple(str(d) for d in range(10))
SPLIT_FALLBACKS = {"train": ("trainval",), "test": ("val", "valid")}  # tried in order when a class lacks ours


@dataclass(frozen=True)
class Source:
    """A torchvision dataset class as vaecli reads it."""

    name: str  # as on the command line: cifar10, or torchvision:Flowers102
    class_name: str  # the class in torchvision.datasets
    shape: tuple[int, int, int] | None = None  # native (C, H, W), when known without reading anything
    counts: dict[str, int] = field(default_factory=dict)  # images per split, for the memory check up front
    paths: tuple[str, ...] = ()  # what it reads under the root ({split} filled in): the cache key's files
    layout: str = ""  # NHWC or NCHW for a class holding its images in one uint8 array; "" decodes item by item
    crop: int = 0  # a centre square of this side is cut before resizing (CelebA's faces)
    class_names: tuple[str, ...] = ()  # when the class has no .classes of its own

    @property
    def slug(self) -> str:
        return self.name.replace(":", "-")


# The named datasets: split sizes are torchvision's; CelebA is cut to its centre 148x148, as in the
# VAE literature since Larsen et al. (2016), then resized (64x64 unless --image-size says otherwise).
NAMED = {
    "cifar10": Source("cifar10", "CIFAR10", (3, 32, 32), {"train": 50_000, "test": 10_000},
                      ("cifar-10-batches-py",), "NHWC"),
    "cifar100": Source("cifar100", "CIFAR100", (3, 32, 32), {"train": 50_000, "test": 10_000},
                       ("cifar-100-python",), "NHWC"),
    "svhn": Source("svhn", "SVHN", (3, 32, 32), {"train": 73_257, "test": 26_032},
                   ("{split}_32x32.mat",), "NCHW", class_names=DIGITS),
    "stl10": Source("stl10", "STL10", (3, 96, 96), {"train": 5_000, "test": 8_000}, ("stl10_binary",), "NCHW"),
    "celeba": Source("celeba", "CelebA", (3, 64, 64), {"train": 162_770, "test": 19_962}, ("celeba",),
                     crop=148, class_names=("face",)),
}


class Decoded(NamedTuple):
    """One split as uint8 (N, C, H, W) images, integer labels (N,) and the labels' names."""

    images: torch.Tensor
    labels: torch.Tensor
    class_names: list[str]


def is_torchvision_name(dataset: str) -> bool:
    """True for a named colour dataset or torchvision:NAME (not checked against torchvision here)."""
    return dataset in NAMED or dataset.startswith(PREFIX)


def resolve(dataset: str) -> Source:
    """The Source for a name; torchvision:NAME must be an image dataset vaecli can construct."""
    if dataset in NAMED:
        return NAMED[dataset]
    import torchvision.datasets as tvd

    wanted = dataset[len(PREFIX):]
    classes = {name.lower(): name for name in dir(tvd) if isinstance(getattr(tvd, name), type)}
    class_name = classes.get(wanted.lower())
    if class_name is None or not issubclass(getattr(tvd, class_name), tvd.VisionDataset):
        raise UsageError(
            f"--dataset {dataset[:200]}: torchvision.datasets has no dataset class {wanted[:100]!r} "
            f"(names as in torchvision, e.g. torchvision:Flowers102); or use one of {', '.join(NAMED)}"
        )
    _split_argument(getattr(tvd, class_name), dataset)
    return Source(f"{PREFIX}{class_name}", class_name,
                  paths=tuple(dict.fromkeys((getattr(getattr(tvd, class_name), "base_folder", "") or class_name,
                                             class_name, class_name.lower()))))


def _split_argument(cls: type, dataset: str) -> str:
    """`train` or `split`: how the class picks a split; anything else it needs makes it unsuitable."""
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        params = {}
    flag = "train" if "train" in params else "split" if "split" in params else ""
    needed = [name for name, p in params.items()
              if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
              and name not in ("root", flag)]
    if "root" not in params or not flag or needed:
        lacks = (f"needs {', '.join(needed)}" if needed and flag and "root" in params
                 else "does not take a root folder and a train flag or split")
        raise UsageError(
            f"--dataset {dataset[:200]}: torchvision's {cls.__name__} {lacks}, so vaecli cannot read it; "
            f"use an image dataset whose constructor takes root and train or split"
        )
    return flag


# --- The cache: <root>/vaecli-cache/<name>-<split>-<C>x<H>x<W>.safetensors -------------------------


def cache_file(source: Source, split: str, root: Path, shape: tuple[int, int, int]) -> Path:
    return root / CACHE_FOLDER / f"{source.slug}-{split}-{'x'.join(map(str, shape))}.safetensors"


def fingerprint(source: Source, split: str, root: Path, shape: tuple[int, int, int]) -> str:
    """A hash of what the cache was decoded from: the source files' sizes and mtimes, the shape, the format."""
    named = [root / p.format(split=split) for p in source.paths]
    present = [p for p in named if p.exists()]
    if not present:  # a class whose folder we cannot name: everything at the root but our cache
        present = [p for p in _listing(root) if p.name != CACHE_FOLDER]
    stats = []
    for path in present:
        stats.append(_stat(path))
        if path.is_dir():
            stats.extend(_stat(child) for child in _listing(path))
    key = [CACHE_FORMAT, source.name, source.crop, split, list(shape), stats]
    return hashlib.sha256(json.dumps(key).encode()).hexdigest()


def _listing(folder: Path) -> list[Path]:
    try:
        with os.scandir(folder) as entries:
            names = sorted(entry.name for entry in itertools.islice(entries, MAX_LISTED + 1))
    except OSError:
        return []
    return [] if len(names) > MAX_LISTED else [folder / name for name in names]


def _stat(path: Path) -> list:
    try:
        status = os.stat(path)
    except OSError:
        return [path.name, None]
    return [path.name, status.st_size, status.st_mtime_ns]


def read_cache(path: Path, key: str, shape: tuple[int, int, int], wanted: int | None) -> Decoded | None:
    """The cached split when it matches key and holds `wanted` images (None: all); else None."""
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
            if meta.get("format") != CACHE_FORMAT or meta.get("key") != key:
                return None
            images, labels = handle.get_tensor("images"), handle.get_tensor("labels")
        names = json.loads(meta["class_names"])
    except Exception:  # noqa: BLE001 - a missing, partial or foreign file is a miss, and is rewritten
        return None
    import torch

    complete = meta.get("complete") == "1"
    if (images.dtype != torch.uint8 or tuple(images.shape[1:]) != tuple(shape) or labels.dtype != torch.long
            or tuple(labels.shape) != images.shape[:1] or not isinstance(names, list)
            or not all(isinstance(n, str) for n in names) or not _labels_fit(labels, len(names))
            or not (complete or (wanted is not None and len(labels) >= wanted))):
        return None
    return Decoded(images[:wanted], labels[:wanted], names)


def write_cache(path: Path, key: str, decoded: Decoded, complete: bool) -> None:
    """Write the split for the next run; a cache that cannot be written only costs time, so it is skipped."""
    from safetensors.torch import save

    from vaecli.files import write_atomic

    meta = {"format": CACHE_FORMAT, "key": key, "class_names": json.dumps(decoded.class_names),
            "complete": "1" if complete else "0"}
    try:
        payload = save({"images": decoded.images.contiguous(), "labels": decoded.labels.contiguous()}, meta)
        write_atomic(path, payload)
    except (VaeError, OSError, MemoryError):
        pass


def _labels_fit(labels: torch.Tensor, classes: int) -> bool:
    return len(labels) == 0 or (int(labels.min()) >= 0 and int(labels.max()) < classes)


# --- Opening a split: found under the root, else downloaded as torchvision does --------------------


def open_split(source: Source, split: str, root: Path) -> Any:
    """The torchvision dataset object of one split; offline or failing, one line naming --data-root."""
    import torchvision.datasets as tvd

    cls = getattr(tvd, source.class_name)
    flag = _split_argument(cls, source.name)
    params = inspect.signature(cls).parameters
    kwargs: dict[str, Any] = {"train": split == "train"} if flag == "train" else {"split": split}
    if "target_type" in params:
        kwargs["target_type"] = []  # CelebA: images only; its attributes are not labels
    try:
        return _construct(cls, root, kwargs, params, download=False)
    except UsageError:
        raise
    except Exception:  # noqa: BLE001 - torchvision says "not found or corrupted" in several ways
        pass
    where = (f"pass --data-root DIR (or set VAE_DATA_ROOT) to a folder holding "
             f"{', '.join(p.format(split=split) for p in source.paths[:1]) or source.class_name}")
    check_online(source.name, root, where)
    if "download" not in params:
        raise DataError(f"{source.name} is not in {root}, and torchvision cannot download it: {where}")
    return download(lambda: _construct(cls, root, kwargs, params, download=True), source.name, root, [root], where)


def check_online(name: str, root: Path, where: str) -> None:
    """Refuse a download under VAE_OFFLINE=1, saying where the data should be instead."""
    if os.environ.get("VAE_OFFLINE", "") not in ("", "0"):
        raise DataError(f"{name} is not in {root}, and VAE_OFFLINE=1 forbids downloading it: {where}")


def download(fetch: Callable[[], T], name: str, root: Path, folders: list[Path], where: str) -> T:
    """Run torchvision's download; if it fails, remove the empty folders it made (`folders`, innermost
    first, and root's missing parents) and say so in one line."""
    created = [p for p in (*folders, *root.parents) if not p.exists()]
    try:
        root.mkdir(parents=True, exist_ok=True)
        return fetch()
    except Exception as exc:  # noqa: BLE001 - any failure to fetch means the same thing to the user
        for path in created:  # innermost first; a folder that holds anything stays
            try:
                path.rmdir()
            except FileNotFoundError:
                continue  # the attempt stopped before making it
            except OSError:
                break
        raise DataError(f"{name} is not in {root} and could not be downloaded ({first_line(exc)}): {where}") from None


def _construct(cls: type, root: Path, kwargs: dict, params: Any, download: bool) -> Any:
    extra = {"download": download} if "download" in params else {}
    try:
        return cls(str(root), **kwargs, **extra)
    except ValueError as exc:
        # A class without our split names may have a near one: OxfordIIITPet's trainval, ImageNet's val.
        for near in SPLIT_FALLBACKS.get(kwargs.get("split", ""), ()):
            if f"'{near}'" in str(exc):
                return cls(str(root), **{**kwargs, "split": near}, **extra)
        if "split" in str(exc) or "train" in str(exc):
            raise UsageError(f"--dataset torchvision:{cls.__name__}: {first_line(exc)}") from None
        raise


def native_shape(source: Source, root: Path) -> tuple[int, int, int]:
    """(C, H, W): the table's for a named dataset, else the first training image's (remembered)."""
    if source.shape is not None:
        return source.shape
    note = root / CACHE_FOLDER / f"{source.slug}-shape.json"
    key = fingerprint(source, "train", root, (0, 0, 0))
    try:
        stored = json.loads(note.read_text())
        if stored["key"] == key and len(stored["shape"]) == 3 and all(int(n) > 0 for n in stored["shape"]):
            return tuple(int(n) for n in stored["shape"])  # type: ignore[return-value]
    except Exception:  # noqa: BLE001 - no note yet, or a damaged one: look again
        pass
    dataset = open_split(source, "train", root)
    if len(dataset) == 0:
        raise DataError(f"{source.name}: its train split under {root} holds no images")
    image = _image_of(dataset[0], source)
    shape = (1 if image.mode in ("1", "L", "I", "I;16", "F") else 3, image.height, image.width)
    key = fingerprint(source, "train", root, (0, 0, 0))  # after a download, the files it wrote
    try:
        from vaecli.files import write_atomic

        write_atomic(note, json.dumps({"key": key, "shape": shape}).encode())
    except (VaeError, OSError):
        pass
    return shape


# --- Decoding: one uint8 array as it is, or item by item through Pillow ------------------------------


def raw_item_bytes(source: Source) -> int:
    """Bytes per image the class holds in memory once constructed (its whole array), 0 when unknown."""
    return math.prod(source.shape) if source.layout and source.shape else 0


def decode(dataset: Any, source: Source, shape: tuple[int, int, int], count: int) -> Decoded:
    """The first `count` images of a constructed split, with labels and class names.

    A class holding one uint8 array gives it at its native size (data.conform resizes it);
    any other is decoded item by item into `shape`, cropped first when the source says so.
    """
    import torch

    if source.layout:
        array = torch.as_tensor(dataset.data[:count])
        images = array.permute(0, 3, 1, 2) if source.layout == "NHWC" else array
        targets = getattr(dataset, "targets", None)
        labels = torch.as_tensor(getattr(dataset, "labels", targets)[:count], dtype=torch.long)
    else:
        images, labels = _decode_items(dataset, source, shape, count)
    names = getattr(dataset, "classes", None)
    if not (isinstance(names, list) and names and all(isinstance(n, str) for n in names)):
        top = int(labels.max()) + 1 if len(labels) else 0
        names = list(source.class_names) or [str(i) for i in range(max(top, 1))]
    if not _labels_fit(labels, len(names)):
        raise DataError(
            f"{source.name}: holds label {int(labels.min()) if int(labels.min()) < 0 else int(labels.max())}, "
            f"but has {len(names)} classes; delete its files under --data-root and download it again"
        )
    return Decoded(images.to(torch.uint8).contiguous(), labels, list(names))


def _decode_items(dataset: Any, source: Source, shape: tuple[int, int, int], count: int) -> tuple:
    import torch

    from vaecli.images import image_to_tensor

    images = torch.empty((count, *shape), dtype=torch.uint8)
    labels = torch.zeros(count, dtype=torch.long)
    for i in range(count):
        item = dataset[i]
        image = _image_of(item, source, shape)
        target = item[1] if isinstance(item, tuple) and len(item) > 1 else None
        if isinstance(target, int) or (hasattr(target, "ndim") and target.ndim == 0):
            labels[i] = int(target)
        try:
            images[i] = image_to_tensor(image, *shape)
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise DataError(f"{source.name}: image {i} cannot be decoded ({first_line(exc)}); "
                            "delete its files under --data-root and download it again") from None
    return images, labels


def _image_of(item: Any, source: Source, shape: tuple[int, int, int] | None = None) -> Any:
    """The PIL image of a dataset item, centre-cropped when the source says so; JPEGs decoded small."""
    from PIL import Image

    image = item[0] if isinstance(item, tuple) else item
    if not isinstance(image, Image.Image):
        raise InputError(
            f"--dataset {source.name}: its items are {type(image).__name__}, not images; "
            "use an image dataset"
        )
    if shape is None:
        return image
    width, height = image.size
    side = min(source.crop or min(width, height), width, height) if source.crop else 0
    scale = max(shape[1], shape[2]) / (side or min(width, height))
    if scale < 0.5 and image.format == "JPEG":  # the JPEG decoder scales by 1/2, 1/4, 1/8 for free
        image.draft(image.mode, (math.ceil(width * scale), math.ceil(height * scale)))
    if side:
        ratio = image.width / width  # draft may have shrunk it
        left, top = (width - side) / 2 * ratio, (height - side) / 2 * ratio
        image = image.crop((round(left), round(top), round(left + side * ratio), round(top + side * ratio)))
    return image
