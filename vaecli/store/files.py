"""The user's files: atomic writes, special files (devices, FIFOs), output checks, bounded reads."""

from __future__ import annotations

import errno
import os
import re
import stat
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from vaecli.errors import InputError, OutputError
from vaecli.runtime import signals

MAX_NAME_BYTES = 255  # NAME_MAX of Linux, macOS and Windows file systems
PIPE_WRITER_WAIT_S = 10.0  # how long a FIFO with no writer is given before it counts as abandoned
READ_CHUNK = 1 << 20


def describe_size(count: int) -> str:
    """A byte count for messages: 64 MiB, 2.0 GiB."""
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if count >= size:
            return f"{count / size:.1f} {unit}" if count % size else f"{count // size} {unit}"
    return f"{count} bytes"


def _name(path: Path, option: str) -> str:
    return f"{option} {path}" if option else str(path)


def kind_of(path: Path, option: str = "") -> str:
    """What is at path, symlinks followed: missing, file, folder, device, fifo, block or socket."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "missing"
    except ValueError:  # a NUL byte: no file system has such a name
        raise InputError(f"{_name(Path(str(path).replace(chr(0), '?')), option)}: the name holds a NUL byte; "
                         "choose another path") from None
    except OSError as exc:
        if exc.errno in (errno.ENOTDIR, errno.ELOOP):
            return "missing" if exc.errno == errno.ENOTDIR else "loop"
        raise InputError(f"{_name(path, option)}: {describe_os_error(exc)}; choose another path") from None
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "folder"
    if stat.S_ISCHR(mode):
        return "device"
    if stat.S_ISFIFO(mode):
        return "fifo"
    return "block" if stat.S_ISBLK(mode) else "socket"


def describe_os_error(exc: OSError) -> str:
    """An OSError's reason in a few words, for one-line messages."""
    if exc.errno == errno.ENAMETOOLONG:
        named = isinstance(exc.filename, (str, bytes))
        if named and all(len(name) <= MAX_NAME_BYTES for name in os.fsencode(exc.filename).split(b"/")):
            return "the path is too long for this system"  # every name fits: the whole is past PATH_MAX
        return f"the name is too long (at most {MAX_NAME_BYTES} bytes per name)"
    return (exc.strerror or type(exc).__name__).lower() if exc.errno != errno.EACCES else "permission denied"


# --- Output: pre-flight checks, folders, atomic writes -------------------------------------------------


def check_output_file(path: str | Path, option: str = "") -> None:
    """Refuse an output file that cannot be written, before any work is done.

    A name ending in / names a folder (`out/`): refused unless the folder is there.
    """
    trailing = _named_as_folder(path)
    path = Path(path)
    name = _name(path, option)
    check_name_lengths(path, option)
    kind = kind_of(path, option)
    if kind == "folder":
        raise OutputError(f"{name}: is a folder; give a file name inside it")
    if trailing:
        raise OutputError(f"{name}/: ends in /, as a folder's name does; give a file name (no / at the end)")
    if kind in ("block", "socket", "loop"):
        raise OutputError(f"{name}: is a {_KIND_WORDS[kind]}, not a file; give a file name")
    if kind in ("device", "fifo"):
        return  # written through, never replaced
    _check_can_make(path.parent, name, option)


def check_output_folder(folder: Path, option: str = "") -> None:
    """Refuse an output folder that could not be made or written in, without making it.

    Nothing is created before every input is checked: the folder is made when its first file is written.
    """
    folder = Path(folder)
    name = _name(folder, option)
    check_name_lengths(folder, option)
    kind = kind_of(folder, option)
    if kind not in ("missing", "folder"):
        raise OutputError(f"{name}: exists and is not a folder; choose another output folder")
    _check_can_make(folder, name, option)


