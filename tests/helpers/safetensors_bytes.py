"""Test helpers that take safetensors files apart and put them back, to build damaged checkpoints."""

from __future__ import annotations

import json
import struct
from collections.abc import Callable


def split_safetensors(raw: bytes) -> tuple[dict, bytes]:
    """(JSON header, tensor bytes) of a safetensors file's bytes."""
    (length,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + length]), raw[8 + length :]


def join_safetensors(header: dict, data: bytes) -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


def edit_metadata(raw: bytes, edit: Callable[[dict], object]) -> bytes:
    """The checkpoint with its vaecli metadata edited: `edit(meta)` changes the dict or returns raw text."""
    header, data = split_safetensors(raw)
    meta = json.loads(header["__metadata__"]["vaecli"])
    text = edit(meta)
    header["__metadata__"]["vaecli"] = text if isinstance(text, str) else json.dumps(meta)
    return join_safetensors(header, data)
