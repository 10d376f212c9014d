"""Colour datasets through torchvision's own classes, decoded once and cached (see dataset_cache).

data.load_dataset drives this module: resolve a name, try the cache, else open the split (downloading
as torchvision does), decode it and write the cache. torchvision is imported on first use (torchvision_datasets).
"""

from __future__ import annotations

import inspect
import math
import os
import pickle
import re
import stat
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, NamedTuple, NoReturn, TypeVar

import numpy as np
import torch
from PIL import Image

from vaecli.data.images import image_to_tensor
from vaecli.errors import DataError, InputError, SettingError, first_line

if TYPE_CHECKING:
    from torchvision.datasets import VisionDataset

T = TypeVar("T")

PREFIX = "torchvision:"  # `dataset=torchvision:NAME` names any class in torchvision.datasets
SHOWN_CHARS = 200  # a file name from a data folder is shown this long at most
# Where torchvision's item-by-item classes keep their files' paths, in the order tried.
PATH_LISTS = ("_image_files", "samples", "imgs", "_samples", "_images", "image_files", "filename")
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
# VAE literature since Larsen et al. (2016), then resized (64x64 unless `image_size` says otherwise).
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


def torchvision_datasets() -> ModuleType:
    """torchvision.datasets, imported on first use: it takes seconds, which MNIST's files and digits never need."""
    import torchvision.datasets  # optional and heavy: only the colour datasets and downloads use it

    return torchvision.datasets


def is_torchvision_name(dataset: str) -> bool:
    """True for a named colour dataset or torchvision:NAME (not checked against torchvision here)."""
    return dataset in NAMED or dataset.startswith(PREFIX)


def resolve(dataset: str) -> Source:
    """The Source for a name; torchvision:NAME must be an image dataset vaecli can construct."""
    if dataset in NAMED:
        return NAMED[dataset]
    tvd = torchvision_datasets()
    wanted = dataset[len(PREFIX):]
    classes = {name.lower(): name for name in dir(tvd) if isinstance(getattr(tvd, name), type)}
    class_name = classes.get(wanted.lower())
    if class_name is None or not issubclass(getattr(tvd, class_name), tvd.VisionDataset):
        raise SettingError(
            f"`dataset={dataset[:200]}`: torchvision.datasets has no dataset class {wanted[:100]!r} "
            f"(names as in torchvision, e.g. torchvision:Flowers102); or use one of {', '.join(NAMED)}"
        )
    _split_argument(getattr(tvd, class_name), dataset)
    return Source(f"{PREFIX}{class_name}", class_name, paths=_folder_guesses(getattr(tvd, class_name)))


def _folder_guesses(cls: type) -> tuple[str, ...]:
    """Folders under the root the class may read: MNIST, country211, food-101... (the cache key's files)."""
    name = cls.__name__
    hyphenated = re.sub(r"(?<=[a-z])(?=[0-9])", "-", name.lower())  # Food101 keeps food-101
    return tuple(dict.fromkeys((getattr(cls, "base_folder", "") or name, name, name.lower(), hyphenated)))


def _split_argument(cls: type, dataset: str) -> str:
    """`train` or `split`: how the class picks a split; anything else it needs makes it unsuitable."""
    params: Mapping[str, inspect.Parameter]
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
        raise SettingError(
            f"`dataset={dataset[:200]}`: torchvision's {cls.__name__} {lacks}, so vaecli cannot read it; "
            f"use an image dataset whose constructor takes root and train or split"
        )
    return flag


def labels_fit(labels: torch.Tensor, classes: int) -> bool:
    """True when every label names one of `classes` classes."""
    return len(labels) == 0 or (int(labels.min()) >= 0 and int(labels.max()) < classes)


# --- Opening a split: found under the root, else downloaded as torchvision does --------------------


