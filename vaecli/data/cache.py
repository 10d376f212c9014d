"""vaecli's own cache of decoded torchvision splits: private files in the user's cache folder, read as untrusted.

A cache only saves time, so any failure to read or write one is a miss (the split is decoded again), never
an error and never a wait. Files are made only in a folder this user owns (created 0700), as a temporary
opened with O_CREAT|O_EXCL|O_NOFOLLOW and renamed into place: whatever stands at a cache path (a link,
a FIFO) is replaced, never followed or written through. A file is read only when it is a regular file
whose safetensors header describes exactly the tensors expected, within its size and the memory free.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import secrets
import stat
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vaecli.data.torchvision_sets import Decoded, Source, labels_fit
from vaecli.runtime import signals

CACHE_FORMAT = "vaecli-dataset-cache/2"  # bump when the cached tensors or the key would change meaning
MAX_HEADER_BYTES = 4 << 20  # ours is under 1 KiB plus the class names (ImageNet's 1,000: about 30 KiB)
MAX_NOTE_BYTES = 4096  # a shape note is one short JSON line
READ_CHUNK = 16 << 20
# The fingerprint lists names and reads sizes and times up to these bounds (see _Walk).
MAX_FINGERPRINT_NAMES = 1_000_000
MAX_FINGERPRINT_STATS = 100_000

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
# Everything below works relative to the folder's descriptor; where the system cannot, there is no cache.
SUPPORTED = bool(_NOFOLLOW and getattr(os, "O_DIRECTORY", 0) and hasattr(os, "getuid")
                 and os.open in os.supports_dir_fd and os.rename in os.supports_dir_fd)


# --- Where: $XDG_CACHE_HOME/vaecli/datasets, named by the data's identity ----------------------------------


def cache_folder() -> Path | None:
    """$XDG_CACHE_HOME/vaecli/datasets, else ~/.cache/vaecli/datasets; None without a home to put it in."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(base):  # the XDG spec: a relative value is ignored
        base = os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base, "vaecli", "datasets") if os.path.isabs(base) else None


def cache_path(source: Source, split: str, root: Path, shape: tuple[int, int, int]) -> Path | None:
    """Where one split at one shape is cached (its folder may not exist yet)."""
    folder = cache_folder()
    return None if folder is None else folder / _split_name(source, split, root, shape)


def _split_name(source: Source, split: str, root: Path, shape: tuple[int, int, int]) -> str:
    identity = _digest([_real(root), source.name, source.crop, split, list(shape)])[:16]
    return f"{source.slug}-{split}-{'x'.join(map(str, shape))}-{identity}.safetensors"


def _note_name(source: Source, root: Path) -> str:
    return f"{source.slug}-shape-{_digest([_real(root), source.name])[:16]}.json"


def _real(root: Path) -> str:
    try:
        return os.path.realpath(root)
    except (OSError, ValueError):
        return os.fspath(root)


def _digest(value: object) -> str:
    return hashlib.sha256(json.dumps(value).encode("utf-8", "surrogateescape")).hexdigest()


@contextmanager
def _folder(create: bool) -> Iterator[int | None]:
    """A descriptor of the cache folder when it is a real folder of this user's, else None."""
    folder = cache_folder() if SUPPORTED else None
    if folder is None:
        yield None
        return
    try:
        if create:
            os.makedirs(folder, mode=0o700, exist_ok=True)
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | _NOFOLLOW | _CLOEXEC)
    except (OSError, ValueError):  # missing, a link (ELOOP), not a folder, not ours to make
        yield None
        return
    try:
        yield fd if _private(fd) else None
    finally:
        os.close(fd)


def _private(fd: int) -> bool:
    """True for a folder this user owns, made private (0700) if it was not: no one else can plant a file."""
    status = os.fstat(fd)
    if not stat.S_ISDIR(status.st_mode) or status.st_uid != os.getuid():
        return False
    if status.st_mode & 0o077:
        try:
            os.fchmod(fd, 0o700)
        except OSError:
            return False
    return True


# --- Files: created exclusively and renamed; opened without following links or waiting on FIFOs -------------