def _check_can_make(folder: Path, name: str, option: str) -> None:
    """The nearest folder that exists decides: a file above the path or a read-only folder would
    otherwise surface only after the work, when the output is written."""
    folder = Path(folder) if str(folder) else Path(".")
    while kind_of(folder, option) == "missing" and folder != folder.parent:
        folder = folder.parent
    if kind_of(folder, option) != "folder":
        raise OutputError(f"{name}: {folder} is not a folder; choose another path")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"{name}: cannot write in {folder} (permission denied); choose another path")


# Paths that the command line gave with a trailing slash (cli.VaeCommand notes them): pathlib drops it.
_FOLDER_NAMES: set[Path] = set()


def note_folder_name(path: os.PathLike) -> None:
    """Remember that `path` was typed as `NAME/`: a folder's name, never a file to write."""
    _FOLDER_NAMES.add(Path(path))


def forget_folder_names() -> None:
    """Each invocation starts with none (several run in one process in tests and scripts)."""
    _FOLDER_NAMES.clear()


def _named_as_folder(path: str | Path) -> bool:
    if isinstance(path, str):
        return path.endswith("/") or Path(path) in _FOLDER_NAMES
    return Path(path) in _FOLDER_NAMES


def check_name_lengths(path: Path, option: str = "") -> None:
    """Refuse a path with a name over the file systems' limit, before anything is made."""
    if any(len(os.fsencode(part)) > MAX_NAME_BYTES for part in Path(path).parts):
        raise OutputError(
            f"{_name(path, option)}: a name in this path is over {MAX_NAME_BYTES} bytes; choose a shorter one"
        )


_KIND_WORDS = {"block": "block device", "socket": "socket", "loop": "symbolic-link loop"}


def ensure_folder(folder: Path, option: str = "") -> Path:
    """Create an output folder if missing, with one-line errors (naming `option`) when that cannot work."""
    folder = Path(folder)
    name = _name(folder, option)
    check_name_lengths(folder, option)
    kind = kind_of(folder, option)
    if kind not in ("missing", "folder"):
        raise InputError(f"{name}: exists and is not a folder; choose another output folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{name}: cannot create this folder ({describe_os_error(exc)}); choose another") from None
    return folder


def write_atomic(path: Path, payload: bytes, own: bool = False) -> Path:
    """Readers see the old file or the new one, never a partial write; devices and FIFOs are written through.

    A symbolic link is kept: the file it points to is replaced, keeping its permissions. No temporary
    file is left behind, even on a signal (SIGINT, SIGTERM, SIGHUP). `own`: a file the user did not
    name (a report, a -best copy), which is written only as a regular file, never through a link.
    """
    path = Path(path)
    if own:
        check_own_file(path)
        return _replace_atomically(path, path, payload)
    kind = kind_of(path)
    if kind in ("device", "fifo"):
        _write_through(path, payload)
        return path
    if kind == "folder":
        raise InputError(f"{path}: is a folder; give a file name for the output")
    if kind in ("block", "socket", "loop"):
        raise InputError(f"{path}: is a {_KIND_WORDS[kind]}, not a file; give a file name")
    target = Path(os.path.realpath(path)) if path.is_symlink() else path
    return _replace_atomically(target, path, payload)


def check_own_file(path: Path) -> None:
    """Refuse to write a file of vaecli's own choosing where something else stands: a planted link or FIFO
    would otherwise decide what is written, or hang the run."""
    try:
        mode = os.lstat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):  # nothing there; the output folder's own check speaks
        return
    except OSError as exc:
        raise OutputError(f"{path}: cannot write ({describe_os_error(exc)}); choose another path") from None
    if not stat.S_ISREG(mode):
        what = "a symbolic link" if stat.S_ISLNK(mode) else "a folder" if stat.S_ISDIR(mode) else "a special file"
        raise OutputError(f"{path}: is {what}, and vaecli writes its own files only as regular files; "
                          "remove it or write elsewhere")