def open_split(source: Source, split: str, root: Path) -> VisionDataset:
    """The torchvision dataset object of one split; offline or failing, one line naming `data_root`."""
    cls = safe_class(getattr(torchvision_datasets(), source.class_name))
    flag = _split_argument(cls, source.name)
    params = inspect.signature(cls).parameters
    kwargs: dict[str, Any] = {"train": split == "train"} if flag == "train" else {"split": split}
    if "target_type" in params:
        kwargs["target_type"] = []  # CelebA: images only; its attributes are not labels
    try:
        return _construct(cls, root, kwargs, params, download=False)
    except SettingError:  # ours (a split the class lacks, a refused batch): not a missing dataset
        raise
    except Exception:  # noqa: BLE001 - torchvision says "not found or corrupted" in several ways
        pass
    where = (f"pass `data_root=DIR` (or set VAE_DATA_ROOT) to a folder holding "
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


def _construct(cls: type, root: Path, kwargs: dict, params: Mapping[str, inspect.Parameter],
               download: bool) -> VisionDataset:
    extra = {"download": download} if "download" in params else {}
    try:
        return cls(str(root), **kwargs, **extra)
    except ValueError as exc:
        # A class without our split names may have a near one: OxfordIIITPet's trainval, ImageNet's val.
        for near in SPLIT_FALLBACKS.get(kwargs.get("split", ""), ()):
            if f"'{near}'" in str(exc):
                return cls(str(root), **{**kwargs, "split": near}, **extra)
        if "split" in str(exc) or "train" in str(exc):
            raise SettingError(f"`dataset=torchvision:{cls.__name__}`: {first_line(exc)}") from None
        raise


def first_image_shape(source: Source, root: Path) -> tuple[int, int, int]:
    """(C, H, W) of the first training image, for a class whose images vaecli does not know the size of."""
    dataset = open_split(source, "train", root)
    if len(dataset) == 0:
        raise DataError(f"{source.name}: its train split under {root} holds no images")
    with _decoding(dataset, source, 0):
        image = _image_of(dataset[0], source)
    return (1 if image.mode in ("1", "L", "I", "I;16", "F") else 3, image.height, image.width)


# --- No pickle from a data folder: MNIST's legacy files are never opened, CIFAR's batches are read as arrays --


def safe_class(cls: type) -> type:
    """cls, or a subclass of it (same name, same folders) that unpickles nothing a data folder holds."""
    tvd = torchvision_datasets()
    if issubclass(cls, tvd.MNIST):
        # torchvision loads processed/*.pt with torch's unpickler whenever such files exist, ahead of the
        # raw IDX files: never take that path. Its folders come from the class name, which stays the same.
        return type(cls.__name__, (cls,), {"_check_legacy_exist": _no_legacy_files, "_load_legacy_data": _refuse,
                                            "__module__": __name__})
    if issubclass(cls, tvd.CIFAR10):
        # torchvision unpickles CIFAR's batches with pickle.load, which runs whatever code a file names.
        return type(cls.__name__, (cls,), {"__init__": _cifar_init, "_load_meta": _cifar_meta, "__module__": __name__})
    return cls


def _no_legacy_files(self: VisionDataset) -> bool:
    return False


def _refuse(self: VisionDataset) -> NoReturn:
    raise DataError(f"{type(self).__name__}: vaecli reads only the raw files, never processed/*.pt; "
                    "remove the processed folder under `data_root`")


def _cifar_init(self: VisionDataset, root: str | Path, train: bool = True, transform: Callable | None = None,
                target_transform: Callable | None = None, download: bool = False) -> None:
    """CIFAR10's and CIFAR100's constructor, with their batches read by read_pickled_arrays."""
    torchvision_datasets().VisionDataset.__init__(self, root, transform=transform, target_transform=target_transform)
    self.train = train
    if download:
        self.download()
    if not self._check_integrity():
        raise RuntimeError("Dataset not found or corrupted. You can use download=True to download it")
    arrays, self.targets = [], []
    for name, _ in self.train_list if train else self.test_list:
        batch = read_pickled_arrays(Path(self.root, self.base_folder, name))
        arrays.append(np.asarray(batch["data"], dtype=np.uint8))
        self.targets.extend(int(t) for t in batch["labels" if "labels" in batch else "fine_labels"])
    self.data = np.vstack(arrays).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    self._load_meta()


def _cifar_meta(self: VisionDataset) -> None:
    path = Path(self.root, self.base_folder, self.meta["filename"])
    if not torchvision_datasets().cifar.check_integrity(str(path), self.meta["md5"]):
        raise RuntimeError("Dataset metadata file not found or corrupted. You can use download=True to download it")
    self.classes = [str(name) for name in read_pickled_arrays(path)[self.meta["key"]]]
    self.class_to_idx = {name: i for i, name in enumerate(self.classes)}


def read_pickled_arrays(path: Path) -> dict:
    """A pickled dict of plain data and numpy arrays, as CIFAR ships them; a file naming anything else is refused.

    Only numpy's array and dtype constructors may be called: a batch that names another function
    (os.system, say) is refused in one line before anything runs.
    """
    try:
        with open(path, "rb") as handle:
            value = _ArraysOnly(handle, encoding="latin1").load()
    except pickle.UnpicklingError as exc:
        raise DataError(f"{path}: {first_line(exc)}; delete the folder and download it again") from None
    except (EOFError, ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError,
            MemoryError) as exc:
        raise DataError(f"{path}: not a readable batch ({first_line(exc)}); download it again") from None
    if not isinstance(value, dict):
        raise DataError(f"{path}: holds a {type(value).__name__}, not a batch; download it again")
    return value


def _latin1(text: str, encoding: str = "utf-8") -> bytes:
    if encoding not in ("latin1", "latin-1"):  # another codec could inflate or transform: not CIFAR's
        raise pickle.UnpicklingError(f"holds a pickle that encodes with {encoding[:40]!r}, which vaecli never does")
    return text.encode("latin-1")


class _ArraysOnly(pickle.Unpickler):
    """An unpickler that builds only numpy arrays, dtypes and plain Python data."""

    def find_class(self, module: str, name: str) -> Any:
        core = getattr(np, "_core", None) or np.core  # numpy 2 renamed numpy.core, which files still name
        allowed = {"ndarray": np.ndarray, "dtype": np.dtype, "_reconstruct": core.multiarray._reconstruct}
        if module in ("numpy", "numpy.core.multiarray", "numpy._core.multiarray") and name in allowed:
            return allowed[name]
        if (module, name) == ("_codecs", "encode"):  # how Python 3 pickles bytes at protocol 2
            return _latin1
        raise pickle.UnpicklingError(f"holds a pickle that calls {module[:60]}.{name[:60]}, which vaecli never runs")


# --- Decoding: one uint8 array as it is, or item by item through Pillow ------------------------------


def raw_item_bytes(source: Source) -> int:
    """Bytes per image the class holds in memory once constructed (its whole array), 0 when unknown."""
    return math.prod(source.shape) if source.layout and source.shape else 0


def decode(dataset: VisionDataset, source: Source, shape: tuple[int, int, int], count: int) -> Decoded:
    """The first `count` images of a constructed split, with labels and class names.

    A class holding one uint8 array gives it at its native size (data.conform resizes it);
    any other is decoded item by item into `shape`, cropped first when the source says so.
    """
    if source.layout:
        array = torch.as_tensor(dataset.data[:count])
        images = array.permute(0, 3, 1, 2) if source.layout == "NHWC" else array
        targets = dataset.labels if hasattr(dataset, "labels") else dataset.targets
        labels = torch.as_tensor(targets[:count], dtype=torch.long)
    else:
        images, labels = _decode_items(dataset, source, shape, count)
    names = getattr(dataset, "classes", None)
    if not (isinstance(names, list) and names and all(isinstance(n, str) for n in names)):
        top = int(labels.max()) + 1 if len(labels) else 0
        names = list(source.class_names) or [str(i) for i in range(max(top, 1))]
    if not labels_fit(labels, len(names)):
        raise DataError(
            f"{source.name}: holds label {int(labels.min()) if int(labels.min()) < 0 else int(labels.max())}, "
            f"but has {len(names)} classes; delete its files under `data_root` and download it again"
        )
    return Decoded(images.to(torch.uint8).contiguous(), labels, list(names))


def _decode_items(dataset: VisionDataset, source: Source, shape: tuple[int, int, int],
                  count: int) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.empty((count, *shape), dtype=torch.uint8)
    labels = torch.zeros(count, dtype=torch.long)
    for i in range(count):
        with _decoding(dataset, source, i):
            item = dataset[i]
            images[i] = image_to_tensor(_image_of(item, source, shape), *shape)
        target = item[1] if isinstance(item, tuple) and len(item) > 1 else None
        if target is not None and (isinstance(target, int) or getattr(target, "ndim", None) == 0):
            labels[i] = int(target)
    return images, labels


@contextmanager
def _decoding(dataset: VisionDataset, source: Source, index: int) -> Iterator[None]:
    """Reading item `index`: a file that is not a readable image, or too large a one, is one line naming it."""
    path = _item_path(dataset, index)
    where = _shown(path) if path else f"{source.name}: image {index}"
    if path and not _regular(path):
        raise DataError(f"{where}: not a regular file (a FIFO, a device or a folder?); remove it from the "
                        f"dataset's folder under `data_root`, or download {source.name} again")
    try:
        with warnings.catch_warnings():
            # Pillow's decompression-bomb warning is the error it warns of, as for image folders (images.py).
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise DataError(f"{where}: the image is larger than Pillow's safety limit; shrink or remove it, "
                        f"or download {source.name} again") from None
    except (OSError, SyntaxError, ValueError, EOFError, TypeError, KeyError, IndexError, MemoryError) as exc:
        raise DataError(f"{where}: not a readable image ({first_line(exc)}); replace or remove it, "
                        f"or download {source.name} again") from None


def _item_path(dataset: VisionDataset, index: int) -> str | None:
    """The file of item `index`, from the list where torchvision's class keeps its files; None if unknown."""
    for attribute in PATH_LISTS:
        try:
            entries = getattr(dataset, attribute, None)
            entry = entries[index] if isinstance(entries, (list, tuple)) and index < len(entries) else None
        except Exception:  # noqa: BLE001 - a property of a class we do not know: no path, then
            continue
        if isinstance(entry, tuple) and entry:
            entry = entry[0]
        if isinstance(entry, (str, os.PathLike)):
            path = os.fspath(entry)
            base = _celeba_folder(dataset) if attribute == "filename" else ""
            return os.path.join(base, path) if base else path
    return None


def _celeba_folder(dataset: VisionDataset) -> str:
    root, base = getattr(dataset, "root", None), getattr(dataset, "base_folder", None)
    return os.path.join(root, base, "img_align_celeba") if isinstance(root, str) and isinstance(base, str) else ""


def _regular(path: str) -> bool:
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return True  # missing or unreadable: the read that follows says so, naming the file


def _shown(path: str) -> str:
    """A path from a data folder, on one line: repr'd when it holds line breaks or control characters."""
    return path if path.isprintable() and len(path) <= SHOWN_CHARS else repr(path[-SHOWN_CHARS:])


def _image_of(item: Any, source: Source, shape: tuple[int, int, int] | None = None) -> Image.Image:
    """The PIL image of a dataset item, centre-cropped when the source says so; JPEGs decoded small."""
    image = item[0] if isinstance(item, tuple) else item
    if not isinstance(image, Image.Image):
        raise InputError(
            f"`dataset={source.name}`: its items are {type(image).__name__}, not images; "
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