def _write_private(folder: int, name: str, parts: Iterable[bytes | memoryview]) -> None:
    """Write a new private (0600) file and rename it to `name`; the temporary never outlives a failure."""
    temporary = f".{name[:40]}.{secrets.token_hex(8)}.tmp"
    fd = None
    try:
        with signals.held():  # a signal between making the file and noting it was made would leave it
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC, 0o600,
                         dir_fd=folder)
        with os.fdopen(fd, "wb") as handle:
            for part in parts:
                handle.write(part)
            handle.flush()
            os.fsync(handle.fileno())  # renamed before its bytes are on disk, a crash could leave zeros
        os.replace(temporary, name, src_dir_fd=folder, dst_dir_fd=folder)
    except BaseException:  # a signal too (signals.py raises it): the temporary goes, the exception goes on
        if fd is not None:
            with suppress(OSError):
                os.unlink(temporary, dir_fd=folder)
        raise


@contextmanager
def _open_private(folder: int, name: str, limit: int) -> Iterator[tuple[io.FileIO, int] | None]:
    """(handle, size) of a regular file of at most `limit` bytes at `name`, else None (a link or a FIFO too)."""
    try:
        # O_NONBLOCK: a FIFO opens at once instead of waiting for a writer, and is then refused.
        fd = os.open(name, os.O_RDONLY | _NOFOLLOW | os.O_NONBLOCK | _CLOEXEC, dir_fd=folder)
    except OSError:
        yield None
        return
    with os.fdopen(fd, "rb", buffering=0) as handle:
        status = os.fstat(fd)
        yield (handle, status.st_size) if stat.S_ISREG(status.st_mode) and status.st_size <= limit else None


def _read_exact(handle: io.FileIO, count: int) -> bytes:
    data = handle.read(count)
    if data is None or len(data) != count:
        raise EOFError("the file ended early")
    return data


def _read_into(handle: io.FileIO, offset: int, view: memoryview) -> None:
    handle.seek(offset)
    done = 0
    while done < len(view):
        got = handle.readinto(view[done:done + READ_CHUNK])
        if not got:
            raise EOFError("the file ended early")
        done += got


# --- The fingerprint: every file the dataset reads -----------------------------------------------------------


def fingerprint(source: Source, split: str, root: Path, shape: tuple[int, int, int]) -> str:
    """A hash of what the split is decoded from: each file's name (relative to root), size and mtime.

    The files are those below the source's named paths, or below the root when none of them exists
    (a class whose folder vaecli cannot name).
    """
    hasher = hashlib.sha256()
    hasher.update(json.dumps([CACHE_FORMAT, _real(root), source.name, source.crop, split, list(shape)]).encode())
    named = [root / p.format(split=split) for p in source.paths]
    walk = _Walk(hasher, root, _cache_folder_identity())
    for top in [p for p in named if os.path.lexists(p)] or [root]:
        walk.add(top)
    return hasher.hexdigest()


def _cache_folder_identity() -> tuple[int, int] | None:
    folder = cache_folder()
    try:
        status = os.stat(folder) if folder is not None else None
    except (OSError, ValueError):
        return None
    return (status.st_dev, status.st_ino) if status is not None else None


