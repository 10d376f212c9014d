"""A safetensors file's framing, read with bounds: the length prefix, the JSON header, the tensor table, the data.

Nothing is allocated from a number the file declares before it is checked against a bound or the file's size.
"""

from __future__ import annotations

import json
import math
import os
import stat
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vaecli.errors import CheckpointError
from vaecli.store.files import READ_CHUNK, Input, describe_size, kind_of, open_input, read_exactly

MAX_HEADER_BYTES = 8_000_000  # a vaecli header is a few kB; refuse before reading a huge one
# Tensor data, refused before it is read: the bundled MNIST model holds 8 MB, weights and Adam state.
MAX_CHECKPOINT_BYTES = 4 << 30
# Bytes per element of each safetensors dtype; vaecli writes F32 and U8.
DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8,
}
MAX_TENSOR_DIMS = 8  # vaecli's tensors have at most 4; bounds the arithmetic on a crafted shape
MAX_SIZE = 2**63 - 1


def read_file(
    path: Path,
    weights: bool,
    metadata: Callable[[Any], dict],
    before_reading: Callable[[dict, int], None] | None = None,
) -> tuple[dict, dict, bytes | None]:
    """(tensor table, `metadata(the header's __metadata__)`, and with `weights` the file's bytes), in one pass.

    The metadata is checked before the tensor table, and `before_reading(table, tensor bytes)` before the
    tensor data is read. A regular file's data is not read without `weights`; a pipe or device is read to
    its end, to check that it is whole."""
    kind = kind_of(path)
    if kind == "missing":
        raise CheckpointError(f"{path}: no such checkpoint; train one with `vae train` or pass `model`")
    if kind == "folder":
        raise CheckpointError(f"{path}: is a folder; give a .safetensors checkpoint file")
    # open_input reads `-` as stdin; a checkpoint file named `-` is meant here.
    handle, _ = open_input(path if str(path) != "-" else f".{os.sep}-", "a .safetensors checkpoint")
    try:
        size = _regular_size(handle)
        prefix, header = _parse_header(path, handle, size)
        meta = metadata(header.pop("__metadata__", None) or {})
        data_bytes = _data_size(path, header, None if size is None else size - len(prefix))
        if size is not None and not weights:
            return header, meta, None
        if before_reading is not None:
            before_reading(header, data_bytes)
        body = _read_tensor_data(path, handle, data_bytes, keep=weights)
        return header, meta, (prefix + body if weights else None)
    finally:
        handle.close()


def not_checkpoint(path: Path, why: str) -> str:
    return f"{path}: not a readable checkpoint ({why}); retrain it or pass another file with `model`"


def extent(path: Path, name: str, entry: Any) -> tuple[int, int, str]:
    """(first byte, end, name) of one tensor, whose dtype, shape and offsets must agree."""
    ok = (
        isinstance(entry, dict)
        and entry.get("dtype") in DTYPE_BYTES
        and _is_sizes(entry.get("shape"), MAX_TENSOR_DIMS)
        and _is_sizes(entry.get("data_offsets"), 2)
        and len(entry["data_offsets"]) == 2
    )
    if ok:
        begin, stop = entry["data_offsets"]
        ok = stop - begin == math.prod(entry["shape"]) * DTYPE_BYTES[entry["dtype"]]
    if not ok:
        raise CheckpointError(not_checkpoint(path, f"tensor {name[:40]!r} is damaged"))
    return begin, stop, name


def _regular_size(handle: Input) -> int | None:
    """The size of a regular file; None for a pipe or device, whose size is what its header declares."""
    fileno = getattr(handle, "fileno", None)  # a FIFO's reader has none
    if fileno is None:
        return None
    status = os.fstat(fileno())
    return status.st_size if stat.S_ISREG(status.st_mode) else None


def _parse_header(path: Path, handle: Input, size: int | None) -> tuple[bytes, dict]:
    """(the length prefix and header as read, the header's JSON object), checked before any weights."""
    head = read_exactly(handle, 8, str(path))
    if len(head) < 8:
        raise CheckpointError(not_checkpoint(path, "the file is empty or truncated"))
    (length,) = struct.unpack("<Q", head)
    if length > MAX_HEADER_BYTES:
        raise CheckpointError(not_checkpoint(path, "its header is too large"))
    raw = read_exactly(handle, length, str(path)) if size is None or length <= size - 8 else b""
    if len(raw) < length:
        raise CheckpointError(not_checkpoint(path, "its header is truncated"))
    try:
        header = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError):  # ValueError: bad UTF-8 or JSON, or an integer over 4,300 digits
        raise CheckpointError(not_checkpoint(path, "its header is not valid JSON")) from None
    if not isinstance(header, dict):
        raise CheckpointError(not_checkpoint(path, "its header is not a JSON object"))
    return head + raw, header


def _data_size(path: Path, header: dict, available: int | None) -> int:
    """The bytes of tensor data the table lays out, checked as safetensors checks it: tensors tile the data.

    `available` is what a regular file holds after its header; it must match exactly.
    """
    end = 0
    for begin, stop, name in sorted(extent(path, name, entry) for name, entry in header.items()):
        if begin != end:
            raise CheckpointError(not_checkpoint(path, f"tensor {name[:40]!r} overlaps another or leaves a gap"))
        end = stop
    if end > MAX_CHECKPOINT_BYTES:
        raise CheckpointError(
            f"{path}: its tensors would take {describe_size(end)}, more than the {describe_size(MAX_CHECKPOINT_BYTES)} "
            "a checkpoint may hold; the file is damaged or not from vaecli"
        )
    if available is not None and end > available:
        raise CheckpointError(not_checkpoint(path, "the file is truncated"))
    if available is not None and end < available:
        raise CheckpointError(not_checkpoint(path, f"{available - end} unexpected bytes after its last tensor"))
    return end


def _is_sizes(value: Any, most: int) -> bool:
    return isinstance(value, list) and len(value) <= most and all(
        isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_SIZE for v in value
    )


def _read_tensor_data(path: Path, handle: Input, count: int, keep: bool) -> bytes:
    """The `count` bytes of tensor data, then the end of the file; without `keep`, read and dropped."""
    if keep:
        body = read_exactly(handle, count, str(path))
        got = len(body)
    else:
        body, got = b"", 0
        while got < count:
            piece = read_exactly(handle, min(count - got, READ_CHUNK), str(path))
            if not piece:
                break
            got += len(piece)
    if got < count:
        raise CheckpointError(not_checkpoint(path, f"the file is truncated, {describe_size(count - got)} short"))
    if read_exactly(handle, 1, str(path)):
        raise CheckpointError(not_checkpoint(path, "unexpected bytes after its last tensor"))
    return body