def _replace_atomically(target: Path, path: Path, payload: bytes) -> Path:
    """Write payload to a temporary file beside target and rename it into place (see write_atomic)."""
    folder = target.parent if str(target.parent) else Path(".")
    ensure_folder(folder)
    mode = _mode_for(target)
    tmp = None
    try:
        with signals.held():  # a signal between creating the file and noting its name would leave it
            fd, tmp = _temporary(folder, target.name)
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fchmod(handle.fileno(), mode)  # mkstemp makes the file private (0600)
            os.fsync(handle.fileno())
            written = _stamp_of(os.fstat(handle.fileno()))  # a rename keeps all three
        _replace(tmp, target, path, written)
    except BaseException as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise InputError(f"{path}: cannot write ({describe_os_error(exc)}); choose another path") from None
        raise
    return path


def _temporary(folder: Path, name: str) -> tuple[int, str]:
    try:
        # A short prefix: a name near the 255-byte limit must still leave room for the temporary's.
        return tempfile.mkstemp(prefix=f".{name[:32]}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise InputError(f"{folder}: cannot write here ({describe_os_error(exc)}); choose another path") from None


def _mode_for(target: Path) -> int:
    """A replaced file keeps its permissions (a private checkpoint stays private); a new one gets the
    mode a plain open() would give. Set-id and sticky bits are never carried over to new content."""
    try:
        status = os.stat(target)
    except (OSError, ValueError):
        return 0o666 & ~_umask()
    return stat.S_IMODE(status.st_mode) & 0o777 if stat.S_ISREG(status.st_mode) else 0o666 & ~_umask()


def _write_through(path: Path, payload: bytes) -> None:
    # No O_CREAT and no O_TRUNC: what is there is written to, never made or cut.
    try:
        fd = os.open(path, os.O_WRONLY)
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
    except OSError as exc:
        raise InputError(f"{path}: cannot write ({describe_os_error(exc)}); choose another path") from None


Stamp = tuple[int, int, int]


def stamp(path: Path) -> Stamp | None:
    """(modification time, size, inode) of a file, None when it is not there: tells whether it was rewritten."""
    try:
        return _stamp_of(os.stat(path))
    except (OSError, ValueError):
        return None


def _stamp_of(status: os.stat_result) -> Stamp:
    return status.st_mtime_ns, status.st_size, status.st_ino


# --- Claimed outputs: files that a long run writes again and again (`vae train`'s checkpoint) ----------


@dataclass
class _Claim:
    seen: Stamp | None  # the file as this process found it, then as it last wrote it
    taken: Callable[[Path], str]  # the message when another program replaced it meanwhile


_CLAIMS: dict[str, _Claim] = {}


@contextmanager
def claimed(path: Path, taken: Callable[[Path], str]) -> Iterator[None]:
    """While open, write_atomic replaces `path` only if it is as this process found it or last wrote it.

    A file that another program wrote meanwhile is never replaced: the write fails with `taken(path)`.
    The check and the rename are a few system calls apart, not one: two writers in that instant both pass.
    """
    key = os.path.realpath(path)
    _CLAIMS[key] = _Claim(stamp(path), taken)
    try:
        yield
    finally:
        _CLAIMS.pop(key, None)


def _replace(tmp: str, target: Path, path: Path, written: Stamp) -> None:
    claim = _CLAIMS.get(os.path.realpath(target))
    now = None if claim is None else stamp(target)
    if claim is not None and now is not None and now != claim.seen:  # one removed meanwhile holds nothing to lose
        raise OutputError(claim.taken(path))
    os.replace(tmp, target)
    if claim is not None:
        claim.seen = written


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# --- Numbered outputs: prefix-0001.png ... -------------------------------------------------------------


def numbered_names(folder: Path, prefix: str, count: int, force: bool) -> Iterator[Path]:
    """`prefix-0001.png`... for count files; without force, numbering goes on after existing ones.

    Numbers have at least 4 digits, more when needed, and never fewer than files already there,
    so a glob lists old and new files in order. The names are made one at a time.
    """
    existing = _numbers(folder, prefix)
    start = 1 if force else 1 + max((int(digits) for digits in existing), default=0)
    width = max(4, len(str(start + count - 1)), *(len(digits) for digits in existing))
    return (folder / f"{prefix}-{number:0{width}d}.png" for number in range(start, start + count))


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
        raise InputError(f"{folder}: cannot list this folder ({describe_os_error(exc)})") from None


# --- Input: regular files, stdin, FIFOs and devices, read with a size bound ----------------------------


class Input(Protocol):
    """An open input as open_input gives it: a file, stdin's buffer or a FIFO's reader, read and closed."""

    def read(self, size: int = -1, /) -> bytes: ...

    def close(self) -> None: ...


def open_input(source: str | Path, what: str) -> tuple[Input, str]:
    """Open a file, `-` (stdin), a FIFO or a device for reading: (binary handle, name for messages).

    A FIFO that no program writes to is given PIPE_WRITER_WAIT_S, then refused, instead of blocking forever.
    """
    if str(source) == "-":
        return sys.stdin.buffer, "stdin"
    path = Path(source)
    name = str(path)
    kind = kind_of(path)
    if kind == "missing":
        raise InputError(f"{name}: no such file; check the path")
    if kind == "folder":
        raise InputError(f"{name}: is a folder; give {what}")
    if kind in ("socket", "loop"):
        raise InputError(f"{name}: is a {_KIND_WORDS[kind]}; give {what}")
    try:
        if kind != "fifo":
            return open(path, "rb"), name
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise InputError(f"{name}: cannot read ({describe_os_error(exc)}); check the file") from None
    return _PipeReader(fd, name, what), name


class _PipeReader:
    """A FIFO opened without blocking: waits a bounded time for a writer, then reads normally."""

    def __init__(self, fd: int, name: str, what: str):
        self.fd, self.name, self.what = fd, name, what
        self.pending = self._first_bytes()

    def _first_bytes(self) -> bytes:
        deadline = time.monotonic() + PIPE_WRITER_WAIT_S
        while True:
            try:
                data = os.read(self.fd, READ_CHUNK)
            except BlockingIOError:  # a writer is there and has not written yet: wait for it
                os.set_blocking(self.fd, True)
                return b""
            if data:
                os.set_blocking(self.fd, True)
                return data
            if time.monotonic() > deadline:  # b"" with O_NONBLOCK: no program has the pipe open
                os.close(self.fd)
                raise InputError(
                    f"{self.name}: a pipe that no program writes to (waited {PIPE_WRITER_WAIT_S:g} s); "
                    f"start its writer first, or give {self.what}"
                )
            time.sleep(0.05)

    def read(self, size: int = -1) -> bytes:
        chunks, wanted = [], size if size >= 0 else sys.maxsize
        if self.pending:
            chunks.append(self.pending[:wanted])
            self.pending = self.pending[wanted:]
            wanted -= len(chunks[0])
        while wanted > 0:
            data = os.read(self.fd, min(wanted, READ_CHUNK))
            if not data:
                break
            chunks.append(data)
            wanted -= len(data)
        return b"".join(chunks)

    def close(self) -> None:
        os.close(self.fd)

    def __enter__(self) -> _PipeReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_exactly(handle: Input, count: int, name: str) -> bytes:
    """`count` bytes from handle, in chunks (nothing is allocated for data that is not there)."""
    chunks, left = [], count
    try:
        while left > 0:
            data = handle.read(min(left, READ_CHUNK))
            if not data:
                break
            chunks.append(data)
            left -= len(data)
    except OSError as exc:
        raise InputError(f"{name}: cannot read ({describe_os_error(exc)})") from None
    return b"".join(chunks)


def read_input(source: str | Path, limit: int, what: str) -> tuple[bytes, str]:
    """The whole content of a file, `-`, FIFO or device, refused past `limit` bytes: (bytes, name)."""
    handle, name = open_input(source, what)
    try:
        data = read_exactly(handle, limit + 1, name)
    finally:
        if handle is not sys.stdin.buffer:
            handle.close()
    if len(data) > limit:
        raise InputError(f"{name}: more than {describe_size(limit)}; {what} is never this large")
    return data, name