class _Walk:
    """Feeds a hash with every entry below some paths, depth first in name order, within two bounds.

    Trade-off: a huge tree would make every run slow before the cache could help. So the size and mtime
    of the first MAX_FINGERPRINT_STATS files are read (CIFAR's 8 files, Country211's 63,300 images);
    past that a file counts by its name alone, so an added, removed or renamed file is still seen (which
    is what a new download or extraction does) but a later one rewritten in place is not. Past
    MAX_FINGERPRINT_NAMES names in all, a folder counts by its own mtime alone. Symbolic links to folders
    are not walked into (no loops); they count by their target's size and mtime.
    """

    def __init__(self, hasher: Any, root: Path, skip: tuple[int, int] | None) -> None:
        self.hasher, self.skip = hasher, skip
        self.prefix = os.path.join(os.fspath(root), "")
        self.names, self.stats = MAX_FINGERPRINT_NAMES, MAX_FINGERPRINT_STATS

    def add(self, top: Path) -> None:
        try:
            status = os.stat(top)  # the named folder itself may be a link, as users set them up
        except (OSError, ValueError):
            self._feed(os.fspath(top), "missing")
            return
        self._feed(os.fspath(top), "top", status.st_size, status.st_mtime_ns)
        pending = [os.fspath(top)] if stat.S_ISDIR(status.st_mode) else []
        while pending:
            folder = pending.pop()
            entries = self._list(folder)
            if entries is None:
                self._feed(folder, "unlisted")
                continue
            below = [path for path in (self._entry(entry) for entry in entries) if path]
            pending.extend(reversed(below))

    def _list(self, folder: str) -> list[os.DirEntry] | None:
        try:
            with os.scandir(folder) as listing:
                entries = []
                for entry in listing:
                    entries.append(entry)
                    if len(entries) > self.names:
                        self.names = 0
                        return None
        except OSError:
            return None
        self.names -= len(entries)
        return sorted(entries, key=lambda entry: entry.name)

    def _entry(self, entry: os.DirEntry) -> str | None:
        """Feed one entry; a folder's path when it is to be walked."""
        try:
            if entry.is_dir(follow_symlinks=False):
                status = entry.stat(follow_symlinks=False)
                if (status.st_dev, status.st_ino) == self.skip:
                    return None  # our own cache, when it lies below the data
                self._feed(entry.path, "folder", 0, status.st_mtime_ns)
                return entry.path
            if self.stats <= 0:
                self._feed(entry.path, "file")
                return None
            self.stats -= 1
            status = entry.stat()  # a link counts by what it points to: that is what the dataset reads
            self._feed(entry.path, "file", status.st_size, status.st_mtime_ns)
        except OSError:
            self._feed(entry.path, "unreadable")
        return None

    def _feed(self, path: str, kind: str, size: int = -1, mtime: int = -1) -> None:
        name = path[len(self.prefix):] if path.startswith(self.prefix) else path
        # NUL cannot occur in a name, so each record reads back one way.
        self.hasher.update(os.fsencode(f"{name}\0{kind}\0{size}\0{mtime}\0"))


# --- One split: a safetensors file of images (N, C, H, W) uint8 and labels (N,) int64 -------------------------


def write_split(source: Source, split: str, root: Path, shape: tuple[int, int, int], decoded: Decoded,
                complete: bool) -> None:
    """Cache a decoded split for the next run; a cache that cannot be written only costs time."""
    try:
        with _folder(create=True) as folder:
            if folder is None:
                return
            meta = {"format": CACHE_FORMAT, "key": fingerprint(source, split, root, shape),
                    "class_names": json.dumps(decoded.class_names), "complete": "1" if complete else "0"}
            _write_private(folder, _split_name(source, split, root, shape), _split_parts(decoded, meta))
    except (OSError, ValueError, MemoryError, OverflowError):
        pass


def _split_parts(decoded: Decoded, meta: dict[str, str]) -> list[bytes | memoryview]:
    images = decoded.images.contiguous()
    count, image_bytes = len(images), images.numel()
    header = {
        "__metadata__": meta,
        "images": {"dtype": "U8", "shape": list(images.shape), "data_offsets": [0, image_bytes]},
        "labels": {"dtype": "I64", "shape": [count], "data_offsets": [image_bytes, image_bytes + 8 * count]},
    }
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # safetensors aligns the data that follows to 8 bytes
    labels = decoded.labels.numpy().astype("<i8").tobytes()
    return [len(text).to_bytes(8, "little"), text, images.numpy().data.cast("B"), labels]


def read_split(source: Source, split: str, root: Path, shape: tuple[int, int, int],
               wanted: int | None, fits: Callable[[int], bool], most_bytes: int) -> Decoded | None:
    """The cached split when its files are unchanged and it holds `wanted` images (None: all); else None."""
    try:
        with _folder(create=False) as folder:
            if folder is None:
                return None
            limit = 2 * most_bytes + MAX_HEADER_BYTES  # labels take 8 bytes an image beside its pixels
            with _open_private(folder, _split_name(source, split, root, shape), limit) as opened:
                if opened is None:
                    return None
                key = fingerprint(source, split, root, shape)
                return _read_split_file(*opened, key, shape, wanted, fits)
    except Exception:  # noqa: BLE001 - a partial, damaged or foreign file is a miss, and is rewritten
        return None


def _read_split_file(handle: io.FileIO, size: int, key: str, shape: tuple[int, int, int],
                     wanted: int | None, fits: Callable[[int], bool]) -> Decoded | None:
    header, start = _header(handle, size)
    count = _layout(header, start, size, shape)
    meta = _metadata(header, key)
    if count is None or meta is None:
        return None
    complete, names = meta
    if not (complete or (wanted is not None and count >= wanted)):
        return None
    served = count if wanted is None else min(count, wanted)
    if not fits(served):
        return None  # too large for memory now: the decode that follows refuses it in one line
    images, labels = _payload(handle, start, count, served, shape)
    return Decoded(images, labels, names) if labels_fit(labels, len(names)) else None


def _header(handle: io.FileIO, size: int) -> tuple[dict, int]:
    """The header's JSON and where the data starts; its length is checked before it is read."""
    length = int.from_bytes(_read_exact(handle, 8), "little")
    if not 2 <= length <= min(MAX_HEADER_BYTES, size - 8):
        raise ValueError("the header's length does not fit the file")
    header = json.loads(_read_exact(handle, length))
    if not isinstance(header, dict):
        raise ValueError("the header is not an object")
    return header, 8 + length


def _layout(header: dict, start: int, size: int, shape: tuple[int, int, int]) -> int | None:
    """The image count when the header holds exactly images (N, *shape) uint8 then labels (N,) int64,
    back to back and filling the file to its last byte; else None."""
    if set(header) != {"__metadata__", "images", "labels"} or not isinstance(header["images"], dict):
        return None
    declared = header["images"].get("shape")
    count = declared[0] if isinstance(declared, list) and declared else None
    if type(count) is not int or count < 0:
        return None
    image_bytes = count * math.prod(shape)
    images = {"dtype": "U8", "shape": [count, *shape], "data_offsets": [0, image_bytes]}
    labels = {"dtype": "I64", "shape": [count], "data_offsets": [image_bytes, image_bytes + 8 * count]}
    if header["images"] != images or header["labels"] != labels or start + image_bytes + 8 * count != size:
        return None
    return count


def _metadata(header: dict, key: str) -> tuple[bool, list[str]] | None:
    """(complete, class names) when the metadata is ours and its key matches; else None."""
    meta = header["__metadata__"]
    if not isinstance(meta, dict) or meta.get("format") != CACHE_FORMAT or meta.get("key") != key:
        return None
    names = json.loads(meta.get("class_names", "null"))
    if not (isinstance(names, list) and names and all(isinstance(n, str) for n in names)):
        return None
    if meta.get("complete") not in ("0", "1"):
        return None
    return meta["complete"] == "1", names


def _payload(handle: io.FileIO, start: int, count: int, served: int,
             shape: tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `served` images and labels, read straight into their tensors."""
    images = torch.empty((served, *shape), dtype=torch.uint8)
    labels = np.empty(served, dtype="<i8")
    if served:
        _read_into(handle, start, images.numpy().data.cast("B"))
        _read_into(handle, start + count * math.prod(shape), labels.data.cast("B"))
    return images, torch.from_numpy(labels.astype(np.int64, copy=False))


# --- The shape note: a torchvision:NAME set's native shape, remembered without opening it ---------------------


def read_note(source: Source, root: Path) -> tuple[int, int, int] | None:
    """The shape noted for this source and root, when its training files are unchanged."""
    try:
        with _folder(create=False) as folder:
            if folder is None:
                return None
            with _open_private(folder, _note_name(source, root), MAX_NOTE_BYTES) as opened:
                if opened is None:
                    return None
                note = json.loads(_read_exact(opened[0], opened[1]))
        shape = note["shape"]
        if note["key"] != fingerprint(source, "train", root, (0, 0, 0)) or len(shape) != 3:
            return None
        if not all(type(n) is int and 0 < n <= 1 << 20 for n in shape):
            return None
        return tuple(shape)
    except Exception:  # noqa: BLE001 - no note yet, or a damaged one: look again
        return None


def write_note(source: Source, root: Path, shape: tuple[int, int, int]) -> None:
    """Remember the shape for the next run; failing to only costs time."""
    try:
        with _folder(create=True) as folder:
            if folder is not None:
                key = fingerprint(source, "train", root, (0, 0, 0))  # after a download, the files it wrote
                _write_private(folder, _note_name(source, root), [json.dumps({"key": key, "shape": shape}).encode()])
    except (OSError, ValueError):
        pass
